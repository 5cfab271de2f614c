"""The oracle's check against the scripted controller (design section 6).

A PPO oracle can collapse (log-std, local optimum) and then inflate every normalised score.
So per family its gain over random is compared with the gain of `world.scripted`'s controller,
which reads the true hidden parameters; below `min_ratio` the family's normalisation
reference becomes max(oracle, scripted) per task, and the failure is reported.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from avatar_meta.envs.inprocess import wire_spec
from avatar_meta.tasks import Task
from avatar_meta.world import scripted

logger = logging.getLogger("avatar_meta.training.baselines")
ORACLE_REFERENCE = "ppo_oracle"
FALLBACK_REFERENCE = "max(ppo_oracle, scripted)"


def scripted_returns(tasks: Sequence[Task], episodes: int, seed: int = 0) -> list[float]:
    """Mean return per task of the scripted controller that reads the hidden parameters (run
    on the in-process plaza: the same simulation the built-in world serves)."""
    result = scripted.evaluate(
        scripted.scripted_actions, [wire_spec(t) for t in tasks], episodes=episodes, seed=seed
    )
    return [float(x) for x in result.returns]


def validate_oracle(
    tasks: Sequence[Task],
    oracle: Sequence[float],
    script: Sequence[float],
    random: Sequence[float],
    min_ratio: float,
) -> dict[str, dict[str, Any]]:
    """Per family: gain over random of the oracle and of the scripted controller (means over
    the family's tasks), their ratio, and whether the oracle passes (ratio >= min_ratio)."""
    out: dict[str, dict[str, Any]] = {}
    for fam in sorted({t.family for t in tasks}):
        idx = [i for i, t in enumerate(tasks) if t.family == fam]
        o, s, r = (float(np.mean([xs[i] for i in idx])) for xs in (oracle, script, random))
        ratio = (o - r) / (s - r) if s - r > 1e-8 else float("nan")
        passed = bool(ratio >= min_ratio)
        out[fam] = {
            "oracle_return": o,
            "scripted_return": s,
            "random_return": r,
            "ratio": ratio,
            "passed": passed,
            "reference": ORACLE_REFERENCE if passed else FALLBACK_REFERENCE,
        }
        if not passed:
            logger.warning(
                "oracle validation failed on %s: %.3f of the scripted gain (< %.2f); "
                "normalising by max(oracle, scripted)",
                fam,
                ratio,
                min_ratio,
            )
    return out


def oracle_references(
    tasks: Sequence[Task],
    oracle: Sequence[float],
    script: Sequence[float],
    validation: dict[str, dict[str, Any]],
) -> list[float]:
    """The normalisation reference per task: the oracle, or max(oracle, scripted) where the
    oracle failed its family's validation."""
    return [
        o if validation[t.family]["passed"] else max(o, s)
        for t, o, s in zip(tasks, oracle, script, strict=True)
    ]
