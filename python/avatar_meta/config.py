"""Typed configuration of a whole `avatar-meta train` run, read from and written to YAML.

`RunConfig` has one section per concern (env, tasks, policy, meta, eval, baselines, output);
every field carries a one-line doc string right below it (docs/training.md lists them all).
`load_config(path, overrides)` reads a YAML file (missing sections and fields take their
defaults), applies dotted overrides (`{"env.num_envs": 2}`) and validates everything;
`dump_config` writes the resolved config back (the run folder's `config.yaml`).

Every error is a `ConfigError` whose message names the field (`meta.meta_batch_size`) and
says how to fix it: unknown keys get close-match suggestions (difflib), wrong types say the
expected type, impossible sizes say which other field limits them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avatar_meta.tasks import ALL_FAMILIES, TaskDistribution
from avatar_meta.typed_config import ConfigError, build_dataclass

ALGORITHMS = ("maml", "fomaml", "reptile", "metasgd", "encoder", "search")
OUTER_LOSSES = ("ppo", "imitation", "ppo+imitation")
BASELINE_METHODS = ("random", "oracle", "ppo_scratch", "multitask_finetune")
MAX_EPISODES_PER_STEP = 20
"""The acceptance bar allows at most this many episodes per task per adaptation step."""


@dataclass
class EnvConfig:
    """Where episodes come from."""

    env_path: str | None = None
    """Path of a Unity build (`--env`); null = the built-in headless world."""
    editor: bool = False
    """Connect to the Unity Editor in play mode on port 5004 (`--editor`)."""
    inprocess: bool = False
    """Developer option: step the numpy plaza in this process, no protocol (`--inprocess`)."""
    num_envs: int = 1
    """Worlds run in parallel subprocesses (`--num-envs`); each hosts `num_areas` areas."""
    num_areas: int = 20
    """Areas per world; each area runs one task at a time."""
    base_port: int = 5005
    """First trainer port (`--base-port`); world i uses base_port + i."""
    seed: int = 0
    """Seed of the worlds, the meta-batch sampling and torch (`--seed`)."""
    no_graphics: bool = True
    """Run Unity builds with -nographics -batchmode (`--no-graphics`)."""
    timeout_wait: int = 60
    """Seconds to wait for a world to answer before it counts as dead and is restarted."""


@dataclass
class TasksConfig:
    """The task distribution (fields of `tasks.TaskDistribution`)."""

    families: list[str] = field(default_factory=lambda: list(ALL_FAMILIES))
    """Scenario families to use: any of reach_landmark, follow_visitor, greet_visitor,
    keep_distance, pace_match, patrol."""
    seed: int = 0
    """Seed of the training and held-out task pools."""
    n_train: int = 120
    """Training pool size, spread evenly over the training families."""
    n_heldout: int = 24
    """Held-out pool size (evaluation tasks), spread evenly over all families."""
    heldout_family: str | None = None
    """A family held out entirely (only evaluated, never trained on); null = none."""
    vary_body: bool = True
    """Vary the avatar body (top speed, turn rate, actuation noise) per task."""
    min_gap: float = 0.05
    """Minimum distance of a held-out task from every training task (fraction of range)."""


@dataclass
class PolicyConfig:
    """The actor-critic MLP (fields of `rl.PolicySpec`)."""

    hidden: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden layer widths (actor and critic alike)."""
    activation: str = "tanh"
    """Hidden activation: tanh or relu."""
    normalize_obs: bool = True
    """Running mean/variance observation normalisation."""
    obs_clip: float = 5.0
    """Normalised observations are clipped to +-obs_clip."""
    log_std_init: float = 0.0
    """Initial log standard deviation of the continuous actions."""
    log_std_floor: float = -2.0
    """Soft lower bound of the log standard deviation (keeps exploration alive)."""
    context_size: int = 0
    """Size of the actor's learned task context (CAVIA); 0 = none. With `meta.adapt:
    context` adaptation changes only this vector. Exports fold it away."""


