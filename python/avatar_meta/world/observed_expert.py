"""The scripted expert, driven from observations: expert action labels for collected rollouts.

`world.scripted.scripted_actions` reads the plaza's internal state. A trainer only has what
came over the protocol: observations, and the task it assigned to each area (it chose the
hidden parameters and the body). That is enough to rebuild everything the scripted controller
reads (contract v2 observations, docs/scenarios.md section 2):

- heading: the landmarks' local-frame vectors are the known world vectors rotated by
  exp(1j * heading), so one complex division recovers it;
- the visitor's position and velocity: their local-frame observations rotated back;
- the visitor's heading: its velocity direction (only pace_match reads it, whose visitor
  always walks);
- signed forward speed: the local forward component of `own_velocity` times the top speed;
- patrol slot and the greeting flag: replayed along the episode from positions, distances and
  `own_gesture` with the same rules as `world.scenarios` (patrol's labels then pass through
  each landmark reached instead of turning at its edge; see `expert_labels`).

`expert_labels(task, obs)` labels whole episodes; guided meta-training (`meta.outer_loss:
imitation`) imitates these labels with the *adapted* policy on the states it visited itself.
With a Unity build the same function applies as long as the build follows contract v2; a
scene with its own heuristic would supply its own labeller.
"""

from __future__ import annotations

import numpy as np

from avatar_meta import contract
from avatar_meta.world import geometry, scripted
from avatar_meta.world.plaza import VISITOR_VELOCITY_SCALE
from avatar_meta.world.scenarios import ROUTE_XZ, GreetVisitor, Patrol
from avatar_meta.world.types import TaskSpec

_OBS = contract.OBS
_GREET = scripted.FAMILY["greet_visitor"]
_PATROL = scripted.FAMILY["patrol"]
_BAND_M = 0.25
"""Greeting band of the scripted oracle (`scripted.scripted_actions`)."""
PATROL_PASS_THROUGH_M = 0.7
"""Patrol labels keep heading into a reached landmark until this close to its centre."""
PATROL_AIM_BEYOND_M = 1.0
"""...aiming this far beyond the centre, so that the avatar passes at speed, not braking."""


def _family_index(spec: TaskSpec) -> int:
    return contract.FAMILY_BY_NAME[spec.family].index


def state_from_observations(obs: np.ndarray, spec: TaskSpec) -> dict[str, np.ndarray]:
    """The `Plaza.state()` keys `scripted.actions_for_state` reads, for rows of one task's
    observations [n, OBS] (each row its own area). `patrol_slot` and `greeted` are zero here;
    `expert_labels` replays them along episodes."""
    obs = np.asarray(obs, dtype=np.float64)
    n = obs.shape[0]
    scale = contract.POSITION_SCALE
    pos = geometry.from_xz(obs[:, _OBS["own_position"]]) * scale
    landmarks_local = geometry.from_xz(obs[:, _OBS["landmarks"]].reshape(n, 3, 2)) * scale
    landmarks_world = geometry.LANDMARK_XZ[None, :] - pos[:, None]
    # local = world * rot: average the three estimates of rot, weighted by their length
    rot = (landmarks_local * np.conj(landmarks_world)).sum(axis=1)
    # all-zero padding rows have no landmarks to measure; give them heading 0
    rot = np.where(np.abs(rot) > 1e-9, rot / np.maximum(np.abs(rot), 1e-12), 1.0 + 0j)
    top_speed, turn_rate = float(spec.body[0]), float(spec.body[1])
    own_vel_local = geometry.from_xz(obs[:, _OBS["own_velocity"]])
    visitor_rel = geometry.from_xz(obs[:, _OBS["visitor_position"]]) * scale / rot
    visitor_vel = geometry.from_xz(obs[:, _OBS["visitor_velocity"]]) * VISITOR_VELOCITY_SCALE
    visitor_vel = visitor_vel / rot
    return {
        "pos": geometry.to_xz(pos),
        "heading": np.angle(rot),
        "speed": own_vel_local.imag * top_speed,
        "top_speed": np.full(n, top_speed),
        "turn_rate": np.full(n, turn_rate),
        "family": np.full(n, _family_index(spec), dtype=np.int64),
        "greeted": np.zeros(n, dtype=bool),
        "area": np.arange(n),
        "visitor_pos": geometry.to_xz(pos + visitor_rel),
        "visitor_vel": geometry.to_xz(visitor_vel),
        "visitor_heading": geometry.yaw_of(visitor_vel),
    }


