"""Hand-written controllers for the plaza: reward sanity checks and reference returns.

- `scripted_actions(plaza)`: an oracle that reads the true hidden parameters from
  `plaza.state()` and drives each avatar to a per-family target point. It shows the rewards
  are learnable and gives a reference return per task.
- `TaskAgnosticController`: the same driving, but it knows only the family, never the hidden
  parameters (it plays the best fixed guess). The gap between the two is what meta-learning
  can win by inferring the parameters.
- `random_actions(rng, n)`: uniform random actions (the "random" of the normalised score).
- `evaluate(...)`: mean episode return and success rate of a controller on given tasks.

Every controller is vectorised over avatars: a controller is any `plaza -> (continuous [N, 2],
gesture [N])` callable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from avatar_meta import contract
from avatar_meta.world import geometry
from avatar_meta.world.plaza import Plaza
from avatar_meta.world.types import EpisodeStats, TaskSpec

Controller = Callable[[Plaza], tuple[np.ndarray, np.ndarray]]
FAMILY = {f.name: f.index for f in contract.FAMILIES}
LANDMARKS = geometry.LANDMARK_XZ
STEER_GAIN = 1.5
"""1/s: how fast the go-to-point controller closes the gap to its target."""
DETOUR_MARGIN = 0.7
"""Metres kept between the body's surface and an obstacle when planning around it."""


# ================================================================================== driving
def drive(
    state: dict[str, np.ndarray],
    target: np.ndarray,
    feed_forward: np.ndarray,
    face: np.ndarray | None = None,
) -> np.ndarray:
    """Continuous actions [N, 2] that move each avatar toward `target` (complex [N]).

    The wanted velocity is `feed_forward` (complex, e.g. the visitor's velocity when walking
    with them) plus STEER_GAIN times the offset to the target, capped at the top speed. The
    avatar turns toward it and walks forward in proportion to how well it faces it. Where the
    wanted velocity is tiny and `face` is given, the avatar turns to face that point.
    """
    pos = geometry.from_xz(state["pos"])
    heading, top = state["heading"], state["top_speed"]
    target = _detour(pos, target)
    wanted = feed_forward + STEER_GAIN * (target - pos)
    speed = np.minimum(np.abs(wanted), top)
    yaw = geometry.yaw_of(wanted)
    if face is not None:
        yaw = np.where(speed < 0.05 * top, geometry.yaw_of(face - pos), yaw)
    error = geometry.wrap_angle(yaw - heading)
    turn = np.clip(error / (state["turn_rate"] * contract.DECISION_DT), -1.0, 1.0)
    forward = speed / top * np.maximum(np.cos(error), 0.0) ** 2
    return np.stack([forward, turn], axis=1)


