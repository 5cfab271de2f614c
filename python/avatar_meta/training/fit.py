"""`avatar-meta fit LEARNER`: train one of the non-RL-loop meta-learners from a config file.

The gradient-based meta-RL learners (maml, fomaml, reptile, metasgd) train through
`avatar-meta train` on avatar scenarios. The other learners solve other problems and each has
its own built-in data source; this module trains any of them from one YAML file
(`config/learners.yaml`, one section per learner, `training/fit_config.py`) and writes a
result folder:

    <out>/<learner>.pt      the trained model (`load_fitted` turns it back into an object)
    <out>/metrics.json      held-out evaluation of that model, its config and timings
    <out>/config.yaml       the section that was used (defaults filled in)
    <out>/tensorboard/      metagrad only: gamma / lambda / return trajectories

| learner       | data                                        | adapts by                 |
|---------------|---------------------------------------------|---------------------------|
| protonet      | visitor-style trajectories or digits        | class prototypes          |
| matching      | same                                        | cosine attention          |
| hypernet      | scripted-expert demos in the plaza          | one forward pass          |
| probabilistic | ambiguous sine-or-line regression           | sampled gradient steps    |
| metagrad      | PPO on plaza tasks of the config            | (learns gamma / lambda)   |
| character     | designer-style attribute examples           | Meta-SGD steps            |

`avatar-meta bench algorithms` compares each learner with its baseline; `fit` trains the one a
designer picked, with their settings, and keeps the model. Files are written atomically, and
an existing `<out>/<learner>.pt` is only replaced with `force=True`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from avatar_meta.config import ConfigError, build_dataclass
from avatar_meta.training.fit_config import (
    LEARNERS,
    RL_LOOP_LEARNERS,
    CharacterFitConfig,
    HypernetFitConfig,
    LearnersConfig,
    MetaGradFitConfig,
    MetricFitConfig,
    ProbabilisticFitConfig,
)


# ---------------------------------------------------------------------------------------------
# the learners
# ---------------------------------------------------------------------------------------------
@dataclass
class Fitted:
    """What a fit produced: the model's state to save and its evaluation."""

    state: dict[str, Any]
    metrics: dict[str, Any]


def _metric_data(cfg: MetricFitConfig) -> dict[str, Any]:
    """Train/held-out arrays, class lists and the encoder of the chosen data source."""
    from avatar_meta.meta import styles
    from avatar_meta.meta.digits import TEST_DIGITS, digits_data

    if cfg.data == "digits":
        x_tr, y_tr, x_te, y_te = digits_data()
        return {
            "train": (x_tr, y_tr, sorted(set(y_tr.tolist()))),
            "test": (x_te, y_te, list(TEST_DIGITS)),
            "encoder": {"kind": "conv", "channels": 32, "blocks": 2},
            "standardiser": None,
        }
    ds = styles.build_dataset(per_style=cfg.per_style, seed=cfg.seed)
    mu, sd = styles.standardiser(ds.x[np.isin(ds.y, styles.TRAIN)])
    x = np.clip((ds.x - mu) / sd, -10, 10).astype(np.float32)
    return {
        "train": (x, ds.y, list(styles.TRAIN)),
        "test": (x, ds.y, list(styles.HELDOUT)),
        "encoder": {"kind": "mlp", "sizes": [int(x.shape[1]), *cfg.hidden]},
        "standardiser": (mu.astype(np.float32), sd.astype(np.float32)),
        "classes": [s.name for s in styles.STYLES],
    }


def _encoder(spec: dict[str, Any], seed: int) -> tuple[Callable[..., Any], dict[str, Any]]:
    from avatar_meta.meta.metric import conv_encode, init_conv, init_mlp, mlp_encode, with_input

    if spec["kind"] == "conv":
        return with_input(conv_encode), init_conv(spec["channels"], spec["blocks"], seed=seed)
    return mlp_encode, init_mlp(spec["sizes"], seed=seed)


