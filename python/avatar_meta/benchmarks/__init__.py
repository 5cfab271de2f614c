"""Benchmark suites behind `avatar-meta bench SUITE --out FILE.json`.

Every suite writes `{"suite": ..., "machine": {...}, "results": {...}}` and every figure in
`results` carries the baseline it was compared with, measured in the same run, and the ratio.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

SUITES = {
    "protocol": "avatar_meta.benchmarks.protocol",
    "adaptation": "avatar_meta.benchmarks.adaptation",
    "algorithms": "avatar_meta.benchmarks.algorithms",
    "training": "avatar_meta.benchmarks.training",
}


def machine_info() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, Python and the packages on the hot paths."""
    versions: dict[str, str | None] = {}
    for name in ("avatar-meta", "mlagents-envs", "protobuf", "grpcio", "numpy", "torch"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_result(path: str | Path, suite: str, results: dict[str, Any]) -> dict[str, Any]:
    """Write the suite's JSON atomically and return it."""
    doc = {"suite": suite, "machine": machine_info(), "results": results}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return doc


def run_suite(suite: str, out: str, quick: bool = False) -> int:
    if suite not in SUITES:
        raise SystemExit(f"unknown benchmark suite {suite!r}; choose from {', '.join(SUITES)}")
    module = importlib.import_module(SUITES[suite])
    results = module.run(quick=quick)
    write_result(out, suite, results)
    print(f"wrote {out}")
    return 0
