"""The six scenario families: what the visitor does, where avatars start, and the reward.

Each family is one small class. `reward` is a pure function of a `Frame` (the world after the
decision's move), the family's hidden parameters and a `Memory` (the few numbers a family keeps
between decisions), vectorised over avatars. The formulas are written out for designers in
docs/scenarios.md; keep the two in step.

How the plaza calls them: a reward function runs on *every* avatar's row and the plaza keeps,
for each avatar, the result of its own family (this costs a few extra vector operations and
saves gathering and scattering each family's rows, which dominates at these array sizes).
So `params` [MAX_FAMILY_PARAMS, n] (parameter-major: `params[i]` is the i-th parameter of
every avatar, in `contract.FAMILIES` order) holds this family's parameters on its own
avatars' rows and this family's default parameters on the other rows, and each
family has its own `Memory` (whose other rows are never read): functions never see another
family's values.

Points are complex numbers x + 1j * z (see `geometry`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from avatar_meta import contract
from avatar_meta.world import geometry, visitor

ROUTE_XZ = geometry.LANDMARK_XZ[np.array(contract.PATROL_ROUTES)]
"""[route, i]: position of the i-th landmark of a patrol route."""


@dataclass
class Frame:
    """The world after one decision, one row per avatar."""

    pos: np.ndarray  # [n] complex, avatar position
    vel: np.ndarray  # [n] complex, velocity actually achieved (m/s)
    gesture: np.ndarray  # [n] int, gesture performed this decision (0 none; masked ones are 0)
    visitor_pos: np.ndarray  # [n] complex, the visitor of the avatar's area
    visitor_vel: np.ndarray  # [n] complex
    visitor_forward: np.ndarray  # [n] complex unit vector the visitor faces
    visitor_dist: np.ndarray  # [n] centre-to-centre distance to the visitor (m), shared


@dataclass
class Memory:
    """What a family remembers between decisions, per avatar.

    prev_dist: the distance the progress shaping measured at the previous decision, metres.
    slot: patrol only: landmarks reached so far (the current target is route[slot % 3]).
    greeted: greet_visitor only: the one greeting of the episode has been made.
    """

    prev_dist: np.ndarray  # [n] float
    slot: np.ndarray  # [n] int
    greeted: np.ndarray  # [n] bool

    @staticmethod
    def zeros(n: int) -> Memory:
        return Memory(np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool))


@dataclass
class Outcome:
    """What one decision earned, per avatar."""

    reward: np.ndarray  # [n] float
    on_target: np.ndarray  # [n] bool, this decision counts toward the success definition
    memory: Memory  # the family's memory for the next decision
    success: np.ndarray | None = None  # [n] bool, task just completed (ends the episode early)


class Scenario(ABC):
    """Base class: what a family overrides. Constants in CAPITALS are the tuning knobs."""

    name = ""
    ends_on_success = False
    visitor_behaviour = visitor.IDLE
    visitor_speed = 0.0
    spawn_near_visitor: tuple[float, float] | None = None
    """If set, avatars start (min, max) metres from the visitor; else anywhere in the plaza."""

    def visitor_speed_for(self, params: np.ndarray) -> float:
        """Walking speed of the visitor for one task's parameter vector (m/s)."""
        return self.visitor_speed

    def shaping_distance(self, frame: Frame, params: np.ndarray, memory: Memory) -> np.ndarray:
        """The distance whose decrease the progress shaping rewards (0 if the family has none).
        The plaza calls it at episode start to initialise `Memory.prev_dist`."""
        return np.zeros(len(frame.pos))

    @abstractmethod
    def reward(self, frame: Frame, params: np.ndarray, memory: Memory) -> Outcome:
        """This step's reward per avatar (and success, progress memory updates)."""

    def episode_success(
        self,
        on_target_steps: int,
        length: int,
        last_on_target: bool,
        patrol_slot: int,
        completed: bool,
    ) -> bool:
        """Success label of one finished episode (for the Stats channel and reports).
        Default: on target for at least half of the episode's decisions."""
        return on_target_steps >= length / 2


class ReachLandmark(Scenario):
    """Walk to the hidden target landmark and stay there while the visitor wanders."""

    name = "reach_landmark"
    visitor_behaviour = visitor.WANDER
    visitor_speed = 0.6
    PROGRESS_PER_M = 0.5
    ARRIVE_RADIUS = 1.0
    ARRIVE_BONUS = 0.5
    TIME_COST = 0.01

    def shaping_distance(self, frame: Frame, params: np.ndarray, memory: Memory) -> np.ndarray:
        return np.abs(frame.pos - geometry.LANDMARK_XZ[params[0].astype(np.int64)])

    def reward(self, frame: Frame, params: np.ndarray, memory: Memory) -> Outcome:
        dist = self.shaping_distance(frame, params, memory)
        there = dist <= self.ARRIVE_RADIUS
        reward = (
            self.PROGRESS_PER_M * (memory.prev_dist - dist)
            + self.ARRIVE_BONUS * there
            - self.TIME_COST
        )
        return Outcome(reward, there, Memory(dist, memory.slot, memory.greeted))

    def episode_success(
        self,
        on_target_steps: int,
        length: int,
        last_on_target: bool,
        patrol_slot: int,
        completed: bool,
    ) -> bool:
        return last_on_target


