"""Normalised scores of the training curve (read by the stability check)."""

from __future__ import annotations

from typing import Any

import numpy as np


class TrainingScorer:
    """Normalised scores of meta-batch returns, (return - random) / (scripted - random) per
    task, so the training curve reads on the same scale as the held-out report and the
    stability check (`stability` in metrics.json) can compare iterations across families.
    References come from the in-process plaza (the simulation every world serves) and are
    cached per task. A meta-batch of more than `max_tasks` tasks is scored on `max_tasks` of
    them, evenly spread over the batch: with a large training pool (strategy search draws
    120 of 3000 per iteration) nearly every task is new, and its references cost about 10 ms
    per task, a third of a meta-iteration at 120 tasks."""

    def __init__(self, episodes: int = 4, seed: int = 0, max_tasks: int = 24) -> None:
        self.episodes = episodes
        self.seed = seed
        self.max_tasks = max_tasks
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

    def score(self, tasks: list[Any], returns: np.ndarray) -> float | None:
        """Mean normalised score of one return per task (of at most `max_tasks` of them);
        tasks whose scripted controller is no better than random are skipped (None if that
        leaves none)."""
        from avatar_meta.training.baselines import normalised_score

        keep = np.unique(np.linspace(0, len(tasks) - 1, min(len(tasks), self.max_tasks)).round())
        picked = [tasks[int(i)] for i in keep]
        lo, hi = self.references(picked)
        scores = normalised_score(np.asarray(returns)[keep.astype(np.int64)], lo, hi)
        finite = scores[np.isfinite(scores)]
        return float(finite.mean()) if len(finite) else None
