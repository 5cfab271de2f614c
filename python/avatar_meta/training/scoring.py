"""Normalised scores of the training curve (read by the stability check)."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np


class TrainingScorer:
    """Normalised scores of meta-batch returns, (return - random) / (scripted - random) per
    task, so the training curve reads on the same scale as the held-out report and the
    stability check (`stability` in metrics.json) can compare iterations across families.

    References come from the in-process plaza (the simulation every world serves) and are
    cached per task. A meta-batch of more than `max_tasks` tasks is scored on a fixed subset
    of the training pool: the tasks whose id hashes to 0 modulo len(batch) // max_tasks,
    about `max_tasks` of any batch. With a large pool (strategy search draws 120 of 3000 per
    iteration) nearly every task of a batch is new, and references for 24 tasks at a time
    cost about 0.5 s, a fifth of a demo meta-iteration. Given the `pool`, the first `score`
    computes the references of the whole subset in one vectorised pass instead (600 of the
    demo's 3000 tasks: about 2 s, once)."""

    def __init__(
        self, episodes: int = 4, seed: int = 0, max_tasks: int = 24, pool: list[Any] | None = None
    ) -> None:
        self.episodes = episodes
        self.seed = seed
        self.max_tasks = max_tasks
        self.pool = pool
        self._refs: dict[str, tuple[float, float]] = {}

    def references(self, tasks: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        from avatar_meta.envs.inprocess import wire_spec
        from avatar_meta.world import scripted

        new = [t for t in dict.fromkeys(tasks) if t.task_id not in self._refs]
        if new:
            specs = [wire_spec(t) for t in new]
            ref = scripted.evaluate(scripted.scripted_actions, specs, self.episodes, self.seed)
            rnd = scripted.evaluate(
                scripted.random_controller(self.seed), specs, self.episodes, self.seed
            )
            for t, lo, hi in zip(new, rnd.returns, ref.returns, strict=True):
                self._refs[t.task_id] = (float(lo), float(hi))
        lo, hi = zip(*(self._refs[t.task_id] for t in tasks), strict=True)
        return np.array(lo), np.array(hi)

    def scored(self, tasks: list[Any]) -> np.ndarray:
        """Indices of the tasks of a batch that `score` reads: the fixed subset's members,
        at most `max_tasks` of them, evenly spread over the batch."""
        stride = max(1, len(tasks) // self.max_tasks)
        members = [i for i, t in enumerate(tasks) if _member(t, stride)]
        if len(members) <= self.max_tasks:
            return np.array(members, dtype=np.int64)
        spread = np.linspace(0, len(members) - 1, self.max_tasks).round().astype(np.int64)
        return np.array(members, dtype=np.int64)[np.unique(spread)]

    def score(self, tasks: list[Any], returns: np.ndarray) -> float | None:
        """Mean normalised score of one return per task over `scored(tasks)`; tasks whose
        scripted controller is no better than random are skipped (None if that leaves
        none)."""
        from avatar_meta.training.baselines import normalised_score

        keep = self.scored(tasks)
        if len(keep) == 0:
            return None
        if self.pool is not None:  # the whole subset at once: vectorised, far cheaper
            stride = max(1, len(tasks) // self.max_tasks)
            self.references([t for t in self.pool if _member(t, stride)])
            self.pool = None
        lo, hi = self.references([tasks[int(i)] for i in keep])
        scores = normalised_score(np.asarray(returns)[keep], lo, hi)
        finite = scores[np.isfinite(scores)]
        return float(finite.mean()) if len(finite) else None


def _member(task: Any, stride: int) -> bool:
    return zlib.crc32(task.task_id.encode()) % stride == 0