def _replay_memory(
    spec: TaskSpec, pos: np.ndarray, obs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Patrol slot and greeting flag at every step [E, T] (the shape of the avatar's
    positions `pos`, complex), replayed from the episode start with the reward rules of
    `world.scenarios` (the memory after the previous decision)."""
    shape = pos.shape
    episodes, steps = shape
    slot = np.zeros(shape, dtype=np.int64)
    greeted = np.zeros(shape, dtype=bool)
    if _family_index(spec) == _PATROL:
        route = int(spec.params[0])
        for t in range(1, steps):
            target = ROUTE_XZ[route, slot[:, t - 1] % 3]
            reached = np.abs(pos[:, t] - target) <= Patrol.ARRIVE_RADIUS
            slot[:, t] = slot[:, t - 1] + reached
    elif _family_index(spec) == _GREET:
        comfort = float(spec.params[1])
        dist = obs[..., _OBS["visitor_distance"]].reshape(shape) * contract.POSITION_SCALE
        made = obs[..., _OBS["own_gesture"]].reshape(episodes, steps, -1).argmax(-1) > 0
        notice = dist <= comfort + GreetVisitor.NOTICE_MARGIN_M
        for t in range(1, steps):
            greeted[:, t] = greeted[:, t - 1] | (made[:, t] & notice[:, t])
    return slot, greeted


def _passing_through(
    slot: np.ndarray, pos: np.ndarray, route: int, radius_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """Where a patrol avatar is still heading into the landmark it just reached (closing on
    it, farther than `radius_m` from its centre) -> (mask [E, T] bool, that landmark [E, T]).

    A step passes if every step from the latest arrival up to it does: counted with a
    cumulative sum instead of a loop over steps (this runs on every patrol rollout)."""
    steps = slot.shape[1]
    reached = ROUTE_XZ[route, (slot - 1) % 3]
    dist = np.abs(pos - reached)
    arrived = np.zeros(slot.shape, dtype=bool)
    arrived[:, 1:] = slot[:, 1:] > slot[:, :-1]
    before = np.full(slot.shape, np.inf)  # the same landmark's distance a step earlier
    before[:, 1:] = np.where(arrived[:, 1:], np.inf, dist[:, :-1])
    fails = np.cumsum((dist >= before) | (dist <= radius_m), axis=1)
    latest = np.maximum.accumulate(np.where(arrived, np.arange(steps), 0), axis=1)
    fails_before = np.take_along_axis(fails, np.maximum(latest - 1, 0), axis=1)
    passing = (latest > 0) & (fails == fails_before)
    return passing, reached


def expert_labels(
    task_spec: TaskSpec, obs: np.ndarray, pass_through_m: float = PATROL_PASS_THROUGH_M
) -> tuple[np.ndarray, np.ndarray]:
    """Expert actions for one task's episodes: obs [E, T, OBS] (each row e one episode from
    its first decision; padding rows past an episode's end get labels too, ignore them) ->
    (continuous [E, T, 2] float32 in [-1, 1], gesture [E, T] int64).

    The labels are the scripted oracle's, except on patrol just after an arrival. The oracle
    turns for the next landmark at ARRIVE_RADIUS from the one reached. A memoryless policy
    cannot see that the arrival counted, and an imitation that turns a few decimetres early
    never arrives, then takes the wrong-way penalty at the next landmark. So the labels keep
    heading into the reached landmark until `pass_through_m` from its centre (0 = exactly the
    oracle), and the imitation's turn falls well inside the radius."""
    obs = np.asarray(obs)
    episodes, steps = obs.shape[0], obs.shape[1]
    flat = obs.reshape(episodes * steps, -1)
    state = state_from_observations(flat, task_spec)
    pos = geometry.from_xz(state["pos"]).reshape(episodes, steps)
    slot, greeted = _replay_memory(task_spec, pos, obs)
    state["greeted"] = greeted.reshape(-1)
    params = np.zeros((flat.shape[0], contract.MAX_FAMILY_PARAMS))
    params[:, : len(task_spec.params)] = task_spec.params
    band = np.full(flat.shape[0], _BAND_M)
    cont, gesture = scripted.actions_for_state(state, params, slot.reshape(-1), band)
    if pass_through_m > 0 and _family_index(task_spec) == _PATROL:
        passing, reached = _passing_through(slot, pos, int(task_spec.params[0]), pass_through_m)
        rows = passing.reshape(-1)
        if rows.any():
            mark, here = reached.reshape(-1)[rows], pos.reshape(-1)[rows]
            aim = mark + PATROL_AIM_BEYOND_M * (mark - here) / np.maximum(np.abs(mark - here), 1e-9)
            still = np.zeros_like(aim)  # no feed-forward velocity: the landmark stands still
            cont[rows] = scripted.drive({k: v[rows] for k, v in state.items()}, aim, still)
    cont = np.nan_to_num(cont)  # degenerate rows (e.g. padding on top of the visitor) -> 0
    return (
        np.clip(cont, -1.0, 1.0).astype(np.float32).reshape(episodes, steps, 2),
        np.asarray(gesture, dtype=np.int64).reshape(episodes, steps),
    )