def _metric_learner(
    name: str, cfg: MetricFitConfig, encode: Any, params: Any, sample: torch.Tensor
) -> Any:
    from avatar_meta.meta.metric import MatchingNet, MetricConfig, ProtoNet, init_fce

    mcfg = MetricConfig(lr=cfg.lr, steps=cfg.steps, meta_batch=cfg.meta_batch, seed=cfg.seed)
    if name == "protonet":
        return ProtoNet(encode, params, mcfg)
    if cfg.fce_steps > 0 and "fce.att.b" not in params:
        with torch.no_grad():
            dim = int(encode(params, sample).shape[-1])
        params = params | init_fce(dim, seed=cfg.seed)
    return MatchingNet(encode, params, mcfg, fce_steps=cfg.fce_steps, scale=cfg.scale)


@dataclass
class FittedClassifier:
    """A trained ProtoNet / Matching Network with what its inputs need."""

    learner: Any
    """`ProtoNet` or `MatchingNet` holding the trained encoder."""
    standardiser: tuple[torch.Tensor, torch.Tensor] | None
    """styles: (mean, std) to z-score raw `styles.featurise` features (then clip to +-10)."""
    classes: list[str] | None
    """styles: the style names, indexed by label."""

    def predict(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor
    ) -> torch.Tensor:
        """Labels of the queries given a labelled support set of new classes."""
        return self.learner.predict(support_x, support_y, query_x)  # type: ignore[no-any-return]


def fit_metric(name: str, cfg: MetricFitConfig) -> Fitted:
    """Episodic training on the training classes; accuracy on held-out classes (with the
    nearest-neighbour accuracy on the same episodes for reference)."""
    from avatar_meta.meta.metric import EpisodeSampler, episode_accuracy, nearest_neighbour_predict

    t0 = time.perf_counter()
    data = _metric_data(cfg)
    encode, params = _encoder(data["encoder"], cfg.seed)
    x_tr, y_tr, train_classes = data["train"]
    learner = _metric_learner(name, cfg, encode, params, torch.as_tensor(x_tr[:1]))
    sampler = EpisodeSampler(x_tr, y_tr, train_classes, cfg.train_way, cfg.k_shot, cfg.n_query, 1)
    history = learner.fit(sampler)
    train_s = time.perf_counter() - t0
    x_te, y_te, test_classes = data["test"]

    def test_sampler() -> EpisodeSampler:
        return EpisodeSampler(x_te, y_te, test_classes, cfg.n_way, cfg.k_shot, cfg.n_query, 100)

    acc = episode_accuracy(learner.predict, test_sampler(), cfg.eval_episodes)
    nn = episode_accuracy(nearest_neighbour_predict, test_sampler(), cfg.eval_episodes)
    std = data["standardiser"]
    state = {
        "params": learner.params,
        "encoder": data["encoder"],
        "standardiser": None if std is None else [torch.as_tensor(s) for s in std],
        "classes": data.get("classes"),
    }
    metrics = {
        "metric": f"{cfg.n_way}-way {cfg.k_shot}-shot accuracy on held-out {cfg.data} classes",
        "value": round(acc.mean, 4),
        "ci95": round(acc.ci95, 4),
        "nearest_neighbour_value": round(nn.mean, 4),
        "final_train_loss": round(float(np.mean(history[-50:])), 4),
        "train_seconds": round(train_s, 1),
    }
    return Fitted(state, metrics)


