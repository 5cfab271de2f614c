"""Benchmark of the model-based learner: `results.hypernet` of `avatar-meta bench algorithms`.

Few-shot imitation in the built-in plaza (`meta/hypernet.py`): the hypernetwork vs MAML (same
policy network, same behaviour-cloning loss, same context transitions) and a no-adaptation
policy, scored by the return of the adapted policies on held-out tasks and by adaptation
latency.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avatar_meta.meta.core import Params, TaskBatch, map_tasks
from avatar_meta.meta.hypernet import (
    DART_NOISE,
    FAMILIES,
    Context,
    Hypernet,
    HypernetConfig,
    bc_loss,
    context_rows,
    fit,
    maml_bc_loss,
    meta_batch_sampler,
    policy_forward,
    policy_params_for_maml,
    record_demos,
    rollout_returns,
    standardise,
)
from avatar_meta.meta.maml import MAML, MAMLConfig


@dataclass(frozen=True)
class BenchConfig:
    """The few-shot imitation benchmark in the plaza (hypernet vs MAML)."""

    n_train: int = 240
    """Training tasks (TaskDistribution, bodies varied, families `FAMILIES`)."""
    n_heldout: int = 96
    """Held-out tasks (disjoint from training by TaskDistribution's min_gap)."""
    eval_episodes: int = 3
    """Episodes per held-out task when scoring returns (every controller alike)."""
    episodes: int = 2
    """Recorded noisy-expert episodes per task (context from the first, query from the rest)."""
    context: int = 16
    """Context transitions per task (the same rows for both learners)."""
    query: int = 64
    """Query transitions per task per meta-iteration."""
    meta_batch: int = 16
    """Tasks per meta-iteration."""
    iterations: int = 1500
    """Meta-iterations for each learner."""
    lr: float = 3e-3
    """Adam learning rate (every learner)."""
    maml_inner_lr: float = 0.1
    """MAML's inner step size on the behaviour-cloning loss."""
    maml_inner_steps: int = 1
    """MAML's inner steps (meta-training and evaluation)."""
    eval_contexts: tuple[int, ...] = (4, 16, 64)
    """Context sizes at which held-out action error is also reported."""
    seed: int = 0
    """Seeds the task pools, the recordings, the initialisations and the sampling."""


def _latency_ms(fn: Callable[[], Any], reps: int) -> dict[str, float]:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {
        "p50": round(float(np.median(times)), 3),
        "p99": round(float(np.percentile(times, 99)), 3),
    }


def bench(quick: bool = False, cfg: BenchConfig | None = None) -> dict[str, Any]:
    """Hypernet vs MAML at equal adaptation data in the plaza; `results.hypernet` of
    `avatar-meta bench algorithms`."""
    from avatar_meta.tasks import TaskDistribution
    from avatar_meta.world import scripted

    cfg = cfg or BenchConfig()
    if quick:
        cfg = BenchConfig(
            **{**asdict(cfg), "iterations": min(cfg.iterations, 900), "n_heldout": 64}
        )
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    dist = TaskDistribution(
        families=FAMILIES, seed=cfg.seed, n_train=cfg.n_train, n_heldout=cfg.n_heldout
    )
    train_tasks = [t.spec for t in dist.train_tasks()]
    held_tasks = [t.spec for t in dist.heldout()]
    steps = 200 * cfg.episodes
    train_demos = record_demos(train_tasks, steps, seed=cfg.seed)
    held_demos = record_demos(held_tasks, steps, seed=cfg.seed + 1)
    record_s = time.perf_counter() - start
    # Standardise observations with the training demos' statistics (PolicyWeights carry
    # these normalisation statistics, design section 7); the rollouts use the same.
    flat = train_demos.obs.flatten(0, 1)
    norm = (flat.mean(0), flat.std(0).clamp_min(1e-3))
    train_demos, held_demos = (standardise(d, *norm) for d in (train_demos, held_demos))

    hcfg = HypernetConfig(obs_dim=int(train_demos.obs.shape[-1]))
    hyper = Hypernet(hcfg)
    bc = maml_bc_loss(hcfg)
    maml = MAML(
        bc,
        bc,
        MAMLConfig(
            inner_lr=cfg.maml_inner_lr, inner_lr_decay=1.0, inner_steps=cfg.maml_inner_steps
        ),
        forward=policy_forward,
    )
    trained: dict[str, Params] = {}
    train_s: dict[str, float] = {}
    curves: dict[str, list[float]] = {}
    learners: dict[str, Callable[[Params, TaskBatch], tuple[Params, Tensor]]] = {
        "hypernet": hyper.meta_grad,
        "maml": maml.meta_grad,
        "no_adaptation": MAML(bc, bc, MAMLConfig(inner_steps=0)).meta_grad,
    }
    inits = {
        "hypernet": hyper.init(cfg.seed),
        "maml": policy_params_for_maml(hcfg, cfg.seed),
        "no_adaptation": policy_params_for_maml(hcfg, cfg.seed),
    }
    for name, grad_fn in learners.items():
        t0 = time.perf_counter()
        sampler = meta_batch_sampler(
            train_demos,
            episodes=cfg.episodes,
            context=cfg.context,
            query=cfg.query,
            meta_batch=cfg.meta_batch,
            gen=torch.Generator().manual_seed(cfg.seed + 11),
        )
        trained[name], curves[name] = fit(grad_fn, inits[name], sampler, cfg.iterations, cfg.lr)
        train_s[name] = time.perf_counter() - t0

    # ---------------------------------------------------------------- held-out evaluation
    n_held = len(held_tasks)
    ep = steps // cfg.episodes
    gen = torch.Generator().manual_seed(cfg.seed + 23)
    everyone = torch.arange(n_held)
    query = (held_demos.obs[:, ep:], held_demos.action[:, ep:], torch.ones(n_held, steps - ep))

    def adapted(name: str, ctx: Context) -> Params:
        if name == "hypernet":
            return hyper.adapt_tasks(trained[name], ctx)
        if name == "maml":
            return maml.adapt_tasks(trained[name], ctx)
        return {k: v.expand(n_held, *v.shape) for k, v in trained[name].items()}

    action_mse: dict[str, dict[str, float]] = {name: {} for name in learners}
    main_ctx: Context | None = None
    for k in cfg.eval_contexts:
        idx = torch.stack([torch.randperm(ep, generator=gen)[:k] for _ in range(n_held)])
        ctx = context_rows(held_demos, everyone, idx)
        if k == cfg.context:
            main_ctx = ctx
        for name in learners:
            pol = adapted(name, ctx)
            with torch.no_grad():
                err = map_tasks(bc_loss, (0, 0))(pol, query)
            action_mse[name][str(k)] = round(float(err.mean()), 4)
    if main_ctx is None:
        idx = torch.stack([torch.randperm(ep, generator=gen)[: cfg.context] for _ in range(n_held)])
        main_ctx = context_rows(held_demos, everyone, idx)

    eval_seed = cfg.seed + 5
    returns = {
        name: rollout_returns(
            adapted(name, main_ctx), held_tasks, eval_seed, norm, cfg.eval_episodes
        )
        for name in learners
    }
    oracle = scripted.evaluate(
        scripted.scripted_actions, held_tasks, cfg.eval_episodes, eval_seed
    ).returns
    agnostic = scripted.evaluate(
        scripted.TaskAgnosticController(), held_tasks, cfg.eval_episodes, eval_seed
    ).returns
    random = scripted.evaluate(
        scripted.random_controller(cfg.seed), held_tasks, cfg.eval_episodes, eval_seed
    ).returns

    def normalised(r: np.ndarray) -> float:
        return float(np.mean((r - random) / np.maximum(oracle - random, 1e-6)))

    one = main_ctx
    single = Context(one.rows[0], one.weights[0])
    latency = {
        "hypernet": _latency_ms(lambda: _no_grad(hyper.adapt, trained["hypernet"], single), 200),
        "maml": _latency_ms(lambda: maml.adapt(trained["maml"], single), 200),
    }
    fam = np.array([t.family for t in held_tasks])
    per_family = {
        f: {
            name: round(float(r[fam == f].mean()), 2)
            for name, r in {**returns, "oracle": oracle, "task_agnostic": agnostic}.items()
        }
        for f in FAMILIES
    }
    h_ret, m_ret = float(returns["hypernet"].mean()), float(returns["maml"].mean())
    diff = returns["hypernet"] - returns["maml"]
    return {
        "metric": f"mean return on held-out plaza tasks after adapting on {cfg.context} "
        "demonstrated transitions (few-shot imitation)",
        "value": round(h_ret, 2),
        "baseline": f"MAML ({cfg.maml_inner_steps} inner step, same policy network, same BC loss, "
        "same context transitions)",
        "baseline_value": round(m_ret, 2),
        "beats_baseline": bool(h_ret > m_ret),
        "beats_baseline_action_mse": bool(
            action_mse["hypernet"][str(cfg.context)] < action_mse["maml"][str(cfg.context)]
        )
        if str(cfg.context) in action_mse["maml"]
        else None,
        "paired_difference_ci95": round(float(1.96 * diff.std() / math.sqrt(len(diff))), 2),
        "normalised_score": {name: round(normalised(r), 3) for name, r in returns.items()},
        "returns": {
            **{name: round(float(r.mean()), 2) for name, r in returns.items()},
            "oracle": round(float(oracle.mean()), 2),
            "task_agnostic": round(float(agnostic.mean()), 2),
            "random": round(float(random.mean()), 2),
        },
        "returns_by_family": per_family,
        "heldout_action_mse_by_context_size": action_mse,
        "adaptation_latency_ms": latency,
        "latency_ratio_maml_over_hypernet": round(
            latency["maml"]["p50"] / max(latency["hypernet"]["p50"], 1e-9), 1
        ),
        "final_train_loss": {name: round(float(np.mean(c[-50:])), 4) for name, c in curves.items()},
        "train_seconds": {name: round(s, 1) for name, s in train_s.items()},
        "setup": {
            **asdict(cfg),
            "families": list(FAMILIES),
            "dart_noise": DART_NOISE,
            "record_seconds": round(record_s, 1),
        },
        "seconds": round(time.perf_counter() - start, 1),
    }


def _no_grad(fn: Callable[..., Params], *args: Any) -> Params:
    with torch.no_grad():
        return fn(*args)
