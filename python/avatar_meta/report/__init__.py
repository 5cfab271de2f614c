"""The run report: `metrics.json`, `report.md` and `plots/*.png` in the run folder.

    paths = write_report(run_dir, records, training_curves, config, versions)

`records` are held-out records (training/records.py) of meta-learners and baselines;
`training_curves` maps a method to `[{iteration, env_steps, pre_return, post_return}, ...]`
(optionally `wall_s`). See docs/baselines-and-report.md for the metrics.json schema.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from avatar_meta.report.markdown import render
from avatar_meta.report.metrics import build_metrics
from avatar_meta.report.plots import write_plots

ARTIFACT_PATTERNS = ("*.onnx", "*.weights.bin", "checkpoints")
"""Files in the run folder the report points designers to."""


def config_dict(config: Any) -> dict[str, Any]:
    """A plain dict from a dataclass config, an object with `to_dict`, a mapping or None."""
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return dict(config)


def _json_safe(x: Any) -> Any:
    """NaN/inf become null (strict JSON); tuples become lists; paths strings."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and callable(x.item):  # numpy / torch scalars
        return _json_safe(x.item())
    return x


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_report(
    run_dir: str | Path,
    records: Sequence[Mapping[str, Any]],
    training_curves: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    config: Any = None,
    versions: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
    checkpoint_records: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write metrics.json, plots/*.png and report.md into `run_dir`; returns name -> path.

    `extra` adds top-level keys to metrics.json (e.g. timing breakdowns);
    `checkpoint_records` are the stability check's final-vs-best records.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    curves = training_curves or {}
    metrics = _json_safe(build_metrics(records, curves, versions, extra, checkpoint_records))
    paths: dict[str, Path] = {"metrics": run_dir / "metrics.json"}
    _write_atomic(paths["metrics"], json.dumps(metrics, indent=1))
    plots = write_plots(metrics["summary"], curves, run_dir / "plots")
    artifacts = sorted(p for pattern in ARTIFACT_PATTERNS for p in run_dir.glob(pattern))
    paths["report"] = run_dir / "report.md"
    _write_atomic(paths["report"], render(metrics, plots, run_dir, config_dict(config), artifacts))
    return {**paths, **plots}


__all__ = ["write_report"]
