"""The scripted visitor of each area: the person whose avatar the learning avatars react to.

Every behaviour is "walk toward a goal point at some speed, stopping short of it"; behaviours
only differ in how the goal is chosen each decision:

- IDLE: stands still.
- WANDER: walks to random points of the plaza, picking a new one on arrival or after a while.
- PATH: walks a rectangular loop round the plaza (random size, direction and start).
- APPROACH: walks toward the nearest avatar of its area and stops at arm's length.

Independently of the behaviour, the visitor sometimes shows a gesture (the `visitor_gesture`
observation): a uniformly random one of wave/bow/dance, held for one second (a new one
replaces it). The whole episode's cues are drawn at its start, without looking at any hidden
task parameter, so they never give a task away.

Positions and velocities are complex numbers x + 1j * z (see `geometry`).
"""

from __future__ import annotations

import numpy as np

from avatar_meta import contract
from avatar_meta.world import geometry

IDLE, WANDER, PATH, APPROACH = 0, 1, 2, 3
BEHAVIOUR_NAMES = ("idle", "wander", "path", "approach")

ARRIVE_RADIUS = 0.3
"""A goal (wander point, path corner) counts as reached within this distance, metres."""
APPROACH_STOP = 0.6
"""An approaching visitor stops this far (centre to centre) from the avatar, metres."""
WANDER_EXTENT = 8.0
WANDER_PATIENCE = 80
"""Decisions after which a wanderer gives up a goal (it may be stuck behind an obstacle)."""
PATH_HALF_SIZE = (6.8, 7.5)
"""Range of the half side of the rectangular walking loop: the loop stays clear of every
obstacle and wall even with a companion walking 2 m to either side of it."""
CUE_START_PROB = 0.02
"""Chance per decision that the visitor starts a gesture (about every 5 s)."""
CUE_STEPS = 10
"""Decisions a gesture cue is held (1 s)."""


