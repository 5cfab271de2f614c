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

META_METHODS = ("maml", "fomaml", "reptile", "metasgd", "encoder", "search")
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
    entries: Sequence[Mapping[str, Any]],
    curve: Sequence[Mapping[str, Any]] | None,
    checkpoint_scores: Sequence[tuple[float, float]] | None = None,
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
        out["stability"] = stability(curve, checkpoint_scores)
    return out


STABILITY_WINDOW = 5
STABILITY_TOLERANCE = 0.03
BEST_SUFFIX = "@best"
"""Checkpoint records of the best training window carry method `<algorithm>@best`."""


def training_windows(curve: Sequence[Mapping[str, Any]]) -> tuple[str, int, np.ndarray] | None:
    """The training curve's normalised score after adaptation (`post_score`, or `pre_score`
    for Reptile), averaged over STABILITY_WINDOW iterations because one meta-batch is a noisy
    sample: (score key, window w, smooth) where smooth[j] averages scored iterations
    j+1 .. j+w. None when the curve carries no scores."""
    key = "post_score" if any("post_score" in e for e in curve) else "pre_score"
    scores = np.array([float(e[key]) for e in curve if key in e], dtype=np.float64)
    if len(scores) == 0:
        return None
    w = min(STABILITY_WINDOW, len(scores))
    return key, w, np.convolve(scores, np.ones(w) / w, mode="valid")


def is_best_window(curve: Sequence[Mapping[str, Any]]) -> bool:
    """Does the curve's latest window score at least as well as every earlier one? (The
    meta-loop keeps that iteration's checkpoint as the best.)"""
    windows = training_windows(curve)
    return windows is not None and bool(windows[2][-1] >= windows[2].max())


def stability(
    curve: Sequence[Mapping[str, Any]],
    checkpoint_scores: Sequence[tuple[float, float]] | None = None,
) -> dict[str, Any] | None:
    """Is the final meta-policy as good as the best one seen during training?

    The best checkpoint is the one that ended the best training window (`training_windows`).
    With `checkpoint_scores` [(final, best)] (one-step normalised scores of both checkpoints
    on the same held-out task and seed, `evaluate.stability_records`) the verdict compares
    their held-out means, with the paired standard error of the gap; without them it falls
    back to the training windows (`final` = the last window). `within_tolerance`: final >=
    best - STABILITY_TOLERANCE. None when the curve carries no scores."""
    windows = training_windows(curve)
    if windows is None:
        return None
    key, w, smooth = windows
    train_best, train_final = float(smooth.max()), float(smooth[-1])
    out: dict[str, Any] = {
        "score": key,
        "window": w,
        "best_at_iteration": int(np.argmax(smooth)) + w,
        "final_iteration": len(curve),
        "training_best": train_best,
        "training_final": train_final,
        "tolerance": STABILITY_TOLERANCE,
    }
    pairs = np.array(checkpoint_scores or [], dtype=np.float64).reshape(-1, 2)
    if len(pairs):
        final, best = pairs.mean(axis=0)
        diff = pairs[:, 1] - pairs[:, 0]
        stderr = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else None
        out.update(measure="heldout", n_pairs=len(pairs), gap_stderr=stderr)
    else:
        final, best = train_final, train_best
        out["measure"] = "training_window"
    out.update(
        final=float(final),
        best=float(best),
        gap=float(best - final),
        within_tolerance=bool(best - final <= STABILITY_TOLERANCE),
    )
    return out


def summary(
    entries: Sequence[Mapping[str, Any]],
    curves: Curves | None = None,
    checkpoint_scores: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> dict[str, Any]:
    """`methods.<m>` and `families.<family>.<m>` summaries, plus the best meta-learner.
    `checkpoint_scores`: method -> paired (final, best) held-out scores for `stability`."""
    curves = curves or {}
    checkpoint_scores = checkpoint_scores or {}
    by_method: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    by_family: dict[str, dict[str, list[Mapping[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for e in entries:
        by_method[e["method"]].append(e)
        by_family[e["family"]][e["method"]].append(e)
    methods = list(REQUIRED_METHODS) + sorted(set(by_method) - set(REQUIRED_METHODS))
    return {
        "methods": {
            m: _summarise(by_method.get(m, []), curves.get(m), checkpoint_scores.get(m))
            for m in methods
        },
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


def paired_checkpoint_scores(
    checkpoint_records: Sequence[Record], records: Sequence[Record]
) -> dict[str, list[tuple[float, float]]]:
    """method -> [(final, best)] one-step normalised scores from stability records: the k-th
    `<m>` record of a task pairs with the k-th `<m>@best` record of that task (same seed).
    References (random, oracle) come from `records`; pairs without them are dropped."""
    refs = _references(records)
    queues: dict[tuple[str, str], list[float | None]] = defaultdict(list)
    for r in checkpoint_records:
        lo, hi = refs.get(r["task_id"], (None, None))
        queues[(r["method"], r["task_id"])].append(
            score(_step(r["return_by_step"], ONE_STEP), lo, hi)
        )
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (method, task_id), finals in queues.items():
        if method.endswith(BEST_SUFFIX):
            continue
        bests = queues.get((method + BEST_SUFFIX, task_id), [])
        out[method] += [
            (f, b) for f, b in zip(finals, bests, strict=False) if f is not None and b is not None
        ]
    return dict(out)


def build_metrics(
    records: Sequence[Record],
    training_curves: Curves | None = None,
    versions: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
    checkpoint_records: Sequence[Record] | None = None,
) -> dict[str, Any]:
    """The whole metrics.json document. `checkpoint_records` (final and best checkpoints
    adapted on the held-out tasks, `training.evaluate.stability_records`) feed each
    meta-learner's `stability`; they are not held-out entries."""
    full = with_pre_adapt(records)
    entries = heldout_entries(full)
    pairs = paired_checkpoint_scores(checkpoint_records or [], records)
    out: dict[str, Any] = {
        "heldout": entries,
        "summary": summary(entries, training_curves, pairs),
        "oracle_validation": oracle_validation(full),
        "versions": versions_now(versions),
    }
    out.update(extra or {})
    return out
