"""The held-out evaluation record shared by meta-learners, baselines and the report.

One record = one (held-out task, method) pair. Meta-learners (`training.evaluate`) and the
baselines (`training.baselines`) both produce lists of these; `report.write_report` consumes
them. Keep the keys exactly as below: they are the format of `metrics.json["heldout"]`.

- task: `Task.to_dict()` of the held-out task.
- task_id, family: copied out of `task` for easy grouping.
- method: "maml", "fomaml", "reptile", "metasgd", "encoder", "search", "pre_adapt",
  "ppo_scratch", "multitask_finetune", "oracle", ...
- return_by_step: mean episode return of the evaluation episodes before adaptation (index 0)
  and after 1, 2, 3 adaptation steps.
- env_steps: environment steps (agent decisions) this method spent on this task
  (adaptation + evaluation episodes).
- wall_s: wall-clock seconds attributed to this task (batched work is split evenly).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypedDict

from avatar_meta.tasks import Task


class HeldoutRecord(TypedDict):
    """One (held-out task, method) result; see the module docstring for each key."""

    task: dict[str, Any]
    task_id: str
    family: str
    method: str
    return_by_step: list[float]
    env_steps: int
    wall_s: float


RECORD_KEYS: tuple[str, ...] = (
    "task",
    "task_id",
    "family",
    "method",
    "return_by_step",
    "env_steps",
    "wall_s",
)


def make_record(
    task: Task,
    method: str,
    return_by_step: Sequence[float],
    env_steps: int,
    wall_s: float,
) -> HeldoutRecord:
    """Build a record from a Task (floats made plain Python so it dumps to JSON)."""
    return HeldoutRecord(
        task=task.to_dict(),
        task_id=task.task_id,
        family=task.family,
        method=str(method),
        return_by_step=[float(r) for r in return_by_step],
        env_steps=int(env_steps),
        wall_s=float(wall_s),
    )


def validate_record(record: dict[str, Any]) -> HeldoutRecord:
    """Check keys and types; raises ValueError naming the bad key."""
    missing = [k for k in RECORD_KEYS if k not in record]
    extra = [k for k in record if k not in RECORD_KEYS]
    if missing or extra:
        raise ValueError(f"held-out record: missing keys {missing}, unknown keys {extra}")
    rbs = record["return_by_step"]
    if not isinstance(rbs, list) or not all(isinstance(r, (int, float)) for r in rbs):
        raise ValueError("held-out record: return_by_step must be a list of floats")
    if not all(math.isfinite(float(r)) for r in rbs):
        raise ValueError(f"held-out record {record['task_id']}/{record['method']}: non-finite")
    return HeldoutRecord(**record)  # type: ignore[typeddict-item]


def save_records(records: Iterable[HeldoutRecord], path: str | Path) -> None:
    """Write records as a JSON list."""
    Path(path).write_text(json.dumps(list(records), indent=1))


def load_records(path: str | Path) -> list[HeldoutRecord]:
    """Read a JSON list written by `save_records` (validated)."""
    return [validate_record(r) for r in json.loads(Path(path).read_text())]