def _detour(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Replace targets hidden behind an obstacle by a point beside that obstacle."""
    seg = target - pos  # [N]
    length2 = np.maximum(np.abs(seg) ** 2, 1e-9)
    to_obs = geometry.OBSTACLE_XZ[None, :] - pos[:, None]  # [N, O]
    along = np.clip((to_obs * np.conj(seg)[:, None]).real / length2[:, None], 0.0, 1.0)
    closest = pos[:, None] + along * seg[:, None]
    offset = closest - geometry.OBSTACLE_XZ[None, :]
    clearance = geometry.OBSTACLE_R[None, :] + contract.AVATAR_RADIUS + DETOUR_MARGIN
    blocked = (np.abs(offset) < clearance) & (along > 0.0) & (along < 1.0)
    if not blocked.any():
        return target
    first = np.where(blocked, along, np.inf).argmin(axis=1)
    rows = np.arange(len(pos))
    off = offset[rows, first]
    # Straight at the centre: go round on the left of the path.
    off = np.where(np.abs(off) < 1e-6, 1j * seg / np.sqrt(length2), off)
    beside = geometry.OBSTACLE_XZ[first] + (clearance[0, first] + 0.3) * off / np.abs(off)
    return np.where(blocked.any(axis=1), beside, target)


def _unit(vec: np.ndarray) -> np.ndarray:
    return vec / np.maximum(np.abs(vec), 1e-9)


# ================================================================================== targets
def family_targets(
    state: dict[str, np.ndarray], params: np.ndarray, patrol_slot: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-avatar (target, feed-forward velocity, gesture to make when there) for the given
    parameter matrix [N, MAX_FAMILY_PARAMS]. Families select rows; all complex but gesture."""
    pos = geometry.from_xz(state["pos"])
    area = state["area"]
    v_pos = geometry.from_xz(state["visitor_pos"])[area]
    v_vel = geometry.from_xz(state["visitor_vel"])[area]
    v_fwd = geometry.forward_of(state["visitor_heading"])[area]
    family = state["family"]
    away = _unit(pos - v_pos)
    p0, p1 = params[:, 0], params[:, 1]
    zero = np.zeros_like(pos)

    landmark = LANDMARKS[np.clip(p0, 0, 2).astype(np.int64)]
    route = np.array(contract.PATROL_ROUTES)[np.clip(p0, 0, 5).astype(np.int64)]
    patrol_target = LANDMARKS[route[np.arange(len(pos)), patrol_slot % 3]]
    side = np.where(p0 >= 0.5, 1.0, -1.0)
    pace_target = v_pos - 1j * v_fwd * (side * p1) + 0.3 * v_vel

    choices = {
        "reach_landmark": (landmark, zero),
        "follow_visitor": (v_pos + p0 * away, v_vel),
        "greet_visitor": (v_pos + p1 * away, zero),
        "keep_distance": (_free_spot_around(v_pos, away, p0 + params[:, 1] / 2), v_vel),
        "pace_match": (pace_target, v_vel),
        "patrol": (patrol_target, zero),
    }
    target, ff = zero.copy(), zero.copy()
    for name, (t, f) in choices.items():
        rows = family == FAMILY[name]
        target[rows], ff[rows] = t[rows], f[rows]
    gesture = np.where(family == FAMILY["greet_visitor"], p0, 0).astype(np.int64)
    return target, ff, gesture


def _free_spot_around(centre: np.ndarray, away: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """A point `radius` from `centre`, as close as possible to the direction `away`, that is
    inside the plaza and clear of obstacles (so a retreating avatar circles, not corners)."""
    turns = np.array([0.0, 0.4, -0.4, 0.8, -0.8, 1.2, -1.2, 1.6, -1.6, 2.2, -2.2, np.pi])
    spots = centre[:, None] + radius[:, None] * away[:, None] * np.exp(1j * turns)[None, :]
    inside = (np.abs(spots.real) < 8.5) & (np.abs(spots.imag) < 8.5)
    gap = np.abs(spots[:, :, None] - geometry.OBSTACLE_XZ[None, None, :])
    clear = (gap > geometry.OBSTACLE_R + 0.8).all(axis=2)
    best = np.argmax(inside & clear, axis=1)
    return spots[np.arange(len(centre)), best]


def actions_for_params(
    plaza: Plaza, params: np.ndarray, patrol_slot: np.ndarray, band: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Drive to the family targets; greet when inside `band` metres of the target distance."""
    return actions_for_state(plaza.state(), params, patrol_slot, band)


def actions_for_state(
    state: dict[str, np.ndarray], params: np.ndarray, patrol_slot: np.ndarray, band: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`actions_for_params` on a `Plaza.state()`-shaped dict (only the keys it reads: pos,
    heading, speed, top_speed, turn_rate, family, greeted, area and the visitor's pos, vel and
    heading per area), so a trainer can rebuild the state from observations."""
    target, ff, greet = family_targets(state, params, patrol_slot)
    pos = geometry.from_xz(state["pos"])
    v_pos = geometry.from_xz(state["visitor_pos"])[state["area"]]
    continuous = drive(state, target, ff, face=v_pos)
    is_greet = state["family"] == FAMILY["greet_visitor"]
    comfort = params[:, 1]
    there = is_greet & (np.abs(np.abs(pos - v_pos) - comfort) < band)
    continuous[there, 0] = 0.0
    slow = np.abs(state["speed"]) <= contract.GESTURE_MASK_SPEED_FRACTION * state["top_speed"]
    gesture = np.where(there & slow & ~state["greeted"], greet, 0)
    return continuous, gesture


def scripted_actions(plaza: Plaza) -> tuple[np.ndarray, np.ndarray]:
    """The oracle: drive with the true hidden parameters (and the true patrol target)."""
    state = plaza.state()
    band = np.full(plaza.n_agents, 0.25)
    return actions_for_params(plaza, state["params"], state["patrol_slot"], band)


# ================================================================================== baselines
class TaskAgnosticController:
    """Knows each avatar's family but not its hidden parameters: plays the best fixed guess.

    reach_landmark: the nearest landmark. patrol: landmarks in the order 0, 1, 2 from the
    nearest one, advancing on arrival. greet_visitor: wave at 2.1 m (never too close for any
    comfort distance). Others: mid-range parameters (pace_match: the visitor's left).
    """

    GUESS = {
        "follow_visitor": (2.5, 0.0, 0.0),
        "greet_visitor": (1.0, 2.1, 0.0),
        "keep_distance": (1.6, 1.2, 0.0),
        "pace_match": (0.0, 1.4, 0.8),
    }

    def __init__(self) -> None:
        self._next: np.ndarray | None = None  # patrol: the landmark each avatar heads to

    def __call__(self, plaza: Plaza) -> tuple[np.ndarray, np.ndarray]:
        state = plaza.state()
        pos = geometry.from_xz(state["pos"])
        nearest = np.abs(pos[:, None] - LANDMARKS[None, :]).argmin(axis=1)
        if self._next is None or len(self._next) != plaza.n_agents:
            self._next = nearest.copy()
        fresh = state["step"] == 0
        self._next[fresh] = nearest[fresh]
        arrived = np.abs(pos - LANDMARKS[self._next]) <= 1.0
        self._next = np.where(arrived, (self._next + 1) % 3, self._next)

        params = np.zeros_like(state["params"])
        for name, guess in self.GUESS.items():
            params[state["family"] == FAMILY[name]] = guess
        reach = state["family"] == FAMILY["reach_landmark"]
        params[reach, 0] = nearest[reach]
        # Patrol as "route 0 from slot s": route (0, 1, 2) puts landmark s at slot s.
        band = np.full(plaza.n_agents, 0.25)
        return actions_for_params(plaza, params, self._next, band)


def random_actions(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform random continuous actions in [-1, 1] and uniform random gestures."""
    return rng.uniform(-1.0, 1.0, size=(n, 2)), rng.integers(0, len(contract.GESTURES), size=n)


def random_controller(seed: int = 0) -> Controller:
    """`random_actions` as a controller."""
    rng = np.random.default_rng(seed)
    return lambda plaza: random_actions(rng, plaza.n_agents)


# ================================================================================== evaluation
@dataclass
class Evaluation:
    """Per-task results of `evaluate`: mean episode return and success rate."""

    returns: np.ndarray  # [tasks]
    success: np.ndarray  # [tasks], fraction of episodes labelled successful


def evaluate(
    controller: Controller, tasks: Sequence[TaskSpec], episodes: int = 1, seed: int = 0
) -> Evaluation:
    """Run `controller` on `tasks` (one plaza area per task) for `episodes` episodes each.

    greet_visitor episodes may end early; their area then starts the next one at once, so
    areas run out of step and extra episodes past `episodes` are ignored.
    """
    plaza = Plaza(num_areas=len(tasks), agents_per_area=1, seed=seed)
    for area, task in enumerate(tasks):
        plaza.assign_task(area, task)
    plaza.reset()
    finished: list[list[EpisodeStats]] = [[] for _ in tasks]
    while min(len(f) for f in finished) < episodes:
        result = plaza.step(*controller(plaza))
        for stats in result.finished:
            finished[stats.area].append(stats)
    return Evaluation(
        returns=np.array([np.mean([s.episode_return for s in f[:episodes]]) for f in finished]),
        success=np.array([np.mean([s.success for s in f[:episodes]]) for f in finished]),
    )