def fit_hypernet(cfg: HypernetFitConfig) -> Fitted:
    """Meta-train the hypernetwork on noisy-expert demos of the training tasks; score the
    policies it emits from `context` held-out transitions by their return in the plaza."""
    from avatar_meta.meta import hypernet as hn
    from avatar_meta.tasks import TaskDistribution
    from avatar_meta.world import scripted

    t0 = time.perf_counter()
    dist = TaskDistribution(
        families=tuple(cfg.families), seed=cfg.seed, n_train=cfg.n_train, n_heldout=cfg.n_heldout
    )
    train_tasks = [t.spec for t in dist.train_tasks()]
    held_tasks = [t.spec for t in dist.heldout()]
    steps = 200 * cfg.episodes
    train_demos = hn.record_demos(train_tasks, steps, seed=cfg.seed)
    held_demos = hn.record_demos(held_tasks, steps, seed=cfg.seed + 1)
    flat = train_demos.obs.flatten(0, 1)
    norm = (flat.mean(0), flat.std(0).clamp_min(1e-3))
    train_demos, held_demos = (hn.standardise(d, *norm) for d in (train_demos, held_demos))
    hcfg = hn.HypernetConfig(
        obs_dim=int(flat.shape[-1]), trunk=tuple(cfg.trunk), embed_dim=cfg.embed_dim
    )
    learner = hn.Hypernet(hcfg)
    sampler = hn.meta_batch_sampler(
        train_demos,
        episodes=cfg.episodes,
        context=cfg.context,
        query=cfg.query,
        meta_batch=cfg.meta_batch,
        gen=torch.Generator().manual_seed(cfg.seed + 11),
    )
    params, curve = hn.fit(
        learner.meta_grad, learner.init(cfg.seed), sampler, cfg.iterations, cfg.lr
    )
    train_s = time.perf_counter() - t0

    ep = steps // cfg.episodes
    gen = torch.Generator().manual_seed(cfg.seed + 23)
    idx = torch.stack([torch.randperm(ep, generator=gen)[: cfg.context] for _ in held_tasks])
    ctx = hn.context_rows(held_demos, torch.arange(len(held_tasks)), idx)
    eval_seed = cfg.seed + 5
    returns = hn.rollout_returns(
        learner.adapt_tasks(params, ctx), held_tasks, eval_seed, norm, cfg.eval_episodes
    )
    oracle = scripted.evaluate(scripted.scripted_actions, held_tasks, cfg.eval_episodes, eval_seed)
    agnostic = scripted.evaluate(
        scripted.TaskAgnosticController(), held_tasks, cfg.eval_episodes, eval_seed
    )
    state = {
        "params": params,
        "hypernet_config": asdict(hcfg),
        "obs_norm": [norm[0], norm[1]],
    }
    metrics = {
        "metric": f"mean return on {len(held_tasks)} held-out plaza tasks after adapting on "
        f"{cfg.context} demonstrated transitions",
        "value": round(float(returns.mean()), 2),
        "scripted_expert_value": round(float(oracle.returns.mean()), 2),
        "task_agnostic_value": round(float(agnostic.returns.mean()), 2),
        "final_train_loss": round(float(np.mean(curve[-50:])), 4),
        "train_seconds": round(train_s, 1),
    }
    return Fitted(state, metrics)