class FollowVisitor(Scenario):
    """Follow a visitor walking a loop, at the visitor's preferred distance."""

    name = "follow_visitor"
    visitor_behaviour = visitor.PATH
    visitor_speed = 0.9
    spawn_near_visitor = (2.0, 5.0)
    FALLOFF_PER_M = 2.0
    TOO_CLOSE_M = 0.5
    TOO_CLOSE_PENALTY = 0.5
    ON_TARGET_M = 0.5

    def reward(self, frame: Frame, params: np.ndarray, memory: Memory) -> Outcome:
        dist = frame.visitor_dist
        error = np.abs(dist - params[0])
        reward = np.exp(-self.FALLOFF_PER_M * error) - self.TOO_CLOSE_PENALTY * (
            dist < self.TOO_CLOSE_M
        )
        return Outcome(reward, error <= self.ON_TARGET_M, memory)


class GreetVisitor(Scenario):
    """Approach an idle visitor, stop at their comfort distance, greet with their gesture.

    One greeting per episode: the first gesture made within comfort_distance + NOTICE_MARGIN of
    the visitor is the greeting. The preferred gesture inside the comfort band succeeds and ends
    the episode; anything else is a failed greeting, and the visitor ignores later gestures.
    Gestures are only possible while slow (the action mask), which is what "stopped" means.
    """

    name = "greet_visitor"
    ends_on_success = True
    visitor_behaviour = visitor.IDLE
    spawn_near_visitor = (3.0, 7.0)
    PROGRESS_PER_M = 0.5
    TIME_COST = 0.01
    BAND_M = 0.4
    NOTICE_MARGIN_M = 1.0
    SUCCESS_BONUS = 1.0
    FAILED_GREETING = -0.5
    TOO_CLOSE_MARGIN_M = 0.5
    TOO_CLOSE_PENALTY = 0.2

    def shaping_distance(self, frame: Frame, params: np.ndarray, memory: Memory) -> np.ndarray:
        return np.abs(frame.visitor_dist - params[1])

    def reward(self, frame: Frame, params: np.ndarray, memory: Memory) -> Outcome:
        preferred, comfort = params[0], params[1]
        dist = frame.visitor_dist
        error = np.abs(dist - comfort)
        in_band = error <= self.BAND_M
        attempt = (frame.gesture > 0) & ~memory.greeted & (dist <= comfort + self.NOTICE_MARGIN_M)
        success = attempt & in_band & (frame.gesture == preferred)
        greeting = np.where(success, self.SUCCESS_BONUS, self.FAILED_GREETING * attempt)
        reward = (
            self.PROGRESS_PER_M * (memory.prev_dist - error)
            - self.TIME_COST
            - self.TOO_CLOSE_PENALTY * (dist < comfort - self.TOO_CLOSE_MARGIN_M)
            + greeting
        )
        return Outcome(
            reward, in_band, Memory(error, memory.slot, memory.greeted | attempt), success
        )

    def episode_success(
        self,
        on_target_steps: int,
        length: int,
        last_on_target: bool,
        patrol_slot: int,
        completed: bool,
    ) -> bool:
        return completed


class KeepDistance(Scenario):
    """Stay inside the visitor's personal-space band while the visitor keeps approaching."""

    name = "keep_distance"
    visitor_behaviour = visitor.APPROACH
    visitor_speed = 0.7
    spawn_near_visitor = (2.0, 4.0)
    IN_BAND = 1.0
    PENALTY_PER_M = 0.5
    MAX_PENALTY = 1.0

    def reward(self, frame: Frame, params: np.ndarray, memory: Memory) -> Outcome:
        low = params[0]
        dist = frame.visitor_dist
        violation = np.maximum(low - dist, 0.0) + np.maximum(dist - (low + params[1]), 0.0)
        inside = violation <= 0.0
        reward = np.where(
            inside, self.IN_BAND, -np.minimum(self.PENALTY_PER_M * violation, self.MAX_PENALTY)
        )
        return Outcome(reward, inside, memory)


class PaceMatch(Scenario):
    """Walk alongside a walking visitor on their preferred side, at their gap and speed."""

    name = "pace_match"
    visitor_behaviour = visitor.PATH
    spawn_near_visitor = (1.0, 4.0)
    POSITION_WEIGHT = 0.8
    VELOCITY_WEIGHT = 0.2
    POSITION_SCALE_M = 0.5
    VELOCITY_SCALE_MPS = 0.5
    ON_TARGET_M = 0.5

    def visitor_speed_for(self, params: np.ndarray) -> float:
        return float(params[2])

    @staticmethod
    def target_point(frame: Frame, params: np.ndarray) -> np.ndarray:
        """The visitor's position moved side_gap to their left (side 0) or right (side 1).
        The visitor's right is its forward vector turned by -90 degrees: -1j * forward."""
        sign = np.where(params[0] >= 0.5, 1.0, -1.0)
        return frame.visitor_pos - 1j * frame.visitor_forward * (sign * params[1])

    def reward(self, frame: Frame, params: np.ndarray, memory: Memory) -> Outcome:
        pos_error = np.abs(frame.pos - self.target_point(frame, params))
        vel_error = np.abs(frame.vel - frame.visitor_vel)
        reward = self.POSITION_WEIGHT * np.exp(
            -pos_error / self.POSITION_SCALE_M
        ) + self.VELOCITY_WEIGHT * np.exp(-vel_error / self.VELOCITY_SCALE_MPS)
        return Outcome(reward, pos_error <= self.ON_TARGET_M, memory)


