"""Meta-iteration time of MAML on the contract-v1 policy MLP: vmap over tasks vs a task loop.

    .venv/bin/python bench/meta_vmap.py [--quick] [--out bench/results/meta_vmap.json]

One meta-iteration = the second-order meta-gradient (vanilla-PG inner step on the support
batch, PPO-clip on the query batch) for all tasks, as the trainer runs it. Sizes: 20 tasks x
400 transitions and 40 tasks x 40 transitions (design doc: vmap 1.0-1.2x and 2.6-3.5x
faster). Timings are the median of repeats, with the minimum alongside (the cores may be
shared). Baselines, same run: `loop` = the same functional code with `use_vmap=False`
(torch.func per task); `autograd_loop` = the learn2learn-style object API (per-task
`clone().adapt()` with torch.autograd create_graph, one `.backward()`). speedup = baseline / vmap.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from typing import Any

import torch

from avatar_meta.benchmarks import write_result
from avatar_meta.benchmarks.training import random_tasks, time_meta_grad
from avatar_meta.meta import MAML, MAMLConfig, TaskBatch, leaf_params, policy_losses, task_slice
from avatar_meta.rl import Policy, PolicySpec

SIZES = ((20, 400), (40, 40))


def time_meta_iteration(
    maml: MAML, params: dict[str, torch.Tensor], tasks: TaskBatch, repeats: int
) -> dict[str, float]:
    return time_meta_grad(maml, params, tasks, repeats)


def time_autograd_loop(
    maml: MAML, params: dict[str, torch.Tensor], tasks: TaskBatch, repeats: int
) -> dict[str, float]:
    """The learn2learn-style baseline: per task, `clone -> adapt (autograd, create_graph)
    -> query loss`, then one `.backward()` on the mean (the object API)."""
    theta = leaf_params(params)
    k = tasks.support.obs.shape[0]

    def step() -> None:
        total = torch.zeros(())
        for i in range(k):
            learner = maml.clone(theta).adapt(task_slice(tasks.support, i))
            total = total + maml.outer_loss(learner.params, task_slice(tasks.query, i)) / k
        for v in theta.values():
            v.grad = None
        total.backward()

    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 5), "min_s": round(min(times), 5)}


def run(quick: bool = False, threads: int = 1) -> dict[str, Any]:
    torch.set_num_threads(threads)
    policy = Policy(PolicySpec())
    params, buffers = policy.init(0)
    inner, outer = policy_losses(policy, buffers)
    repeats = 3 if quick else 9
    rows = []
    for adapt_prefix in (None, "actor."):
        for tasks_n, n in SIZES:
            tasks = random_tasks(policy, tasks_n, n)
            cfg = MAMLConfig(inner_steps=1, adapt_prefix=adapt_prefix)
            vm = time_meta_iteration(MAML(inner, outer, cfg), params, tasks, repeats)
            lp = time_meta_iteration(
                MAML(inner, outer, replace(cfg, use_vmap=False)), params, tasks, repeats
            )
            ag = time_autograd_loop(MAML(inner, outer, cfg), params, tasks, repeats)
            rows.append(
                {
                    "tasks": tasks_n,
                    "transitions_per_task": n,
                    "adapted": "all" if adapt_prefix is None else "actor",
                    "vmap": vm,
                    "loop_baseline": lp,
                    "autograd_loop_baseline": ag,
                    "speedup_vs_loop_median": round(lp["median_s"] / vm["median_s"], 2),
                    "speedup_vs_loop_min": round(lp["min_s"] / vm["min_s"], 2),
                    "speedup_vs_autograd_loop_median": round(ag["median_s"] / vm["median_s"], 2),
                    "speedup_vs_autograd_loop_min": round(ag["min_s"] / vm["min_s"], 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return {
        "what": "seconds per MAML meta-gradient (second order, 1 inner PG step, PPO-clip outer)",
        "policy": policy.spec.to_dict(),
        "torch_threads": threads,
        "repeats": repeats,
        "rows": rows,
        "design_doc_speedups": {"20x400": "1.0-1.2x", "40x40": "2.6-3.5x"},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/meta_vmap.json")
    args = ap.parse_args()
    write_result(args.out, "meta_vmap", run(quick=args.quick, threads=args.threads))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