def fit_probabilistic(cfg: ProbabilisticFitConfig) -> Fitted:
    """Meta-train the prior on ambiguous sine-or-line tasks; held-out predictive
    log-likelihood per point (a mixture over sampled adapted parameters) per support size."""
    from avatar_meta.benchmarks import probabilistic_bench as ambiguous
    from avatar_meta.meta import probabilistic as pm
    from avatar_meta.meta.sinusoid import init_mlp, mlp, mse_loss

    data = ambiguous.AmbiguousConfig(iterations=cfg.iterations, lr=cfg.lr, seed=cfg.seed)
    learner = pm.ProbabilisticMAML(
        mlp,
        mse_loss,
        pm.ProbabilisticConfig(
            inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps, max_gamma=cfg.max_gamma
        ),
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    meta, curve = pm.fit(
        learner,
        learner.init(init_mlp(data.hidden, cfg.seed)),
        ambiguous.task_sampler(data, gen),
        cfg.iterations,
        gen,
        cfg.lr,
    )
    train_s = time.perf_counter() - t0
    test_gen = torch.Generator().manual_seed(cfg.seed + 1_000_003)
    sample_gen = torch.Generator().manual_seed(cfg.seed + 7)
    by_shot: dict[str, float] = {}
    for k in cfg.eval_shots:
        test = ambiguous.task_batch(data, test_gen, cfg.eval_tasks, k, data.eval_points)
        lls = []
        for i in range(cfg.eval_tasks):
            support = (test.support[0][i], test.support[1][i])
            f = learner.predict(meta, support, test.query[0][i], cfg.eval_samples, sample_gen)
            ll = pm.gaussian_log_lik(f, test.query[1][i], meta.log_noise)
            lls.append(torch.logsumexp(ll, 0) - math.log(cfg.eval_samples))
        by_shot[str(k)] = round(float(torch.stack(lls).mean()), 4)
    metrics = {
        "metric": "held-out predictive log-likelihood per point, ambiguous sine-or-line "
        f"regression, mean over {cfg.eval_shots}-shot",
        "value": round(float(np.mean(list(by_shot.values()))), 4),
        "by_shot": by_shot,
        "learned_noise_std": round(float(torch.exp(meta.log_noise)), 4),
        "final_train_loss": round(float(np.mean(curve[-50:])), 4),
        "train_seconds": round(train_s, 1),
    }
    state = {"meta": meta._asdict(), "hidden": list(data.hidden)}
    return Fitted(state, metrics)


def fit_metagrad(cfg: MetaGradFitConfig, log_dir: Path | None) -> Fitted:
    """PPO with the meta-gradient on (gamma, lambda) on one scenario in the plaza."""
    from avatar_meta.envs.inprocess import PlazaEnvConfig, PlazaTaskEnv
    from avatar_meta.meta.metagrad import MetaGradConfig, MetaGradPPOConfig, train_ppo_metagrad
    from avatar_meta.tasks import make_task

    task = make_task(cfg.family, cfg.params or None)
    ppo = MetaGradPPOConfig(
        meta=MetaGradConfig(gamma_init=cfg.gamma_init, lam_init=cfg.lam_init, meta_lr=cfg.meta_lr),
        iterations=cfg.iterations,
        episodes_per_iter=cfg.episodes_per_iter,
        eval_episodes=cfg.eval_episodes,
        seed=cfg.seed,
    )
    env = PlazaTaskEnv(PlazaEnvConfig(num_areas=cfg.num_areas, seed=cfg.seed))
    hist = train_ppo_metagrad(
        env, [task], ppo, log_dir=None if log_dir is None else str(log_dir), tag="metagrad"
    )
    metrics = {
        "metric": f"deterministic return on {task.task_id} after {hist.env_steps[-1]} env steps",
        "value": round(hist.eval_return, 3),
        "final_gamma": round(hist.gamma[-1], 5),
        "final_lambda": round(hist.lam[-1], 5),
        "gamma_trajectory": [round(g, 5) for g in hist.gamma],
        "lambda_trajectory": [round(v, 5) for v in hist.lam],
        "train_seconds": round(hist.seconds, 1),
    }
    state = {"task": {"family": task.family, "params": list(task.params)}, "history": asdict(hist)}
    return Fitted(state, metrics)


def fit_character(cfg: CharacterFitConfig) -> tuple[Any, dict[str, Any]]:
    """Meta-train the attribute generator; MSE on held-out designers after adapting."""
    from avatar_meta.meta import character

    ccfg = character.CharacterConfig(
        learner=cfg.learner,
        iterations=cfg.iterations,
        inner_steps=cfg.inner_steps,
        inner_lr=cfg.inner_lr,
        meta_lr=cfg.meta_lr,
        seed=cfg.seed,
    )
    model = character.meta_train(ccfg)
    support, q_desc, q_attr = character.heldout_designers(
        ccfg, cfg.eval_designers, cfg.eval_examples, 50, character.HELDOUT_STREAM
    )
    with torch.no_grad():
        pred = torch.stack(
            [
                model.adapt_predict((support[0][i], support[1][i]), q_desc[i])
                for i in range(cfg.eval_designers)
            ]
        )
    mse = float((pred.clamp(0.0, 1.0) - q_attr).square().mean())
    metrics = {
        "metric": f"normalised attribute MSE on {cfg.eval_designers} held-out designers after "
        f"adapting to {cfg.eval_examples} examples each",
        "value": round(mse, 5),
        "train_seconds": round(model.train_seconds, 1),
    }
    return model, metrics


# ---------------------------------------------------------------------------------------------
# entry point, saving and loading
# ---------------------------------------------------------------------------------------------
def fit(learner: str, config: LearnersConfig, out_dir: str | Path, force: bool = False) -> Path:
    """Train `learner` with its section of `config`; returns the model path in `out_dir`."""
    if learner in RL_LOOP_LEARNERS:
        raise ConfigError(
            f"{learner} is a meta-RL learner: train it with `avatar-meta train CONFIG` "
            f"(meta.algorithms: [{learner}])"
        )
    if learner not in LEARNERS:
        raise ConfigError(f"unknown learner {learner!r}; use any of: {', '.join(LEARNERS)}")
    out = Path(out_dir)
    model_path = out / f"{learner}.pt"
    if model_path.exists() and not force:
        raise FileExistsError(f"{model_path} exists; pass --force to overwrite it")
    out.mkdir(parents=True, exist_ok=True)
    section = getattr(config, learner)
    torch.set_num_threads(1)  # small models: one thread is fastest, and kind to shared cores
    start = time.perf_counter()
    if learner == "character":
        model, metrics = fit_character(section)
        _atomic(model_path, model.save)
    else:
        if learner in ("protonet", "matching"):
            fitted = fit_metric(learner, section)
        elif learner == "hypernet":
            fitted = fit_hypernet(section)
        elif learner == "probabilistic":
            fitted = fit_probabilistic(section)
        else:
            fitted = fit_metagrad(section, out / "tensorboard")
        payload = {"kind": f"avatar_meta.{learner}", "config": asdict(section), **fitted.state}
        _atomic(model_path, lambda p: torch.save(payload, str(p)))
        metrics = fitted.metrics
    record = {
        "learner": learner,
        "model": model_path.name,
        **metrics,
        "seconds": round(time.perf_counter() - start, 1),
        "config": asdict(section),
    }
    _atomic(out / "metrics.json", lambda p: Path(p).write_text(json.dumps(record, indent=2) + "\n"))
    _atomic(
        out / "config.yaml",
        lambda p: Path(p).write_text(yaml.safe_dump({learner: asdict(section)}, sort_keys=False)),
    )
    return model_path


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write through a temporary file in the same folder, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class FittedHypernet:
    """A trained hypernet: `learner.adapt(context)(obs)` on observations z-scored with
    `obs_norm = (mean, std)` (contexts too)."""

    learner: Any
    obs_norm: tuple[torch.Tensor, torch.Tensor]


def load_fitted(path: str | Path) -> Any:
    """The object a `fit` model file stands for:
    - protonet / matching: a `FittedClassifier` (`predict(support_x, support_y, query_x)`);
    - hypernet: a `FittedHypernet`;
    - character: a `CharacterModel` (what `avatar-meta generate --model` loads);
    - probabilistic / metagrad: the saved dict (parameters and recorded trajectories)."""
    data = torch.load(str(path), weights_only=False)
    kind = data.get("kind", "") if isinstance(data, dict) else ""
    if kind == "avatar_meta.character":
        from avatar_meta.meta.character import CharacterModel

        return CharacterModel.load(path)
    if kind in ("avatar_meta.protonet", "avatar_meta.matching"):
        name = kind.split(".")[1]
        cfg = build_dataclass(MetricFitConfig, data["config"], f"{name}.")
        encode, _ = _encoder(data["encoder"], 0)
        learner = _metric_learner(name, cfg, encode, data["params"], torch.zeros(0))
        std = data["standardiser"]
        return FittedClassifier(learner, None if std is None else tuple(std), data["classes"])
    if kind == "avatar_meta.hypernet":
        from avatar_meta.meta import hypernet as hn

        raw = dict(data["hypernet_config"])
        for key in ("trunk", "encoder"):
            raw[key] = tuple(raw[key])
        learner = hn.Hypernet(hn.HypernetConfig(**raw)).clone(data["params"])
        return FittedHypernet(learner, (data["obs_norm"][0], data["obs_norm"][1]))
    if kind in ("avatar_meta.probabilistic", "avatar_meta.metagrad"):
        return data
    raise ValueError(f"{path}: not a model written by `avatar-meta fit`")