@dataclass
class MetaConfig:
    """Meta-training: which algorithms, batch sizes, step sizes, budgets."""

    algorithms: list[str] = field(default_factory=lambda: ["maml"])
    """Meta-learners to train, in order: any of maml, fomaml, reptile, metasgd, encoder
    (task inference: a learned encoder writes the policy's task context from the support
    episodes in one forward pass; needs policy.context_size > 0)."""
    meta_batch_size: int = 20
    """Training tasks per meta-iteration (stratified over families); one area each at least."""
    support_episodes: int = 10
    """Episodes per task collected with the meta-policy for the inner step (<= 20)."""
    query_episodes: int = 10
    """Episodes per task collected with the adapted policy for the outer loss (<= 20)."""
    inner_lr: float = 0.5
    """Inner PG step size alpha (on normalised advantages); Meta-SGD's initial step size."""
    inner_lr_decay: float = 0.5
    """Adaptation step k uses inner_lr * inner_lr_decay**k (a repeated step size diverges)."""
    outer_lr: float = 3.0e-3
    """Adam learning rate of the outer (meta) update."""
    outer_lr_final_scale: float = 1.0
    """Cosine-anneal the outer learning rate from outer_lr to outer_lr * this over the run
    (progress = the larger of iterations / meta_iterations and elapsed / time_budget_s);
    1 = constant. Annealing lets the last meta-iterations settle instead of jumping around."""
    outer_epochs: int = 8
    """Outer PPO-clip epochs over each query batch (MAML, FOMAML, Meta-SGD); search:
    imitation epochs over the iteration's labelled tasks (and the replayed ones)."""
    outer_minibatches: int = 1
    """Outer Adam steps per outer epoch, each on a random subset of the meta-batch's tasks
    (1 = one full-batch step per epoch). Same compute per epoch, more updates per sample."""
    clip: float = 0.2
    """PPO ratio clip of the outer loss."""
    vf_coef: float = 0.5
    """Value-loss weight of the outer loss."""
    ent_coef: float = 0.0
    """Entropy bonus of the outer loss (the log-std floor already keeps exploration)."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    max_grad_norm: float = 1.0
    """Clip the meta-gradient to this global norm."""
    pretrain_env_steps: int = 0
    """Env steps of multi-task PPO pretraining on the training tasks that initialises the
    meta-parameters before the first meta-iteration (0 = random initialisation). Counted in
    the algorithm's env steps and time budget; keep it <= baselines.multitask_env_steps so
    multitask_finetune gets at least the same pretraining."""
    pretrain_reset_exploration: bool = True
    """Put the pretrained policy's log-std back to policy.log_std_init before meta-training
    (the inner step needs exploration noise to have something to adapt from)."""
    metasgd_lr_scale: float = 0.1
    """Meta-SGD: outer learning rate of the step sizes = outer_lr * this."""
    reptile_inner_lr: float = 0.1
    """Reptile: SGD step size of its inner loop (PPO-clip loss)."""
    reptile_inner_steps: int = 8
    """Reptile: inner SGD steps per task (> 1)."""
    reptile_epsilon: float = 1.0
    """Reptile: outer step, theta += epsilon * Adam-scaled (mean phi - theta)."""
    meta_iterations: int = 200
    """Maximum meta-iterations per algorithm."""
    time_budget_s: float = 600.0
    """Wall-clock budget per algorithm; training stops at whichever limit comes first."""
    job_budget_s: float | None = None
    """Wall-clock target of the whole job (null = none). When set, the baselines run first
    and each meta-learner trains at most until its share of the time that is left, minus a
    reserve for its held-out evaluation and stability check (estimated from the env
    throughput measured during meta-training) and for the report."""
    use_vmap: bool = True
    """Batch tasks with torch.func.vmap (false = per-task loop, same numbers)."""
    per_family: bool = True
    """One meta-learned initialisation per scenario family (the designer picks the family; the
    hidden parameters are what adaptation infers). false = one shared initialisation for all
    families, which must then also infer the family from rewards (needed for
    tasks.heldout_family)."""
    adapt: str = "actor"
    """What the inner step changes: "actor" (every actor weight, MAML as in the paper) or
    "context" (only the policy's task context, CAVIA; needs policy.context_size > 0)."""
    outer_loss: str = "ppo"
    """Outer objective on the query episodes: "ppo" (PPO-clip on rewards), "imitation"
    (guided meta-policy search: the adapted policy imitates the scripted expert's action on
    the states it visited, plus the value loss; labels come from `world.observed_expert`) or
    "ppo+imitation" (both: PPO-clip + imitation_weight x imitation). Not for reptile, which
    has no query set."""
    imitation_weight: float = 1.0
    """outer_loss ppo+imitation: weight of the imitation term next to PPO-clip."""
    imitation_gesture_weight: float = 0.3
    """outer_loss imitation: weight of the gesture cross-entropy next to the squared error
    of the continuous actions."""
    encoder_hidden: int = 64
    """encoder: width of the task encoder's two hidden layers."""
    encoder_task_weight: float = 1.0
    """encoder with a guided outer_loss: weight of the supervised task loss (the inferred
    context, decoded linearly, must match the task's true hidden parameters, known during
    meta-training only); 0 = learn inference from the outer loss alone."""
    search_probes: int = 8
    """search: hypotheses the support step tries, one episode each (<= eval.episodes_per_step;
    config/demo.yaml: 16 of 20)."""
    search_finalists: int = 2
    """search: the best probes after one episode each, which share the support step's other
    eval.episodes_per_step - search_probes episodes equally (successive halving: one lucky
    episode must not decide; docs/training.md, "Strategy search")."""
    family_weights: dict[str, float] = field(default_factory=dict)
    """Relative share of each training family in a meta-batch (families not named: 1; {} =
    equal shares). config/demo.yaml gives patrol twice the share: it learns slowest."""
    search_replay: int = 0
    """search: expert-labelled tasks of past meta-iterations kept (DAgger's aggregation); each
    update mixes in as many of them as this iteration has tasks (0 = none)."""
    search_identify_body: bool = False
    """search: after the support step, set the body numbers of every hypothesis to the body
    identified from the support episodes' observations (top speed, turn rate, actuation
    noise; `meta.body`) instead of the probes' guesses."""
    search_collect_ahead: bool = False
    """search: collect the next meta-batch's episodes in a background thread while the
    trainer learns on this one (the worlds and the trainer stop waiting on each other; the
    data is one update old, which DAgger tolerates; training.prefetch)."""
    search_refine: int = 0
    """search: new hypotheses around the best probe that the adaptation steps between the
    first and the last try, sharing the step's episodes with it (0: none; the probes
    quantise continuous parameters, this zooms in; docs/training.md)."""


@dataclass
class EvalConfig:
    """Held-out evaluation: return before adaptation and after each adaptation step."""

    adaptation_steps: int = 3
    """Adaptation steps measured (returns at 0..adaptation_steps)."""
    episodes_per_step: int = 10
    """Episodes per task per step (<= 20): measured, then used for the next inner step."""
    inner_lr: float | None = None
    """Adaptation step size at test time; null = the meta-learner's own (learned for
    Meta-SGD)."""
    stability_repeats: int = 2
    """Stability check: the final and the best checkpoint (best window of the training curve)
    are both adapted once on every held-out task this many times, paired by seed, and
    compared after one step; 0 = compare training-curve windows only."""


@dataclass
class BaselinesConfig:
    """Budgets of the baselines (consumed by `training.baselines`); fine-tuning uses the
    `eval` section's episodes_per_step and adaptation_steps, like the meta-learners."""

    methods: list[str] = field(
        default_factory=lambda: ["random", "oracle", "ppo_scratch", "multitask_finetune"]
    )
    """Baselines to run: any of random, oracle, ppo_scratch, multitask_finetune (random and
    oracle are needed for normalised scores; pre_adapt comes from the meta-learners)."""
    eval_episodes: int = 8
    """Episodes per held-out task for the random and oracle returns."""
    n_validation: int = 6
    """Validation tasks (from the training pool) for the fine-tuning step-size search."""
    multitask_env_steps: int = 2_000_000
    """Env steps of multi-task PPO pretraining on the training tasks."""
    oracle_env_steps: int = 4_000_000
    """Env-step cap of training the oracle (a policy that sees the hidden parameters)."""
    oracle_patience: int = 30
    """Stop the oracle after this many iterations without improvement (0 = whole budget)."""
    lr_candidates: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3, 3e-3])
    """Fine-tuning step sizes tried on validation tasks (the best is used on held-out)."""


