"""Held-out evaluation of a meta-learner: return before adaptation and after 1..S steps.

Protocol (design section 6, issue 3): for every held-out task, at step s = 0..S
  - collect `episodes_per_step` episodes with the task's current params (step 0: the
    meta-learned initialisation), record their mean return as `return_by_step[s]`;
  - if s < S, adapt once more on exactly those episodes.
So the measurement episodes of step s are the adaptation data of step s + 1: one step costs
`episodes_per_step` episodes per task, which is what the acceptance bar counts.

All held-out tasks run together (one task per area, rounds when there are more tasks than
areas) and adapt together (vmap over tasks).

Adaptation rule per algorithm
- maml, fomaml: one PG step, step size `inner_lr * inner_lr_decay**s`;
- metasgd: the learned per-parameter step sizes, scaled by `inner_lr_decay**s`;
- reptile: its own inner optimiser (k PPO-SGD steps on the episodes), which is what its
  initialisation was trained for;
- encoder: one forward pass of the task encoder over every episode seen so far (the adapted
  params carry the pooled statistics) writes the task context;
- search: step 0's episodes each act with one probe context (a hypothesis about the task),
  every later step acts with the best probe so far, and the steps between the first and the
  last also try new hypotheses around it (`evaluate_search`, `meta.search`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avatar_meta import contract
from avatar_meta.config import RunConfig
from avatar_meta.envs.rollouts import TaskEnv, TaskRollout
from avatar_meta.meta.body import identify_body
from avatar_meta.meta.core import map_tasks
from avatar_meta.meta.encoder import encoder_adapt
from avatar_meta.meta.reptile import reptile_adapt
from avatar_meta.meta.search import (
    CONTEXT,
    ProbeSearch,
    choice_dims,
    cover,
    refinements,
    task_contexts,
    with_body,
)
from avatar_meta.rl import Buffers, Params, Policy, make_pg_loss
from avatar_meta.tasks import Task, body_code
from avatar_meta.training.common import (
    adapt_prefix,
    adapt_step,
    collect_per_task,
    mean_returns,
    rollouts_to_tasks,
)
from avatar_meta.training.records import HeldoutRecord, make_record
from avatar_meta.training.task_groups import scatter_tasks, take_tasks, task_groups

AdaptFn = Callable[[Params, Any, int], Params]
"""(stacked per-task params [K, ...], task-stacked batch, step index) -> adapted params."""


def make_adapt_fn(
    algorithm: str,
    config: RunConfig,
    policy: Policy,
    buffers: Buffers,
    metasgd_lrs: Sequence[Params] | None = None,
) -> AdaptFn:
    """The test-time adaptation step of `algorithm` (see the module docstring)."""
    m, ev = config.meta, config.eval
    alpha = ev.inner_lr if ev.inner_lr is not None else m.inner_lr
    if algorithm == "search":
        raise ValueError("search adapts by probing, not by a step on episodes: evaluate_search")
    pg = make_pg_loss(policy, buffers)
    prefix = adapt_prefix(config)

    if algorithm == "encoder":
        infer = partial(encoder_adapt, policy=policy, buffers=buffers)

        def encoder_fn(stacked: Params, batch: Any, step: int) -> Params:
            with torch.no_grad():
                out: Params = map_tasks(infer, (0, 0), m.use_vmap)(stacked, batch)
            return out

        return encoder_fn

    if algorithm == "reptile":
        from avatar_meta.training.meta_loop import build_learner

        learner = build_learner("reptile", config, policy, buffers)

        def reptile_fn(stacked: Params, batch: Any, step: int) -> Params:
            fn = partial(reptile_adapt, inner_loss=learner.inner_loss, cfg=learner.config)
            with torch.no_grad():
                out: Params = map_tasks(fn, (0, 0), m.use_vmap)(stacked, batch)
            return out

        return reptile_fn

    def pg_fn(stacked: Params, batch: Any, step: int) -> Params:
        decay = m.inner_lr_decay**step
        if algorithm == "metasgd" and metasgd_lrs is not None and ev.inner_lr is None:
            lrs = metasgd_lrs[min(step, len(metasgd_lrs) - 1)]
            lr: float | Params = {k: v.detach() * decay for k, v in lrs.items()}
        else:
            lr = alpha * decay
        return adapt_step(pg, stacked, batch, lr, prefix, m.use_vmap)

    return pg_fn


def evaluate_tasks(
    env: TaskEnv,
    policy: Policy,
    init: Params,
    buffers: Buffers,
    adapt_fn: AdaptFn,
    tasks: Sequence[Task],
    config: RunConfig,
    method: str,
    seed: int = 0,
    adapted_out: dict[str, Params] | None = None,
) -> list[HeldoutRecord]:
    """Records (one per task) with `return_by_step` of length adaptation_steps + 1.

    `init` is each task's initialisation stacked [K, ...] (its family's meta-policy);
    `adapt_fn` adapts the whole stack. `adapted_out`, if given, receives the final adapted
    params under the method's name (stacked [K, ...])."""
    ev, m = config.eval, config.meta
    generator = torch.Generator().manual_seed(seed)
    stacked = {k: v.detach() for k, v in init.items()}
    returns: list[np.ndarray] = []
    steps = np.zeros(len(tasks), dtype=np.int64)
    start = time.perf_counter()
    for s in range(ev.adaptation_steps + 1):
        rolls = collect_per_task(
            env, policy, stacked, buffers, generator, tasks, ev.episodes_per_step
        )
        returns.append(mean_returns(rolls))
        steps += np.array([r.env_steps for r in rolls])
        if s < ev.adaptation_steps:
            batch = rollouts_to_tasks(rolls, m.gamma, m.gae_lambda)
            stacked = adapt_fn(stacked, batch, s)
    if adapted_out is not None:
        adapted_out[method] = stacked
    return _records(tasks, method, returns, steps, start)