class Patrol(Scenario):
    """Visit the landmarks in the hidden route's order, round and round.

    The current target is route[slot % 3]; reaching it earns a bonus and moves on to the next.
    Lingering at the landmark *after* the current target (going round the wrong way) costs.
    """

    name = "patrol"
    visitor_behaviour = visitor.WANDER
    visitor_speed = 0.6
    PROGRESS_PER_M = 0.5
    ARRIVE_RADIUS = contract.LANDMARK_TOUCH_RADIUS  # so an arrival is what last_landmark sees
    ARRIVE_BONUS = 1.0
    WRONG_WAY_PENALTY = 1.0
    TIME_COST = 0.01
    SUCCESS_LANDMARKS = 2

    @staticmethod
    def target_of(params: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """Position of landmark number `slot` (mod 3) of each avatar's route."""
        return ROUTE_XZ[params[0].astype(np.int64), slot % 3]

    def shaping_distance(self, frame: Frame, params: np.ndarray, memory: Memory) -> np.ndarray:
        return np.abs(frame.pos - self.target_of(params, memory.slot))

    def reward(self, frame: Frame, params: np.ndarray, memory: Memory) -> Outcome:
        route = params[0].astype(np.int64)
        dist = np.abs(frame.pos - ROUTE_XZ[route, memory.slot % 3])
        # The landmark after the target: wrong way now, and the next target once reached.
        dist_after = np.abs(frame.pos - ROUTE_XZ[route, (memory.slot + 1) % 3])
        reached = dist <= self.ARRIVE_RADIUS
        wrong_way = dist_after <= self.ARRIVE_RADIUS
        reward = (
            self.PROGRESS_PER_M * (memory.prev_dist - dist)
            + self.ARRIVE_BONUS * reached
            - self.WRONG_WAY_PENALTY * wrong_way
            - self.TIME_COST
        )
        # On arrival, measure the next target from here: switching earns no progress by itself.
        memory = Memory(np.where(reached, dist_after, dist), memory.slot + reached, memory.greeted)
        return Outcome(reward, reached, memory)

    def episode_success(
        self,
        on_target_steps: int,
        length: int,
        last_on_target: bool,
        patrol_slot: int,
        completed: bool,
    ) -> bool:
        return patrol_slot >= self.SUCCESS_LANDMARKS


SCENARIOS: tuple[Scenario, ...] = (
    ReachLandmark(),
    FollowVisitor(),
    GreetVisitor(),
    KeepDistance(),
    PaceMatch(),
    Patrol(),
)
"""Indexed like `contract.FAMILIES`."""
assert tuple(s.name for s in SCENARIOS) == tuple(f.name for f in contract.FAMILIES)

DEFAULT_PARAMS = np.zeros((len(contract.FAMILIES), contract.MAX_FAMILY_PARAMS))
"""Each family's mid-range parameters (as TaskSpec.make fills them), contract order."""
for _family in contract.FAMILIES:
    for _i, _p in enumerate(_family.params):
        DEFAULT_PARAMS[_family.index, _i] = _p.clip((_p.low + _p.high) / 2)


SPAWN_NEAR = np.array([s.spawn_near_visitor is not None for s in SCENARIOS])
SPAWN_RANGE = np.array([s.spawn_near_visitor or (0.0, 0.0) for s in SCENARIOS])  # [6, 2]
VISITOR_BEHAVIOUR = np.array([s.visitor_behaviour for s in SCENARIOS])


def spawn_avatars(
    families: np.ndarray, visitor_pos: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Start positions (complex) and headings of avatars running `families` (one per avatar),
    whose visitors stand at `visitor_pos`: anywhere in the plaza, or within the family's
    `spawn_near_visitor` range of the visitor. Same number of draws whatever the families."""
    n = len(families)
    clearance = contract.AVATAR_RADIUS + 0.2
    anywhere = geometry.random_free_points(rng, n, 8.5, clearance)
    low, high = SPAWN_RANGE[families, 0], SPAWN_RANGE[families, 1]
    radius = low + (high - low) * rng.random(n)
    offset = radius * np.exp(1j * rng.uniform(-np.pi, np.pi, size=n))
    near = geometry.push_out(visitor_pos + offset, clearance)
    heading = rng.uniform(-np.pi, np.pi, size=n)
    return np.where(SPAWN_NEAR[families], near, anywhere), heading
