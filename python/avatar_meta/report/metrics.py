"""metrics.json from held-out records: per-(task, method) entries, summaries overall and per
family, and versions.

Normalised score of a return r on a task: (r - random) / (oracle - random), with `random` the
task's `random` record and `oracle` its `oracle` record (the validated normalisation
reference, see training/baselines.py). A method's score "after one step" reads
`return_by_step[1]`; methods with a single number (oracle, random, scripted) repeat it.

`pre_adapt` is the best meta-learner's return before adaptation: when the records hold no
`pre_adapt` entries they are derived from the meta-learner (maml, fomaml, reptile, metasgd)
with the best mean normalised score after one step.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

META_METHODS = ("maml", "fomaml", "reptile", "metasgd")
REQUIRED_METHODS = (*META_METHODS, "pre_adapt", "ppo_scratch", "multitask_finetune", "oracle")
"""Methods the summary always lists (null scores where a method did not run)."""
REFERENCE_METHODS = ("random", "oracle")
PROTOCOL_VERSION = "1.5.0"
ONE_STEP = 1
"""Index of return_by_step that `normalised_score` (without `_by_step`) reads."""

Record = Mapping[str, Any]
Curves = Mapping[str, Sequence[Mapping[str, Any]]]


def score(ret: float, random_ret: float | None, oracle_ret: float | None) -> float | None:
    """(ret - random) / (oracle - random); None when a reference is missing or degenerate."""
    if random_ret is None or oracle_ret is None or oracle_ret - random_ret <= 1e-8:
        return None
    return (ret - random_ret) / (oracle_ret - random_ret)


def versions_now(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """package, mlagents, torch and protocol versions of this process (extra overrides)."""
    out = {
        "package": _version("avatar-meta"),
        "mlagents": _version("mlagents"),
        "torch": _version("torch"),
        "protocol": PROTOCOL_VERSION,
    }
    out.update(extra or {})
    return out


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        if dist == "avatar-meta":
            from avatar_meta import __version__

            return __version__
        return "not installed"


# ---------------------------------------------------------------------------------------------
# records -> tables
# ---------------------------------------------------------------------------------------------
def _by_task_method(records: Sequence[Record]) -> dict[tuple[str, str], Record]:
    return {(r["task_id"], r["method"]): r for r in records}


def _step(rbs: Sequence[float], s: int) -> float:
    return float(rbs[min(s, len(rbs) - 1)])


def _scores_by_step(rec: Record, lo: float | None, hi: float | None) -> list[float | None]:
    return [score(float(r), lo, hi) for r in rec["return_by_step"]]


def best_meta_learner(records: Sequence[Record]) -> str | None:
    """The meta-learner with the best mean normalised score after one step (None if none)."""
    refs = _references(records)
    best, best_score = None, -math.inf
    for method in META_METHODS:
        scores = [
            s
            for r in records
            if r["method"] == method
            for s in [
                score(_step(r["return_by_step"], ONE_STEP), *refs.get(r["task_id"], (None, None)))
            ]
            if s is not None
        ]
        if scores and float(np.mean(scores)) > best_score:
            best, best_score = method, float(np.mean(scores))
    return best


def _references(records: Sequence[Record]) -> dict[str, tuple[float | None, float | None]]:
    """task_id -> (random return, oracle reference return)."""
    table = _by_task_method(records)
    out: dict[str, tuple[float | None, float | None]] = {}
    for task_id in {r["task_id"] for r in records}:
        lo, hi = (table.get((task_id, m)) for m in REFERENCE_METHODS)
        out[task_id] = (
            None if lo is None else _step(lo["return_by_step"], 0),
            None if hi is None else _step(hi["return_by_step"], 0),
        )
    return out


def with_pre_adapt(records: Sequence[Record]) -> list[dict[str, Any]]:
    """The records plus `pre_adapt` ones derived from the best meta-learner (if missing)."""
    out = [dict(r) for r in records]
    if any(r["method"] == "pre_adapt" for r in records):
        return out
    best = best_meta_learner(records)
    if best is None:
        return out
    for r in records:
        if r["method"] == best:
            r0 = float(r["return_by_step"][0])
            out.append(
                {
                    **r,
                    "method": "pre_adapt",
                    "return_by_step": [r0] * len(r["return_by_step"]),
                    "env_steps": 0,
                    "wall_s": 0.0,
                }
            )
    return out


def heldout_entries(records: Sequence[Record]) -> list[dict[str, Any]]:
    """One entry per (task, method) with returns, references and normalised scores."""
    refs = _references(records)
    table = _by_task_method(records)
    methods = sorted({r["method"] for r in records})
    entries = []
    for r in records:
        lo, hi = refs[r["task_id"]]
        rbs = [float(x) for x in r["return_by_step"]]
        by_step = _scores_by_step(r, lo, hi)
        entries.append(
            {
                "task": r["task"],
                "task_id": r["task_id"],
                "family": r["family"],
                "params": dict(r["task"].get("params", {})),
                "method": r["method"],
                "return_by_step": rbs,
                "pre_adapt_return": rbs[0],
                "post_adapt_return": rbs[1:],
                "baseline_returns": {
                    m: _step(table[(r["task_id"], m)]["return_by_step"], ONE_STEP)
                    for m in methods
                    if (r["task_id"], m) in table and m not in META_METHODS
                },
                "random_return": lo,
                "oracle_return": hi,
                "normalised_score": by_step[min(ONE_STEP, len(by_step) - 1)],
                "normalised_score_by_step": by_step,
                "env_steps": int(r["env_steps"]),
                "wall_s": float(r["wall_s"]),
            }
        )
    return entries


# ---------------------------------------------------------------------------------------------
# summaries
# ---------------------------------------------------------------------------------------------
def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(vals)) if vals else None


def _summarise(
    entries: Sequence[Mapping[str, Any]], curve: Sequence[Mapping[str, Any]] | None
) -> dict[str, Any]:
    """Mean scores and returns of one method's entries (null when it has none)."""
    n_steps = max((len(e["normalised_score_by_step"]) for e in entries), default=0)
    by_step = [
        _mean(
            [
                e["normalised_score_by_step"][min(s, len(e["normalised_score_by_step"]) - 1)]
                for e in entries
            ]
        )
        for s in range(n_steps)
    ]
    scores = [e["normalised_score"] for e in entries]
    valid = [s for s in scores if s is not None]
    out: dict[str, Any] = {
        "normalised_score": _mean(scores),
        "normalised_score_stderr": float(np.std(valid) / math.sqrt(len(valid)))
        if len(valid) > 1
        else None,
        "normalised_score_by_step": by_step,
        "return_by_step": [
            _mean([e["return_by_step"][min(s, len(e["return_by_step"]) - 1)] for e in entries])
            for s in range(n_steps)
        ],
        "n_tasks": len(entries),
        "env_steps": int(sum(e["env_steps"] for e in entries)),
        "wall_s": float(sum(e["wall_s"] for e in entries)),
    }
    if curve:
        out["training_env_steps"] = int(curve[-1].get("env_steps", 0))
        out["training_wall_s"] = float(curve[-1].get("wall_s", 0.0))
        out["stability"] = stability(curve)
    return out


