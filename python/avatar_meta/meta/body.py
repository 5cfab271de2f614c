"""Identifying the avatar's body from its own observations (system identification).

A task's body (`contract.BODY_PARAMS`: top speed, turn rate, actuation noise) is hidden like
its family parameters, and strategy search's policy is told it as the last three numbers of
the task code. Unlike the family parameters, the body shows in every transition the avatar
makes, whatever it is trying to do (the unicycle of docs/scenarios.md, "The avatar body"):

- `own_velocity` is the achieved velocity / top speed, in the avatar's frame, and
  `own_position` changes by that velocity x DECISION_DT: so |velocity| / |own_velocity| is
  the top speed, and the angle between the world velocity and the local one is the heading;
- the heading changes by clip(turn + noise) x turn_rate x DECISION_DT, so the turn rate is
  the heading change over the commanded turn;
- the forward part of `own_velocity` is clip(forward + noise) when walking forwards, so its
  residual from the command is the actuation noise.

Collisions push the body out sideways and break these relations for a step, so every
estimate is a median (or a median absolute deviation) over the moving steps. Twenty support
episodes give thousands of transitions: enough for a few percent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from avatar_meta import contract
from avatar_meta.envs.rollouts import TaskRollout
from avatar_meta.tasks import BODY_HIGH, BODY_LOW

MIN_SPEED = 0.1
"""|own_velocity| (a fraction of top speed) below which a step says nothing of the heading."""
MIN_STEPS = 20
"""Fewer usable steps than this leave a body number at its range's middle."""


def identify_body(rollouts: Sequence[TaskRollout]) -> np.ndarray:
    """(top_speed, turn_rate, actuation_noise) of one task's body from its episodes,
    clipped to the parameter ranges (the middle of a range when the episodes never moved
    enough to tell). [3] float64."""
    speeds, rates, residuals = [], [], []
    for r in rollouts:
        for e in range(r.num_episodes):
            obs = np.concatenate([r.obs[e, : r.length[e]], r.terminal_obs[e][None]])
            s, t, n = _episode_evidence(obs, r.cont_action[e, : r.length[e]])
            speeds.append(s)
            rates.append(t)
            residuals.append(n)
    body = (BODY_LOW + BODY_HIGH) / 2  # the middle of each range, until the episodes tell
    speed, rate, residual = (
        np.concatenate(x) if x else np.zeros(0) for x in (speeds, rates, residuals)
    )
    if len(speed) >= MIN_STEPS:
        body[0] = np.median(speed)
    if len(rate) >= MIN_STEPS:
        body[1] = np.median(rate)
    if len(residual) >= MIN_STEPS:
        body[2] = 1.4826 * np.median(np.abs(residual - np.median(residual)))
    return np.clip(body, BODY_LOW, BODY_HIGH)


def _episode_evidence(
    obs: np.ndarray, action: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step top-speed values, turn-rate values and forward residuals of one episode:
    obs [T + 1, OBS] (the last is the terminal observation), action [T, 2]."""
    o = contract.OBS
    pos = obs[:, o["own_position"]].astype(np.float64) * contract.POSITION_SCALE
    local = obs[:, o["own_velocity"]].astype(np.float64)  # (lateral, forward) / top speed
    world_vel = (
        pos[1:, 0] + 1j * pos[1:, 1] - pos[:-1, 0] - 1j * pos[:-1, 1]
    ) / contract.DECISION_DT
    local_vel = local[1:, 0] + 1j * local[1:, 1]  # after action t
    moving = np.abs(local_vel) > MIN_SPEED
    speed = np.abs(world_vel[moving]) / np.abs(local_vel[moving])
    # world vector x exp(1j heading) = local vector (plaza frame), so this is exp(1j heading)
    heading = np.angle(local_vel / np.where(moving, world_vel, 1.0))
    command = np.clip(action.astype(np.float64), -1.0, 1.0)
    forward, turn = command[:, 0], command[:, 1]
    both = moving[1:] & moving[:-1] & (np.abs(turn[1:]) > 0.3) & (np.abs(turn[1:]) < 0.8)
    change = np.angle(np.exp(1j * (heading[1:] - heading[:-1])))  # wrapped to (-pi, pi]
    rate = change[both] / (turn[1:][both] * contract.DECISION_DT)
    ahead = moving & (forward > 0.1) & (forward < 0.7)
    residual = local[1:, 1][ahead] - forward[ahead]
    return speed, rate, residual
