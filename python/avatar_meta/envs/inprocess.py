"""`PlazaTaskEnv`: the `TaskEnv` interface directly over the numpy plaza, no protocol.

For fast tests and benchmarks, and as the reference the protocol path is checked against:
given the same seed, tasks and actions, `MLAgentsTaskEnv` over the built-in world must return
exactly the same numbers. To make that hold, task values pass through float32 here just as
they do on the TaskChannel, and actions are float32 as they are on the wire.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avatar_meta import contract
from avatar_meta.envs.rollouts import EnvStep
from avatar_meta.tasks import Task
from avatar_meta.world.types import TaskSpec


@dataclass
class PlazaEnvConfig:
    """How to build the in-process plaza (mirrors the world's command line)."""

    num_areas: int = 8
    """Areas in the plaza; each runs one task."""
    agents_per_area: int = 1
    """Learning avatars per area (all run their area's task)."""
    seed: int = 0
    """Plaza seed; equal seeds give equal worlds in-process and over the protocol."""


def wire_spec(task: Task) -> TaskSpec:
    """The TaskSpec a world builds from this task after the TaskChannel's float32 encoding."""
    params = tuple(float(np.float32(v)) for v in task.params)
    body = tuple(float(np.float32(v)) for v in task.body)
    return TaskSpec.make(task.family, params, body)


class PlazaTaskEnv:
    """A `TaskEnv` over `avatar_meta.world.plaza.Plaza` in this process.

    Slot i is plaza agent i (area i // agents_per_area). Areas given None in `set_tasks` keep
    their current assignment, as they do on the TaskChannel path.
    """

    def __init__(self, config: PlazaEnvConfig | None = None) -> None:
        from avatar_meta.world.plaza import Plaza

        self.config = config or PlazaEnvConfig()
        self.plaza = Plaza(
            num_areas=self.config.num_areas,
            agents_per_area=self.config.agents_per_area,
            seed=self.config.seed,
        )
        self._slot_area = np.repeat(
            np.arange(self.config.num_areas, dtype=np.int64), self.config.agents_per_area
        )
        # MLAgentsTaskEnv resets once on construction to learn its agents; doing the same here
        # keeps the plaza's random stream aligned, so equal seeds give equal numbers.
        self.reset()

    @property
    def num_areas(self) -> int:
        return self.config.num_areas

    @property
    def num_slots(self) -> int:
        return int(self._slot_area.shape[0])

    @property
    def slot_area(self) -> np.ndarray:
        return self._slot_area

    def set_tasks(self, tasks: Sequence[Task | None]) -> None:
        if len(tasks) != self.num_areas:
            raise ValueError(f"set_tasks: got {len(tasks)} tasks for {self.num_areas} areas")
        for area, task in enumerate(tasks):
            if task is not None:
                self.plaza.assign_task(area, wire_spec(task))

    def reset(self) -> tuple[np.ndarray, np.ndarray]:
        obs, mask = self.plaza.reset()
        return np.asarray(obs, dtype=np.float32), np.asarray(mask, dtype=bool)

    def step(self, cont: np.ndarray, gesture: np.ndarray) -> EnvStep:
        cont = np.asarray(cont, dtype=np.float32).reshape(self.num_slots, 2)
        gesture = np.asarray(gesture, dtype=np.int64).reshape(self.num_slots)
        r = self.plaza.step(cont, gesture)
        return EnvStep(
            obs=np.asarray(r.obs, dtype=np.float32),
            reward=np.asarray(r.reward, dtype=np.float32),
            done=np.asarray(r.done, dtype=bool),
            interrupted=np.asarray(r.interrupted, dtype=bool) & np.asarray(r.done, dtype=bool),
            terminal_obs=np.where(
                np.asarray(r.done, dtype=bool)[:, None], r.terminal_obs, 0.0
            ).astype(np.float32),
            mask=np.asarray(r.mask, dtype=bool).reshape(
                self.num_slots, contract.DISCRETE_BRANCHES[0]
            ),
        )

    def recover(self) -> None:
        """Nothing can die in-process."""

    def close(self) -> None:
        """Nothing to release."""
