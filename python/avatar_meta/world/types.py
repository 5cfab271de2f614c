"""Data passed between the plaza simulation and the protocol layer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avatar_meta import contract


@dataclass(frozen=True)
class TaskSpec:
    """One scenario: a family, its hidden parameters (contract order) and a body.

    `params` and `body` are already validated/clipped to the contract ranges
    (use `TaskSpec.make`, which clips and fills missing values with defaults).
    """

    family: str
    params: tuple[float, ...]
    body: tuple[float, ...] = contract.DEFAULT_BODY

    @staticmethod
    def make(
        family: str,
        params: dict[str, float] | tuple[float, ...] | None = None,
        body: tuple[float, ...] | None = None,
    ) -> TaskSpec:
        """Validate and clip. Raises ValueError naming the family or parameter on bad input."""
        if family not in contract.FAMILY_BY_NAME:
            known = ", ".join(contract.FAMILY_BY_NAME)
            raise ValueError(f"unknown scenario family {family!r}; use one of: {known}")
        spec = contract.FAMILY_BY_NAME[family]
        if params is None:
            params = {}
        if isinstance(params, dict):
            unknown = set(params) - {p.name for p in spec.params}
            if unknown:
                names = ", ".join(p.name for p in spec.params)
                raise ValueError(
                    f"unknown parameter(s) {sorted(unknown)} for family {family!r}; it takes: {names}"
                )
            values = tuple(p.clip(params.get(p.name, (p.low + p.high) / 2)) for p in spec.params)
        else:
            if len(params) != len(spec.params):
                raise ValueError(
                    f"family {family!r} takes {len(spec.params)} parameter(s) "
                    f"({', '.join(p.name for p in spec.params)}), got {len(params)}"
                )
            values = tuple(p.clip(v) for p, v in zip(spec.params, params, strict=True))
        body = contract.DEFAULT_BODY if body is None else tuple(body)
        if len(body) != len(contract.BODY_PARAMS):
            raise ValueError(
                f"body takes {len(contract.BODY_PARAMS)} values "
                f"({', '.join(p.name for p in contract.BODY_PARAMS)}), got {len(body)}"
            )
        body = tuple(p.clip(v) for p, v in zip(contract.BODY_PARAMS, body, strict=True))
        return TaskSpec(family, values, body)

    @property
    def family_index(self) -> int:
        return contract.FAMILY_BY_NAME[self.family].index

    def param_dict(self) -> dict[str, float]:
        spec = contract.FAMILY_BY_NAME[self.family]
        return {p.name: v for p, v in zip(spec.params, self.params, strict=True)}


@dataclass(frozen=True)
class EpisodeStats:
    """Summary of one finished episode of one avatar (for the Stats side channel)."""

    area: int
    agent: int
    family: str
    episode_return: float
    success: bool
    length: int


@dataclass
class StepResult:
    """What one `Plaza.step` produced for all N avatars (N = num_areas * agents_per_area).

    Avatars whose episode ended this step are already reset: `obs`/`mask` are their first
    observation of the new episode, `terminal_obs` their last one of the old episode.
    """

    obs: np.ndarray  # [N, OBSERVATION_SIZE] float32, for the next decision
    reward: np.ndarray  # [N] float32, reward earned by the action just applied
    done: np.ndarray  # [N] bool, the episode ended with this step
    interrupted: np.ndarray  # [N] bool, ended because MAX_EPISODE_STEPS was reached
    terminal_obs: np.ndarray  # [N, OBSERVATION_SIZE] float32, valid where done
    mask: np.ndarray  # [N, 4] bool, True = gesture masked (proto convention)
    finished: list[EpisodeStats] = field(default_factory=list)
