"""MAML sinusoid regression (Finn et al. 2017): MSE after 0/1/10 fine-tuning steps.

    .venv/bin/python bench/sinusoid.py [--iterations 20000] [--out bench/results/sinusoid.json]

Writes {"suite": "sinusoid", "machine": {...}, "results": {...}}; the results hold MAML, the
jointly pretrained baseline trained in the same run, their ratio and the earlier reference.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch

from avatar_meta.benchmarks import write_result
from avatar_meta.meta.sinusoid import SinusoidConfig, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=SinusoidConfig.iterations)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest here)")
    ap.add_argument("--quick", action="store_true", help="<= 1000 iterations, 200 eval tasks")
    ap.add_argument("--out", default="bench/results/sinusoid.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = replace(SinusoidConfig(), iterations=args.iterations, seed=args.seed)
    results = run(quick=args.quick, cfg=cfg)
    results["torch_threads"] = args.threads
    write_result(args.out, "sinusoid", results)
    print(
        json.dumps({k: results[k] for k in ("iterations", "maml", "pretrained_baseline")}, indent=1)
    )


if __name__ == "__main__":
    main()
