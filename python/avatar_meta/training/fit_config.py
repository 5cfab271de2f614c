"""`config/learners.yaml`: one typed section per learner that `avatar-meta fit` trains.

Missing sections and keys take the defaults below; unknown keys, wrong types and impossible
values raise `ConfigError` naming the field and the fix (`load_learners_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from avatar_meta.config import ALGORITHMS
from avatar_meta.typed_config import ConfigError, build_dataclass

RL_LOOP_LEARNERS = ALGORITHMS
"""Learners trained by `avatar-meta train` (meta.algorithms), not by `fit`."""


# ---------------------------------------------------------------------------------------------
# config: one typed section per learner
# ---------------------------------------------------------------------------------------------
@dataclass
class MetricFitConfig:
    """Prototypical / Matching Networks: episodic N-way K-shot training."""

    data: str = "styles"
    """"styles" (visitor-style trajectories from the plaza, 13 train / 7 held-out styles) or
    "digits" (scikit-learn digits, train classes 0-4 + rotations, test classes 5-9)."""
    n_way: int = 5
    """Classes per evaluation episode (held-out classes)."""
    train_way: int = 5
    """Classes per training episode (digits has 40 training classes: 15 works well)."""
    k_shot: int = 5
    """Labelled examples per class in the support set (training and evaluation)."""
    n_query: int = 5
    """Query examples per class per episode."""
    steps: int = 1500
    """Adam steps; each on meta_batch episodes."""
    meta_batch: int = 4
    """Episodes per step."""
    lr: float = 1e-3
    """Adam learning rate of the encoder."""
    per_style: int = 60
    """styles only: probe trajectories recorded per style (one fresh task each)."""
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    """styles only: widths of the MLP encoder (the last is the embedding size)."""
    scale: float = 10.0
    """matching only: sharpness of the cosine-attention softmax (20 suits digits)."""
    fce_steps: int = 0
    """matching only: full-context-embedding LSTM steps (0 = off)."""
    eval_episodes: int = 600
    """Held-out evaluation episodes."""
    seed: int = 0
    """Seeds the data, the encoder and the episode sampling."""


@dataclass
class HypernetFitConfig:
    """The model-based learner: few-shot imitation of the scripted expert in the plaza."""

    families: list[str] = field(
        default_factory=lambda: ["reach_landmark", "follow_visitor", "keep_distance", "pace_match"]
    )
    """Scenario families (their expert needs no gesture, so continuous cloning is complete)."""
    n_train: int = 240
    """Training tasks."""
    n_heldout: int = 96
    """Held-out tasks for the evaluation (disjoint from training)."""
    episodes: int = 2
    """Recorded noisy-expert episodes per task (context from the first, query from the rest)."""
    context: int = 16
    """Context transitions per task: what adaptation sees."""
    query: int = 64
    """Query transitions per task per meta-iteration."""
    meta_batch: int = 16
    """Tasks per meta-iteration."""
    iterations: int = 1500
    """Meta-iterations."""
    lr: float = 3e-3
    """Adam learning rate."""
    trunk: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden widths of the policy trunk."""
    embed_dim: int = 16
    """Size of the task embedding."""
    eval_episodes: int = 3
    """Episodes per held-out task when scoring returns."""
    seed: int = 0
    """Seeds tasks, recordings, initialisation and sampling."""


@dataclass
class ProbabilisticFitConfig:
    """Probabilistic MAML (PLATIPUS-style) on ambiguous sine-or-line regression."""

    iterations: int = 3000
    """Meta-iterations."""
    lr: float = 3e-3
    """Adam learning rate of the prior's mean (its log-stds and noise move 10x faster)."""
    inner_lr: float = 0.01
    """Inner step size of the adapted samples."""
    inner_steps: int = 1
    """Inner steps."""
    max_gamma: float | None = 0.01
    """Bound on the learned mean-shift step (null = unbounded; unbounded, training diverged on
    some seeds, see docs/algorithms.md)."""
    eval_shots: list[int] = field(default_factory=lambda: [1, 3, 5])
    """Support sizes of the held-out evaluation."""
    eval_tasks: int = 300
    """Held-out tasks per support size."""
    eval_samples: int = 20
    """Parameter samples per task for the predictive distribution."""
    seed: int = 0
    """Seeds initialisation, tasks and sampling."""