@dataclass
class OutputConfig:
    """Where results go."""

    results_dir: str = "results"
    """Run folders are created as <results_dir>/<run-id>/ (`--results-dir`)."""
    tensorboard: bool = True
    """Write TensorBoard scalars into the run folder."""
    progress: bool = True
    """Show a progress bar with ETA."""


@dataclass
class RunConfig:
    """A whole run: every section of the YAML file."""

    env: EnvConfig = field(default_factory=EnvConfig)
    """Where episodes come from."""
    tasks: TasksConfig = field(default_factory=TasksConfig)
    """The task distribution."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The policy network."""
    meta: MetaConfig = field(default_factory=MetaConfig)
    """Meta-training."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Held-out evaluation."""
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    """Baseline budgets."""
    output: OutputConfig = field(default_factory=OutputConfig)
    """Output locations."""

    # -- derived objects -------------------------------------------------------------------
    def task_distribution(self) -> TaskDistribution:
        t = self.tasks
        return TaskDistribution(
            families=tuple(t.families),
            seed=t.seed,
            n_train=t.n_train,
            n_heldout=t.n_heldout,
            heldout_family=t.heldout_family,
            vary_body=t.vary_body,
            min_gap=t.min_gap,
        )

    def policy_spec(self) -> Any:
        from avatar_meta.rl import PolicySpec

        p = self.policy
        return PolicySpec(
            hidden=tuple(p.hidden),
            activation=p.activation,
            normalize_obs=p.normalize_obs,
            obs_clip=p.obs_clip,
            log_std_init=p.log_std_init,
            log_std_floor=p.log_std_floor,
            context_size=p.context_size,
        )

    @property
    def total_areas(self) -> int:
        return self.env.num_envs * self.env.num_areas

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_from_dict(data: Mapping[str, Any] | None) -> RunConfig:
    """Build and validate a RunConfig from plain data (missing keys take defaults)."""
    config: RunConfig = build_dataclass(RunConfig, data, "")
    from avatar_meta.config_checks import validate  # the checks import this module

    validate(config)
    return config


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys (`"env.num_envs": 2`) in a nested dict (in place; also returned).
    `None` values are skipped, so unset CLI flags leave the file's value alone."""
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"override {dotted!r}: use section.key, e.g. env.num_envs")
        node = data.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{section}: expected a mapping of keys")
        node[key] = value
    return data


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> RunConfig:
    """Read a YAML config (None = all defaults), apply dotted overrides, validate."""
    import yaml

    data: Any = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist; pass a YAML file path")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (env:, meta:, ...)")
    data = apply_overrides(dict(data), overrides or {})
    try:
        return config_from_dict(data)
    except ConfigError as err:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{err}") from None


def dump_config(config: RunConfig, path: str | Path | None = None) -> str:
    """The config as YAML (sections in declaration order); written to `path` if given."""
    import yaml

    text = yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False)
    if path is not None:
        Path(path).write_text(text)
    return text


__all__ = [
    "ALGORITHMS",
    "BaselinesConfig",
    "ConfigError",
    "EnvConfig",
    "EvalConfig",
    "MetaConfig",
    "OutputConfig",
    "PolicyConfig",
    "RunConfig",
    "TasksConfig",
    "apply_overrides",
    "build_dataclass",
    "config_from_dict",
    "dump_config",
    "load_config",
]