def evaluate_search(
    env: TaskEnv,
    policy: Policy,
    init: Params,
    buffers: Buffers,
    probes: torch.Tensor,
    pools: Sequence[torch.Tensor],
    tasks: Sequence[Task],
    config: RunConfig,
    method: str,
    seed: int = 0,
    adapted_out: dict[str, Params] | None = None,
) -> list[HeldoutRecord]:
    """`evaluate_tasks` for strategy search: `probes` [K, P, C] are each task's hypotheses,
    `pools` each task's family training codes (to refine from).
    Step 0 (the support step) runs one episode per probe, then `meta.search_finalists`
    episodes' worth more for the best few (successive halving). The first and the last
    adaptation step act with the best probe so far; the steps between split their episodes
    between it and `meta.search_refine` new hypotheses around it (`search.refinements`),
    which the last step can then pick. Every step spends `eval.episodes_per_step` episodes
    per task at most. With `meta.search_identify_body`, in the families with a continuous
    parameter (`identifies_body`), the body numbers of every hypothesis are replaced after
    the support step by the body identified from its episodes (`meta.body`)."""
    generator = torch.Generator().manual_seed(seed)
    k, p = probes.shape[:2]
    search = ProbeSearch.start(probes)
    start = time.perf_counter()
    steps = np.zeros(k, dtype=np.int64)
    support_rolls: list[list[TaskRollout]] = [[] for _ in tasks]
    in_support = True  # the support step's rollouts are kept, for `_identified_bodies`

    def run(arms: np.ndarray, episodes: int) -> np.ndarray:
        """Each task's probes `arms` [K, n] for `episodes` episodes each, recorded; [K, n, E]
        returns (task k is listed n times, entry (k, j) acting with probe arms[k, j])."""
        n = arms.shape[1]
        params = {name: v.repeat_interleave(n, 0) for name, v in init.items()}
        params[CONTEXT] = search.contexts(arms).reshape(k * n, -1)
        repeated = [t for t in tasks for _ in range(n)]
        rolls = collect_per_task(env, policy, params, buffers, generator, repeated, episodes)
        out = np.stack([r.episode_return for r in rolls]).reshape(k, n, episodes)
        search.record(arms, out)
        if in_support:
            for i, r in enumerate(rolls):
                support_rolls[i // n].append(r)
        steps[:] += np.array([r.env_steps for r in rolls]).reshape(k, n).sum(1)
        return out

    finalists = config.meta.search_finalists
    per_finalist = (config.eval.episodes_per_step - p) // finalists
    support = [run(np.tile(np.arange(p), (k, 1)), 1).reshape(k, -1)]
    if per_finalist > 0:
        support.append(run(search.best(finalists), per_finalist).reshape(k, -1))
    returns = [np.concatenate(support, axis=1).mean(1)]
    pools = _identified_bodies(search, pools, support_rolls, tasks, config)
    in_support, support_rolls = False, []
    stacked = init
    last = config.eval.adaptation_steps
    for step in range(1, last + 1):
        arm = search.best(1)
        stacked = {**init, CONTEXT: search.contexts(arm)[:, 0]}
        if config.meta.search_refine and 1 < step < last:
            arms = np.concatenate([arm, _refine(search, arm, pools, tasks, config)], axis=1)
            each = config.eval.episodes_per_step // arms.shape[1]
            returns.append(run(arms, each).reshape(k, -1).mean(1))
        else:
            returns.append(run(arm, config.eval.episodes_per_step)[:, 0].mean(1))
    if adapted_out is not None:
        adapted_out[method] = stacked
    return _records(tasks, method, returns, steps, start)


def _refine(
    search: ProbeSearch,
    arm: np.ndarray,
    pools: Sequence[torch.Tensor],
    tasks: Sequence[Task],
    config: RunConfig,
) -> np.ndarray:
    """Add `meta.search_refine` hypotheses around each task's best probe `arm` [K, 1] (from
    its share of the pool: N / P codes); returns their arms [K, R]."""
    centre = search.contexts(arm)[:, 0]
    n, p = config.meta.search_refine, config.meta.search_probes
    new = [
        refinements(pool, c, n, len(pool) // p, choice_dims(task.family))
        for pool, c, task in zip(pools, centre, tasks, strict=True)
    ]
    return search.extend(torch.stack(new))


def _records(
    tasks: Sequence[Task],
    method: str,
    returns: list[np.ndarray],
    steps: np.ndarray,
    start: float,
) -> list[HeldoutRecord]:
    """One record per task from the per-step mean returns ([K] each, steps 0..S), the env
    steps spent per task and the evaluation's start time (wall seconds are shared evenly)."""
    wall = (time.perf_counter() - start) / max(len(tasks), 1)
    by_task = np.stack(returns, axis=1)  # [K, S+1]
    return [
        make_record(task, method, by_task[i].tolist(), int(steps[i]), wall)
        for i, task in enumerate(tasks)
    ]


def _identified_bodies(
    search: ProbeSearch,
    pools: Sequence[torch.Tensor],
    support_rolls: Sequence[Sequence[TaskRollout]],
    tasks: Sequence[Task],
    config: RunConfig,
) -> list[torch.Tensor]:
    """Give the hypotheses (and the refinement pool) of each task whose family
    `identifies_body` the body its support episodes showed; returns the pools."""
    which = [identifies_body(config, t.family) for t in tasks]
    if not any(which):
        return list(pools)
    codes = [
        body_code(identify_body(rolls))
        if known
        else np.zeros(len(contract.BODY_PARAMS), np.float32)
        for rolls, known in zip(support_rolls, which, strict=True)
    ]
    bodies = torch.from_numpy(np.stack(codes))
    search.set_body(bodies, torch.tensor(which))
    return [
        with_body(pool, body) if known else pool
        for pool, body, known in zip(pools, bodies, which, strict=True)
    ]


def identifies_body(config: RunConfig, family: str) -> bool:
    """Does the search identify this family's body (`meta.search_identify_body`)? Only a
    family with a continuous parameter: its probes are better spent on finer values of it.
    A family of discrete choices only has probes to spare, and they vary the body instead."""
    params = contract.FAMILY_BY_NAME[family].params
    return config.meta.search_identify_body and any(not p.integer for p in params)


def search_hypotheses(
    config: RunConfig, tasks: Sequence[Task]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Each task's probes [K, P, C], the k-centre cover of its family's training-task codes
    with P = `meta.search_probes`, and each task's pool to refine from (its family's
    training codes [N_f, C]). Deterministic: the training tasks follow the seed."""
    by_family: dict[str, list[Task]] = {}
    for t in config.task_distribution().train_tasks():
        by_family.setdefault(t.family, []).append(t)
    p = config.meta.search_probes
    covers, pools = {}, {}
    for family in sorted({t.family for t in tasks}):
        if family not in by_family:
            raise ValueError(
                f"search: no training tasks of family {family!r} to draw hypotheses from; "
                "strategy search adapts only to families it was trained on"
            )
        pools[family] = task_contexts(by_family[family])
        if identifies_body(config, family):  # one body guess until the episodes show it
            pools[family] = with_body(pools[family], torch.zeros(()))
        covers[family] = cover(pools[family], p)
        if len(covers[family]) < p:
            raise ValueError(
                f"search: family {family!r} has {len(covers[family])} training tasks, fewer "
                f"than meta.search_probes ({p}); raise tasks.n_train or lower "
                "meta.search_probes"
            )
    return torch.stack([covers[t.family] for t in tasks]), [pools[t.family] for t in tasks]


def grouped_adapt_fn(fns: dict[str, AdaptFn], keys: Sequence[str]) -> AdaptFn:
    """One AdaptFn over a mixed stack: task i adapts with `fns[keys[i]]` (per-family
    meta-policies have their own adaptation rule, e.g. Meta-SGD's learned step sizes)."""
    groups = task_groups(list(keys))

    def fn(stacked: Params, batch: Any, step: int) -> Params:
        parts = {
            key: fns[key](take_tasks(stacked, idx), take_tasks(batch, idx), step)
            for key, idx in groups.items()
        }
        return scatter_tasks(parts, groups, len(keys))

    return fn


def evaluate_checkpoint(
    algorithm: str,
    config: RunConfig,
    env: TaskEnv,
    run_dir: Path,
    tasks: Sequence[Task],
    adapted_out: dict[str, Params] | None = None,
) -> list[HeldoutRecord]:
    """Load `checkpoints/<algorithm>.pt` and evaluate it on `tasks` (see `evaluate_tasks`)."""
    from avatar_meta.training.checkpoints import checkpoint_path, load_checkpoint

    ck = load_checkpoint(checkpoint_path(run_dir, algorithm))
    return evaluate_loaded(
        ck, algorithm, algorithm, config, env, tasks, config.env.seed + 1000, adapted_out
    )


def evaluate_loaded(
    ck: dict[str, Any],
    algorithm: str,
    method: str,
    config: RunConfig,
    env: TaskEnv,
    tasks: Sequence[Task],
    seed: int,
    adapted_out: dict[str, Params] | None = None,
) -> list[HeldoutRecord]:
    """Evaluate a loaded checkpoint of `algorithm` on `tasks`; records carry `method`."""
    from avatar_meta.training.checkpoints import policy_key

    policy = Policy(config.policy_spec())
    by_key: dict[str, Params] = ck["params_by_key"]
    lrs_by_key = ck.get("metasgd_lrs_by_key") or {}
    keys = [policy_key(config, t.family) for t in tasks]
    missing = sorted(set(keys) - set(by_key))
    if missing:
        raise ValueError(
            f"checkpoint of {algorithm} has no meta-policy for {missing}; it was trained on "
            f"{sorted(by_key)}"
        )
    init = {n: torch.stack([by_key[k][n] for k in keys]) for n in by_key[keys[0]]}
    if algorithm == "search":
        probes, pools = search_hypotheses(config, tasks)
        search_args = (probes, pools, tasks, config, method, seed, adapted_out)
        return evaluate_search(env, policy, init, ck["buffers"], *search_args)
    fns = {
        key: make_adapt_fn(algorithm, config, policy, ck["buffers"], lrs_by_key.get(key))
        for key in set(keys)
    }
    return evaluate_tasks(
        env,
        policy,
        init,
        ck["buffers"],
        grouped_adapt_fn(fns, keys),
        tasks,
        config,
        method,
        seed=seed,
        adapted_out=adapted_out,
    )


def stability_records(
    algorithm: str, config: RunConfig, env: TaskEnv, run_dir: Path, tasks: Sequence[Task]
) -> list[HeldoutRecord]:
    """The stability check's evidence: the final checkpoint (method `<algorithm>`) and the
    best one (`<algorithm>@best`, `checkpoints/<algorithm>.best.pt`) each adapted once on
    every task, `eval.stability_repeats` times, with the same seeds for both, so
    `report.metrics.paired_checkpoint_scores` can pair them. Empty when the check is off or
    the final checkpoint is the best one (the gap is then 0 by construction)."""
    from avatar_meta.report.metrics import BEST_SUFFIX
    from avatar_meta.training.checkpoints import (
        best_checkpoint_path,
        checkpoint_path,
        load_checkpoint,
    )

    best_path = best_checkpoint_path(run_dir, algorithm)
    repeats = config.eval.stability_repeats
    if repeats == 0 or not best_path.exists():
        return []
    final, best = load_checkpoint(checkpoint_path(run_dir, algorithm)), load_checkpoint(best_path)
    if best["iteration"] == final["iteration"]:
        return []
    one_step = replace(config, eval=replace(config.eval, adaptation_steps=1))
    repeated = list(tasks) * repeats
    seed = config.env.seed + 2000
    return [
        *evaluate_loaded(final, algorithm, algorithm, one_step, env, repeated, seed),
        *evaluate_loaded(best, algorithm, algorithm + BEST_SUFFIX, one_step, env, repeated, seed),
    ]


def summarise(records: Sequence[HeldoutRecord]) -> dict[str, dict[str, list[float]]]:
    """method -> family (and "all") -> mean return_by_step; for logs and quick checks."""
    out: dict[str, dict[str, list[float]]] = {}
    for method in sorted({r["method"] for r in records}):
        mine = [r for r in records if r["method"] == method]
        fams = sorted({r["family"] for r in mine})
        out[method] = {
            f: np.mean([r["return_by_step"] for r in mine if r["family"] == f], 0).tolist()
            for f in fams
        }
        out[method]["all"] = np.mean([r["return_by_step"] for r in mine], 0).tolist()
    return out