STABILITY_WINDOW = 5
STABILITY_TOLERANCE = 0.03


def stability(curve: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Is the final meta-policy as good as the best one seen during training?

    Uses the training curve's normalised score after adaptation (`post_score`, or `pre_score`
    for Reptile), averaged over STABILITY_WINDOW iterations because one meta-batch is a noisy
    sample: `final` = the last window, `best` = the best window, and `within_tolerance` says
    whether final >= best - STABILITY_TOLERANCE. None when the curve carries no scores."""
    key = "post_score" if any("post_score" in e for e in curve) else "pre_score"
    scores = np.array([float(e[key]) for e in curve if key in e], dtype=np.float64)
    if len(scores) == 0:
        return None
    w = min(STABILITY_WINDOW, len(scores))
    smooth = np.convolve(scores, np.ones(w) / w, mode="valid")
    best, final = float(smooth.max()), float(smooth[-1])
    return {
        "score": key,
        "window": w,
        "best": best,
        "best_at_iteration": int(np.argmax(smooth)) + w,
        "final": final,
        "gap": best - final,
        "tolerance": STABILITY_TOLERANCE,
        "within_tolerance": bool(best - final <= STABILITY_TOLERANCE),
    }


def summary(entries: Sequence[Mapping[str, Any]], curves: Curves | None = None) -> dict[str, Any]:
    """`methods.<m>` and `families.<family>.<m>` summaries, plus the best meta-learner."""
    curves = curves or {}
    by_method: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    by_family: dict[str, dict[str, list[Mapping[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for e in entries:
        by_method[e["method"]].append(e)
        by_family[e["family"]][e["method"]].append(e)
    methods = list(REQUIRED_METHODS) + sorted(set(by_method) - set(REQUIRED_METHODS))
    return {
        "methods": {m: _summarise(by_method.get(m, []), curves.get(m)) for m in methods},
        "families": {
            fam: {m: _summarise(fm.get(m, []), None) for m in methods}
            for fam, fm in sorted(by_family.items())
        },
        "best_meta_learner": _best_from_entries(by_method),
        "normalisation": "(return - random) / (oracle - random), per task",
    }


def _best_from_entries(by_method: Mapping[str, Sequence[Mapping[str, Any]]]) -> str | None:
    scored = {m: _mean([e["normalised_score"] for e in by_method.get(m, [])]) for m in META_METHODS}
    valid = {m: s for m, s in scored.items() if s is not None}
    return max(valid, key=lambda m: valid[m]) if valid else None


def oracle_validation(records: Sequence[Record], min_ratio: float = 0.98) -> dict[str, Any]:
    """Per family, from `oracle_ppo`, `scripted` and `random` records: the PPO oracle's gain
    over random as a fraction of the scripted controller's, and which reference was used."""
    table = _by_task_method(records)
    out: dict[str, Any] = {}
    for fam in sorted({r["family"] for r in records}):
        ids = sorted({r["task_id"] for r in records if r["family"] == fam})
        rows = [
            [
                _step(table[(i, m)]["return_by_step"], 0)
                for m in ("oracle_ppo", "scripted", "random")
            ]
            for i in ids
            if all((i, m) in table for m in ("oracle_ppo", "scripted", "random"))
        ]
        if not rows:
            continue
        o, s, r = (float(x) for x in np.mean(rows, axis=0))
        ratio = (o - r) / (s - r) if s - r > 1e-8 else None
        passed = ratio is not None and ratio >= min_ratio
        out[fam] = {
            "oracle_return": o,
            "scripted_return": s,
            "random_return": r,
            "ratio": ratio,
            "passed": passed,
            "reference": "ppo_oracle" if passed else "max(ppo_oracle, scripted)",
        }
    return out


def build_metrics(
    records: Sequence[Record],
    training_curves: Curves | None = None,
    versions: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole metrics.json document."""
    full = with_pre_adapt(records)
    entries = heldout_entries(full)
    out: dict[str, Any] = {
        "heldout": entries,
        "summary": summary(entries, training_curves),
        "oracle_validation": oracle_validation(full),
        "versions": versions_now(versions),
    }
    out.update(extra or {})
    return out