@dataclass
class MetaGradFitConfig:
    """PPO with discount and GAE lambda learned by the meta-gradient, on one scenario."""

    family: str = "reach_landmark"
    """Scenario family of the tasks."""
    params: list[float] = field(default_factory=list)
    """Hidden parameter values (empty = the middle of each range)."""
    gamma_init: float = 0.99
    """Initial discount."""
    lam_init: float = 0.95
    """Initial GAE lambda."""
    meta_lr: float = 0.1
    """Adam learning rate on logit(gamma), logit(lambda) (0 = fixed values, plain PPO)."""
    iterations: int = 60
    """PPO updates, each on a fresh batch."""
    episodes_per_iter: int = 8
    """Episodes per batch (one plaza area per episode)."""
    num_areas: int = 8
    """Plaza areas (episodes collected in parallel)."""
    eval_episodes: int = 16
    """Deterministic evaluation episodes after training."""
    seed: int = 0
    """Seeds the policy, the action sampling and the world."""


@dataclass
class CharacterFitConfig:
    """Few-shot character-attribute generation (`avatar-meta generate --model` loads it)."""

    learner: str = "metasgd"
    """"metasgd" (learned per-parameter step sizes) or "maml"."""
    iterations: int = 1500
    """Meta-iterations."""
    inner_steps: int = 3
    """Adaptation steps."""
    inner_lr: float = 0.3
    """(Initial) inner step size."""
    meta_lr: float = 3e-3
    """Adam learning rate."""
    eval_designers: int = 200
    """Held-out designers of the evaluation."""
    eval_examples: int = 5
    """Examples each held-out designer gives."""
    seed: int = 0
    """Seeds the network and the designers."""


@dataclass
class LearnersConfig:
    """`config/learners.yaml`: one section per learner; missing sections take defaults."""

    protonet: MetricFitConfig = field(default_factory=MetricFitConfig)
    matching: MetricFitConfig = field(default_factory=MetricFitConfig)
    hypernet: HypernetFitConfig = field(default_factory=HypernetFitConfig)
    probabilistic: ProbabilisticFitConfig = field(default_factory=ProbabilisticFitConfig)
    metagrad: MetaGradFitConfig = field(default_factory=MetaGradFitConfig)
    character: CharacterFitConfig = field(default_factory=CharacterFitConfig)


LEARNERS = tuple(f.name for f in fields(LearnersConfig))


def load_learners_config(path: str | Path | None) -> LearnersConfig:
    """Read and check `path` (None = all defaults); errors name the field and the fix."""
    if path is None:
        return LearnersConfig()
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the learners config ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    cfg: LearnersConfig = build_dataclass(LearnersConfig, data, "")
    _validate(cfg)
    return cfg


def _validate(cfg: LearnersConfig) -> None:
    from avatar_meta import contract

    for name in ("protonet", "matching"):
        m: MetricFitConfig = getattr(cfg, name)
        if m.data not in ("styles", "digits"):
            raise ConfigError(f"{name}.data = {m.data!r}: use 'styles' or 'digits'")
        for key in ("n_way", "train_way", "k_shot", "n_query", "steps", "meta_batch"):
            if getattr(m, key) < 1:
                raise ConfigError(f"{name}.{key} = {getattr(m, key)}: use a value >= 1")
        if m.data == "styles" and m.n_way > 7:
            raise ConfigError(f"{name}.n_way = {m.n_way}: styles has 7 held-out styles; use <= 7")
        if m.data == "digits" and m.n_way > 5:
            raise ConfigError(f"{name}.n_way = {m.n_way}: digits has 5 test classes; use <= 5")
    for fam in cfg.hypernet.families:
        if fam not in contract.FAMILY_BY_NAME:
            raise ConfigError(
                f"hypernet.families: unknown family {fam!r}; use any of "
                + ", ".join(contract.FAMILY_BY_NAME)
            )
    if cfg.hypernet.context < 1 or cfg.hypernet.context > 200 * cfg.hypernet.episodes // 2:
        raise ConfigError(
            f"hypernet.context = {cfg.hypernet.context}: use 1..{200 * cfg.hypernet.episodes // 2}"
            " (transitions of the first recorded episode)"
        )
    mg = cfg.metagrad
    if mg.family not in contract.FAMILY_BY_NAME:
        raise ConfigError(
            f"metagrad.family = {mg.family!r}: unknown family; use any of "
            + ", ".join(contract.FAMILY_BY_NAME)
        )
    for key in ("gamma_init", "lam_init"):
        if not 0.0 < getattr(mg, key) < 1.0:
            raise ConfigError(f"metagrad.{key} = {getattr(mg, key)}: use a value in (0, 1)")
    if cfg.character.learner not in ("metasgd", "maml"):
        raise ConfigError(f"character.learner = {cfg.character.learner!r}: use 'metasgd' or 'maml'")
    for name in LEARNERS:
        section = getattr(cfg, name)
        for key in ("iterations", "steps", "eval_episodes", "eval_tasks", "eval_designers"):
            if hasattr(section, key) and getattr(section, key) < 1:
                raise ConfigError(f"{name}.{key} = {getattr(section, key)}: use a value >= 1")