class Visitors:
    """State of the one visitor in each of `num_areas` areas, as arrays over areas."""

    def __init__(self, num_areas: int) -> None:
        a = num_areas
        self.pos = np.zeros(a, dtype=complex)
        self.vel = np.zeros(a, dtype=complex)
        self.forward = np.full(a, 1j)  # unit vector the visitor faces
        self.behaviour = np.zeros(a, dtype=np.int64)
        self.speed = np.zeros(a)
        self.stop_distance = np.zeros(a)
        self.goal = np.zeros(a, dtype=complex)
        self.waypoints = np.zeros((a, 4), dtype=complex)
        self.waypoint = np.zeros(a, dtype=np.int64)
        self.patience = np.zeros(a, dtype=np.int64)
        self.cue = np.zeros(a, dtype=np.int64)  # gesture shown now (0 = none)
        self.clock = np.zeros(a, dtype=np.int64)  # decisions since the episode start
        self.cue_plan = np.zeros((a, contract.MAX_EPISODE_STEPS + 1), dtype=np.int64)
        self._rows = np.arange(a)
        self._groups_stale = True
        self._is: dict[int, np.ndarray] = {}
        self._has: dict[int, bool] = {}
        self._step_len = np.zeros(a)  # this decision's walk, between plan() and settle()
        self._heading_to = np.full(a, 1j)

    # ----------------------------------------------------------------------------- episode start
    def start(
        self, areas: np.ndarray, behaviour: np.ndarray, speed: np.ndarray, rng: np.random.Generator
    ) -> None:
        """Place the visitors of `areas` for a new episode, with the given behaviour and speed.

        Every area draws the same random numbers whatever its behaviour (a free spot, a facing,
        a wander goal and a walking loop) and keeps the ones its behaviour uses: the draws stay
        vectorised and their count does not depend on the tasks.
        """
        m = len(areas)
        self.behaviour[areas] = behaviour
        self.speed[areas] = np.where(behaviour == IDLE, 0.0, speed)
        self.stop_distance[areas] = np.where(behaviour == APPROACH, APPROACH_STOP, 0.0)
        self.vel[areas] = 0.0
        self.clock[areas] = 0
        self.patience[areas] = 0
        self._groups_stale = True

        spot = geometry.random_free_points(rng, m, 6.5, 1.0)
        facing = geometry.forward_of(rng.uniform(-np.pi, np.pi, size=m))
        wander_goal = geometry.random_free_points(rng, m, WANDER_EXTENT, 0.8)
        corners = self._random_loops(rng, m)
        along = rng.random(m)
        self.cue_plan[areas] = self._random_cues(rng, m)
        self.cue[areas] = self.cue_plan[areas, 0]

        on_path = behaviour == PATH
        first_side = corners[:, 1] - corners[:, 0]
        self.waypoints[areas] = corners
        self.waypoint[areas] = 1
        self.pos[areas] = np.where(on_path, corners[:, 0] + along * first_side, spot)
        self.forward[areas] = np.where(on_path, first_side / np.abs(first_side), facing)
        self.goal[areas] = np.where(
            on_path, corners[:, 1], np.where(behaviour == WANDER, wander_goal, spot)
        )

    @staticmethod
    def _random_loops(rng: np.random.Generator, m: int) -> np.ndarray:
        """m square loops [m, 4] (corners in walking order): random size, direction, start."""
        half = rng.uniform(*PATH_HALF_SIZE, size=m)
        step = np.where(rng.random(m) < 0.5, 1, -1)  # counter-clockwise or clockwise
        first = rng.integers(4, size=m)
        order = (first[:, None] + step[:, None] * np.arange(4)[None, :]) % 4
        square = np.array([-1 - 1j, 1 - 1j, 1 + 1j, -1 + 1j])
        return half[:, None] * square[order]

    @staticmethod
    def _random_cues(rng: np.random.Generator, m: int) -> np.ndarray:
        """m cue timelines [m, MAX_EPISODE_STEPS + 1]: gesture shown after each decision.

        Each decision starts a gesture with probability CUE_START_PROB (one uniform draw
        decides both whether and which); it shows for CUE_STEPS decisions or until the next.
        """
        u = rng.random((m, contract.MAX_EPISODE_STEPS + 1))
        kinds = len(contract.GESTURES) - 1
        gesture = 1 + np.minimum((u / CUE_START_PROB * kinds).astype(np.int64), kinds - 1)
        t = np.arange(u.shape[1])
        last_start = np.maximum.accumulate(np.where(u < CUE_START_PROB, t, -CUE_STEPS), axis=1)
        shown = gesture[np.arange(m)[:, None], np.maximum(last_start, 0)]
        return np.where(t - last_start < CUE_STEPS, shown, 0)

    # ----------------------------------------------------------------------------- per decision
    def plan(self, rng: np.random.Generator, avatar_pos: np.ndarray) -> np.ndarray:
        """Choose goals, show this decision's cue, and return where each visitor walks to
        this decision (before collisions: the plaza resolves them for everyone at once,
        then calls `settle`). `avatar_pos` is complex [areas, agents_per_area]: where the
        avatars stood when the decision began (a visitor reacts within 0.1 s)."""
        if self._groups_stale:
            self._is = {b: self.behaviour == b for b in range(len(BEHAVIOUR_NAMES))}
            self._has = {b: bool(mask.any()) for b, mask in self._is.items()}
            self._groups_stale = False
        arrived = np.abs(self.goal - self.pos) <= ARRIVE_RADIUS
        if self._has[WANDER]:
            self._retarget_wanderers(rng, arrived)
        if self._has[PATH]:
            self._advance_on_paths(arrived)
        if self._has[APPROACH]:
            self._chase(avatar_pos)
        self.clock += 1
        self.cue = self.cue_plan[self._rows, np.minimum(self.clock, contract.MAX_EPISODE_STEPS)]
        delta = self.goal - self.pos
        dist = np.abs(delta)
        self._step_len = np.minimum(
            self.speed * contract.DECISION_DT, np.maximum(dist - self.stop_distance, 0.0)
        )
        self._heading_to = delta / np.maximum(dist, 1e-9)
        return self.pos + self._heading_to * self._step_len

    def settle(self, new_pos: np.ndarray) -> None:
        """Take the collision-free positions of this decision; derive velocity and facing."""
        self.vel = (new_pos - self.pos) * (1.0 / contract.DECISION_DT)
        self.forward = np.where(self._step_len > 1e-6, self._heading_to, self.forward)
        self.pos = new_pos

    def _retarget_wanderers(self, rng: np.random.Generator, arrived: np.ndarray) -> None:
        self.patience += 1
        retarget = self._is[WANDER] & (arrived | (self.patience >= WANDER_PATIENCE))
        count = int(np.count_nonzero(retarget))
        if count:
            self.goal[retarget] = geometry.random_free_points(rng, count, WANDER_EXTENT, 0.8)
            self.patience[retarget] = 0

    def _advance_on_paths(self, arrived: np.ndarray) -> None:
        rows = np.flatnonzero(self._is[PATH] & arrived)
        if len(rows):
            self.waypoint[rows] = (self.waypoint[rows] + 1) % 4
            self.goal[rows] = self.waypoints[rows, self.waypoint[rows]]

    def _chase(self, avatar_pos: np.ndarray) -> None:
        if avatar_pos.shape[1] == 1:
            nearest = avatar_pos[:, 0]
        else:
            closest = np.abs(avatar_pos - self.pos[:, None]).argmin(axis=1)
            nearest = avatar_pos[np.arange(len(self.pos)), closest]
        approach = self._is[APPROACH]
        self.goal[approach] = nearest[approach]
