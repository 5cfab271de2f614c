"""Tasks and task distributions: what each area of the world runs.

A task is `(family, params, body)` (design section 5): a scenario family from
`contract.FAMILIES`, its hidden parameters in contract order, and the avatar body
`(top_speed, turn_rate, actuation_noise)`. The policy never sees `params` or `body`; it has to
infer them from reward, which is what makes this meta-learning.

`TaskDistribution` turns a small config (families, seed, sizes, held-out family, body
variation) into two fixed, reproducible pools:

- training tasks, `n_train` spread evenly over the training families;
- held-out tasks, `n_heldout` spread evenly over all listed families, drawn from a separate
  random stream and rejected when they come within `min_gap` of any training task. A whole
  family can be held out (`heldout_family`): it then appears only in the held-out pool.

`sample_train(rng, k)` draws a stratified meta-batch from the training pool (every family
gets `k // F` tasks, the remainder goes to distinct random families).

Tasks round-trip through plain dicts (`to_dict` / `from_dict`), JSON and YAML
(`dump_tasks` / `load_tasks`). `send_tasks` puts one task per area onto a TaskChannel.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from avatar_meta import contract
from avatar_meta.world.types import TaskSpec

ALL_FAMILIES: tuple[str, ...] = tuple(f.name for f in contract.FAMILIES)
_PARAM_DECIMALS = 3
"""Sampled values are rounded to this many decimals so configs and reports stay readable."""
_TRAIN_STREAM, _HELDOUT_STREAM = 0, 1
_MAX_DRAWS_PER_TASK = 200


class TaskError(ValueError):
    """A task or task distribution is invalid; the message names the field and the fix."""


# ---------------------------------------------------------------------------------------------
# Task
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """One scenario instance. Validated on construction (raises `TaskError`).

    task_id: a stable name, e.g. "train-reach_landmark-003"; used in reports and PolicyWeights.
    family: one of `contract.FAMILIES` names.
    params: hidden parameters in contract order (`contract.FAMILY_BY_NAME[family].params`).
    body: (top_speed, turn_rate, actuation_noise) within `contract.BODY_PARAMS` ranges.
    """

    task_id: str
    family: str
    params: tuple[float, ...]
    body: tuple[float, ...] = contract.DEFAULT_BODY

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(float(v) for v in self.params))
        object.__setattr__(self, "body", tuple(float(v) for v in self.body))
        _validate(self)

    @property
    def spec(self) -> TaskSpec:
        """The world's view of this task (already validated, so no clipping happens)."""
        return TaskSpec(self.family, self.params, self.body)

    @property
    def family_index(self) -> int:
        return contract.FAMILY_BY_NAME[self.family].index

    def param_dict(self) -> dict[str, float]:
        names = (p.name for p in contract.FAMILY_BY_NAME[self.family].params)
        return dict(zip(names, self.params, strict=True))

    def body_dict(self) -> dict[str, float]:
        return dict(zip((p.name for p in contract.BODY_PARAMS), self.body, strict=True))

    def to_dict(self) -> dict[str, Any]:
        """Plain, named form for JSON/YAML: params and body as {name: value}."""
        return {
            "task_id": self.task_id,
            "family": self.family,
            "params": self.param_dict(),
            "body": self.body_dict(),
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Task:
        """Inverse of `to_dict`. `params`/`body` may be {name: value} or lists in contract order;
        a missing `body` means the default body, a missing `task_id` a name built from the rest."""
        unknown = set(data) - {"task_id", "family", "params", "body"}
        if unknown:
            raise TaskError(
                f"task: unknown key(s) {sorted(unknown)}; a task has task_id, family, params, body"
            )
        if "family" not in data:
            raise TaskError("task.family is missing; use one of: " + ", ".join(ALL_FAMILIES))
        family = str(data["family"])
        _check_family(family, "task.family")
        spec = contract.FAMILY_BY_NAME[family]
        params = _values_from(data.get("params", {}), spec.params, f"task.params ({family})")
        body = _values_from(
            data.get("body", contract.DEFAULT_BODY), contract.BODY_PARAMS, "task.body"
        )
        task_id = str(data.get("task_id") or _default_task_id(family, params, body))
        return Task(task_id, family, params, body)


def make_task(
    family: str,
    params: Mapping[str, float] | Sequence[float] | None = None,
    body: Mapping[str, float] | Sequence[float] | None = None,
    task_id: str | None = None,
) -> Task:
    """Build a task by name; missing parameters take the middle of their range."""
    _check_family(family, "family")
    spec = contract.FAMILY_BY_NAME[family]
    if params is None:
        params = {}
    if isinstance(params, Mapping):
        params = {
            p.name: params.get(p.name, p.clip((p.low + p.high) / 2)) for p in spec.params
        } | dict(params)
    values = _values_from(params, spec.params, f"params ({family})")
    body_values = _values_from(
        contract.DEFAULT_BODY if body is None else body, contract.BODY_PARAMS, "body"
    )
    return Task(
        task_id or _default_task_id(family, values, body_values), family, values, body_values
    )


def _param_code_size(p: contract.ParamSpec) -> int:
    return int(p.high - p.low) + 1 if p.integer else 1


_WIDEST_FAMILY_CODE = max(sum(_param_code_size(p) for p in f.params) for f in contract.FAMILIES)
TASK_CODE_SIZE = _WIDEST_FAMILY_CODE + len(contract.BODY_PARAMS)
"""Length of `task_code` (the widest family's code plus the body)."""


def task_code(task: Task) -> np.ndarray:
    """The task's hidden parameters as a fixed-length vector, for supervising task inference
    in meta-training (never shown to a policy): each integer parameter one-hot over its
    choices, each continuous one scaled to [-1, 1], zero-padded to the widest family, then
    the body's three parameters scaled to [-1, 1]. [TASK_CODE_SIZE] float32."""
    code = np.zeros(TASK_CODE_SIZE, np.float32)
    i = 0
    for p, value in zip(contract.FAMILY_BY_NAME[task.family].params, task.params, strict=True):
        if p.integer:
            code[i + int(round(value - p.low))] = 1.0
        else:
            code[i] = 2.0 * (value - p.low) / (p.high - p.low) - 1.0
        i += _param_code_size(p)
    code[TASK_CODE_SIZE - len(contract.BODY_PARAMS) :] = body_code(task.body)
    return code


BODY_LOW = np.array([p.low for p in contract.BODY_PARAMS])
"""Lower end of each body number's range (`contract.BODY_PARAMS` order)."""
BODY_HIGH = np.array([p.high for p in contract.BODY_PARAMS])
"""Upper end of each body number's range."""


def body_code(body: Sequence[float] | np.ndarray) -> np.ndarray:
    """A body's part of `task_code`: each of its numbers scaled from its range to [-1, 1].
    [3] float32."""
    scaled = 2.0 * (np.asarray(body, dtype=np.float64) - BODY_LOW) / (BODY_HIGH - BODY_LOW)
    return (scaled - 1.0).astype(np.float32)


def _default_task_id(family: str, params: Sequence[float], body: Sequence[float]) -> str:
    return f"{family}[{','.join(f'{v:g}' for v in (*params, *body))}]"


def _check_family(family: str, where: str) -> None:
    if family not in contract.FAMILY_BY_NAME:
        raise TaskError(
            f"{where}: unknown scenario family {family!r}; use one of: {', '.join(ALL_FAMILIES)}"
        )


def _values_from(
    raw: Mapping[str, float] | Sequence[float], specs: Sequence[contract.ParamSpec], where: str
) -> tuple[float, ...]:
    names = [p.name for p in specs]
    if isinstance(raw, Mapping):
        unknown = set(raw) - set(names)
        if unknown:
            raise TaskError(
                f"{where}: unknown name(s) {sorted(unknown)}; it takes: {', '.join(names)}"
            )
        missing = [n for n in names if n not in raw]
        if missing:
            raise TaskError(
                f"{where}: missing {', '.join(missing)}; give every one of: {', '.join(names)}"
            )
        return tuple(float(raw[n]) for n in names)
    values = tuple(float(v) for v in raw)
    if len(values) != len(specs):
        raise TaskError(
            f"{where}: takes {len(specs)} value(s) ({', '.join(names)}), got {len(values)}"
        )
    return values


def _validate(task: Task) -> None:
    _check_family(task.family, f"Task {task.task_id!r}: family")
    spec = contract.FAMILY_BY_NAME[task.family]
    _check_values(task.params, spec.params, f"Task {task.task_id!r}: params ({task.family})")
    _check_values(task.body, contract.BODY_PARAMS, f"Task {task.task_id!r}: body")


def _check_values(
    values: tuple[float, ...], specs: Sequence[contract.ParamSpec], where: str
) -> None:
    names = ", ".join(p.name for p in specs)
    if len(values) != len(specs):
        raise TaskError(f"{where}: takes {len(specs)} value(s) ({names}), got {len(values)}")
    for p, v in zip(specs, values, strict=True):
        if not np.isfinite(v) or not p.low <= v <= p.high:
            raise TaskError(
                f"{where}: {p.name} = {v!r} is outside [{p.low:g}, {p.high:g}]; "
                f"use a value in that range ({p.doc})"
            )
        if p.integer and v != round(v):
            raise TaskError(f"{where}: {p.name} = {v!r} must be a whole number ({p.doc})")


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def tasks_to_json(tasks: Iterable[Task]) -> str:
    return json.dumps([t.to_dict() for t in tasks], indent=2)


def tasks_from_json(text: str) -> list[Task]:
    return _tasks_from_list(json.loads(text), "JSON")


def dump_tasks(tasks: Iterable[Task], path: str | Path) -> None:
    """Write tasks as JSON (`.json`) or YAML (anything else)."""
    path = Path(path)
    if path.suffix == ".json":
        path.write_text(tasks_to_json(tasks))
        return
    import yaml

    path.write_text(yaml.safe_dump([t.to_dict() for t in tasks], sort_keys=False))


def load_tasks(path: str | Path) -> list[Task]:
    """Read tasks written by `dump_tasks` (or by hand: see docs/tasks-and-rollouts.md)."""
    import yaml

    path = Path(path)
    return _tasks_from_list(yaml.safe_load(path.read_text()), str(path))


def _tasks_from_list(data: Any, where: str) -> list[Task]:
    if not isinstance(data, list):
        raise TaskError(f"{where}: expected a list of tasks, got {type(data).__name__}")
    return [Task.from_dict(item) for item in data]


# ---------------------------------------------------------------------------------------------
# TaskDistribution
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskDistribution:
    """Reproducible training tasks and disjoint held-out tasks.

    The two pools are built once from the fields below, each family from its own random
    stream, so adding a family or changing `n_heldout` does not move the other tasks.
    """

    families: tuple[str, ...] = ALL_FAMILIES
    """Scenario families to use (names from `contract.FAMILIES`)."""
    seed: int = 0
    """Seed of both pools; the same seed and fields give the same tasks on every machine."""
    n_train: int = 60
    """Size of the training pool, spread evenly over the training families."""
    n_heldout: int = 12
    """Size of the held-out pool, spread evenly over all listed families."""
    heldout_family: str | None = None
    """A family held out entirely (only in the held-out pool), to measure transfer to an
    unseen kind of scenario; None = every family trains."""
    vary_body: bool = True
    """Draw the body (top speed, turn rate, actuation noise) per task; False = default body."""
    min_gap: float = 0.05
    """A held-out task must differ from every training task by at least this much in some
    parameter or body value, measured as a fraction of that value's range."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "families", tuple(self.families))
        self._validate()

    # -- config ---------------------------------------------------------------------------
    def _validate(self) -> None:
        if not self.families:
            raise TaskError("TaskDistribution.families is empty; list at least one family")
        for name in self.families:
            _check_family(name, "TaskDistribution.families")
        if len(set(self.families)) != len(self.families):
            raise TaskError("TaskDistribution.families lists a family twice; list each once")
        if self.heldout_family is not None and self.heldout_family not in self.families:
            raise TaskError(
                f"TaskDistribution.heldout_family {self.heldout_family!r} is not in families; "
                f"add it to families or use one of: {', '.join(self.families)}"
            )
        if not self.train_families:
            raise TaskError(
                "TaskDistribution.heldout_family leaves no training family; list more families"
            )
        if self.n_train < len(self.train_families):
            raise TaskError(
                f"TaskDistribution.n_train = {self.n_train} is smaller than the number of training "
                f"families ({len(self.train_families)}); raise n_train or list fewer families"
            )
        if self.n_heldout < 0:
            raise TaskError("TaskDistribution.n_heldout must be >= 0")
        if not 0.0 <= self.min_gap < 1.0:
            raise TaskError("TaskDistribution.min_gap must be in [0, 1) (a fraction of each range)")

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["families"] = list(self.families)
        return out

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> TaskDistribution:
        known = {f.name for f in fields(TaskDistribution)}
        unknown = set(data) - known
        if unknown:
            raise TaskError(
                f"TaskDistribution: unknown field(s) {sorted(unknown)}; known: {', '.join(sorted(known))}"
            )
        kwargs = dict(data)
        if "families" in kwargs:
            kwargs["families"] = tuple(kwargs["families"])
        return TaskDistribution(**kwargs)

    @property
    def train_families(self) -> tuple[str, ...]:
        return tuple(f for f in self.families if f != self.heldout_family)

    # -- pools ----------------------------------------------------------------------------
    @cached_property
    def _train_by_family(self) -> dict[str, list[Task]]:
        counts = _split_evenly(self.n_train, len(self.train_families))
        return {
            fam: self._draw_pool(fam, n, _TRAIN_STREAM, "train", avoid=[])
            for fam, n in zip(self.train_families, counts, strict=True)
        }

    @cached_property
    def _heldout_list(self) -> list[Task]:
        counts = _split_evenly(self.n_heldout, len(self.families))
        out: list[Task] = []
        for fam, n in zip(self.families, counts, strict=True):
            avoid = self._train_by_family.get(fam, [])
            out.extend(self._draw_pool(fam, n, _HELDOUT_STREAM, "heldout", avoid))
        return out

    def train_tasks(self) -> list[Task]:
        """The whole training pool, family by family."""
        return [t for fam in self.train_families for t in self._train_by_family[fam]]

    def heldout(self) -> list[Task]:
        """The held-out pool (disjoint from training by at least `min_gap`)."""
        return list(self._heldout_list)

    def sample_train(
        self, rng: np.random.Generator, k: int, weights: Mapping[str, float] | None = None
    ) -> list[Task]:
        """A stratified meta-batch of `k` training tasks.

        Each training family contributes `k // F` tasks, and `k % F` distinct random families
        one more. With `weights` (family -> relative share, 1 for families not named), each
        family contributes floor(k * share) and distinct random families, drawn in proportion
        to their shares, one more. Within a family, tasks are drawn without replacement while
        the pool lasts. The batch is returned in random order.
        """
        if k <= 0:
            raise TaskError(f"sample_train: k = {k}; ask for at least one task")
        fams = self.train_families
        share = np.array([float((weights or {}).get(f, 1.0)) for f in fams])
        if (share == share[0]).all():  # equal shares: the same draws as no weights
            per_family = np.full(len(fams), k // len(fams))
            per_family[rng.choice(len(fams), size=k % len(fams), replace=False)] += 1
        else:
            share = share / share.sum()
            per_family = np.floor(k * share).astype(np.int64)
            extra = rng.choice(len(fams), size=k - int(per_family.sum()), replace=False, p=share)
            per_family[extra] += 1
        batch: list[Task] = []
        for fam, n in zip(fams, per_family, strict=True):
            pool = self._train_by_family[fam]
            idx = rng.choice(len(pool), size=int(n), replace=int(n) > len(pool))
            batch.extend(pool[i] for i in idx)
        order = rng.permutation(len(batch))
        return [batch[i] for i in order]

    # -- drawing --------------------------------------------------------------------------
    def _draw_pool(
        self, family: str, n: int, stream: int, split: str, avoid: Sequence[Task]
    ) -> list[Task]:
        """n distinct tasks of one family; each at least `min_gap` away from `avoid`."""
        rng = np.random.default_rng([self.seed, stream, contract.FAMILY_BY_NAME[family].index])
        spec = contract.FAMILY_BY_NAME[family]
        taken: list[Task] = []
        draws = 0
        while len(taken) < n:
            draws += 1
            if draws > _MAX_DRAWS_PER_TASK * max(n, 1):
                raise TaskError(self._exhausted_message(family, split, n, len(taken)))
            params = tuple(_sample_value(rng, p) for p in spec.params)
            body = (
                tuple(_sample_value(rng, p) for p in contract.BODY_PARAMS)
                if self.vary_body
                else contract.DEFAULT_BODY
            )
            candidate = Task(f"{split}-{family}-{len(taken):03d}", family, params, body)
            if any(_key(candidate) == _key(t) for t in taken):
                continue
            if any(task_distance(candidate, t) < max(self.min_gap, 1e-9) for t in avoid):
                continue
            taken.append(candidate)
        return taken

    def _exhausted_message(self, family: str, split: str, n: int, got: int) -> str:
        return (
            f"TaskDistribution: could only draw {got} of {n} distinct {split} tasks for family "
            f"{family!r} (disjoint from training by min_gap={self.min_gap}). Its parameter space "
            "is small (integer parameters"
            + ("" if self.vary_body else " and vary_body=False")
            + "): set vary_body=True, lower n_train/n_heldout, or lower min_gap"
        )


def task_distance(a: Task, b: Task) -> float:
    """Largest difference in any parameter or body value, as a fraction of its range
    (inf when the families differ). Integer parameters that differ count at least 1/range."""
    if a.family != b.family:
        return float("inf")
    specs = (*contract.FAMILY_BY_NAME[a.family].params, *contract.BODY_PARAMS)
    values_a, values_b = (*a.params, *a.body), (*b.params, *b.body)
    return max(
        abs(x - y) / (s.high - s.low) for s, x, y in zip(specs, values_a, values_b, strict=True)
    )


def _key(task: Task) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
    return task.family, task.params, task.body


def _sample_value(rng: np.random.Generator, p: contract.ParamSpec) -> float:
    if p.integer:
        return float(rng.integers(int(p.low), int(p.high) + 1))
    return round(float(rng.uniform(p.low, p.high)), _PARAM_DECIMALS)


def _split_evenly(n: int, k: int) -> list[int]:
    """n items over k bins, the first n % k bins one larger."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


# ---------------------------------------------------------------------------------------------
# TaskChannel encoding
# ---------------------------------------------------------------------------------------------
class TaskAssigner(Protocol):
    """What `send_tasks` needs from a TaskChannel (avatar_meta.envs.task_channel.TaskChannel)."""

    def assign(
        self, area: int, family: str, params: Sequence[float], body: Sequence[float]
    ) -> None: ...


def send_tasks(
    channel: TaskAssigner, tasks_by_area: Mapping[int, Task | None] | Sequence[Task | None]
) -> int:
    """Queue one TaskChannel message per area that has a task; returns how many were queued.

    Areas mapped to None are skipped (the world keeps its previous or default assignment).
    The messages travel with the next reset/step, so call this before `reset()`.
    """
    items = (
        tasks_by_area.items() if isinstance(tasks_by_area, Mapping) else enumerate(tasks_by_area)
    )
    sent = 0
    for area, task in items:
        if task is None:
            continue
        if int(area) < 0:
            raise TaskError(f"send_tasks: area index {area} is negative; areas count from 0")
        channel.assign(int(area), task.family, list(task.params), list(task.body))
        sent += 1
    return sent


__all__ = [
    "ALL_FAMILIES",
    "Task",
    "TaskAssigner",
    "TaskDistribution",
    "TaskError",
    "dump_tasks",
    "load_tasks",
    "make_task",
    "send_tasks",
    "task_distance",
    "tasks_from_json",
    "tasks_to_json",
]
