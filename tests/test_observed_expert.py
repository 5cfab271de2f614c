"""Expert labels rebuilt from observations equal the scripted oracle that reads the plaza
(with patrol's pass-through off), and patrol's pass-through labels go into each landmark."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_meta import contract
from avatar_meta.envs.inprocess import wire_spec
from avatar_meta.tasks import Task, TaskDistribution
from avatar_meta.world import scripted
from avatar_meta.world.observed_expert import PATROL_PASS_THROUGH_M, expert_labels
from avatar_meta.world.plaza import Plaza

STEPS = 120


def record(driver: str, family: str, seed: int = 3):
    """Observations, and the oracle's actions read from the plaza's state, per step."""
    tasks = TaskDistribution(families=(family,), n_train=6, n_heldout=1, seed=seed).train_tasks()
    plaza = Plaza(num_areas=len(tasks), agents_per_area=1, seed=seed)
    for area, task in enumerate(tasks):
        plaza.assign_task(area, wire_spec(task))
    obs, _ = plaza.reset()
    rng = np.random.default_rng(seed)
    seen, cont, gesture = [], [], []
    for _ in range(STEPS):
        c, g = scripted.scripted_actions(plaza)
        seen.append(np.asarray(obs))
        cont.append(np.clip(c, -1.0, 1.0))
        gesture.append(g)
        action = (c, g) if driver == "oracle" else scripted.random_actions(rng, plaza.n_agents)
        result = plaza.step(*action)
        if result.done.any():  # episodes restart per area; keep one episode per row
            break
        obs = result.obs
    return tasks, np.stack(seen, 1), np.stack(cont, 1), np.stack(gesture, 1)


@pytest.mark.parametrize("driver", ["oracle", "random"])
@pytest.mark.parametrize("family", [f.name for f in contract.FAMILIES])
def test_labels_from_observations_equal_the_state_reading_oracle(driver: str, family: str) -> None:
    tasks, obs, want_cont, want_gesture = record(driver, family)
    for row, task in enumerate(tasks):
        cont, gesture = expert_labels(wire_spec(task), obs[row : row + 1], pass_through_m=0.0)
        err = np.abs(cont[0] - want_cont[row]).max(axis=-1)
        # pace_match reads the visitor's heading, rebuilt from its velocity: equal except on
        # the few steps where the walking visitor turns a corner of its loop
        assert (err < 1e-3).mean() >= (0.95 if family == "pace_match" else 1.0)
        np.testing.assert_array_equal(gesture[0], want_gesture[row])


def test_greeting_and_patrol_memory_are_replayed() -> None:
    """An oracle run of greet_visitor greets exactly once (the labels stop asking for
    gestures afterwards), and patrol labels follow the route's slot as it advances."""
    tasks, obs, _, want_gesture = record("oracle", "greet_visitor")
    assert (want_gesture > 0).any(), "the oracle should greet within the recorded steps"
    tasks, obs, want_cont, _ = record("oracle", "patrol")
    for row, task in enumerate(tasks):
        cont, _ = expert_labels(wire_spec(task), obs[row : row + 1], pass_through_m=0.0)
        np.testing.assert_allclose(cont[0], want_cont[row], atol=1e-3)


def drive_by_labels(
    tasks: list[Task], seed: int, pass_through_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """Closed loop: every decision takes the labels' action at the newest observation (the
    labeller replays the episode so far). -> positions [n, T] complex and returns [n]."""
    plaza = Plaza(num_areas=len(tasks), agents_per_area=1, seed=seed)
    for area, task in enumerate(tasks):
        plaza.assign_task(area, wire_spec(task))
    obs, _ = plaza.reset()
    seen, returns = [], np.zeros(len(tasks))
    for _ in range(contract.MAX_EPISODE_STEPS):
        seen.append(np.asarray(obs))
        history = np.stack(seen, 1)
        labels = [
            expert_labels(wire_spec(t), history[i : i + 1], pass_through_m)
            for i, t in enumerate(tasks)
        ]
        cont = np.stack([c[0, -1] for c, _ in labels])
        result = plaza.step(cont, np.zeros(len(tasks), dtype=np.int64))
        returns += result.reward
        if result.done.any():
            break
        obs = result.obs
    pos = np.stack(seen, 1)[..., contract.OBS["own_position"]] * contract.POSITION_SCALE
    return pos[..., 0] + 1j * pos[..., 1], returns


def test_patrol_labels_pass_through_each_landmark_reached() -> None:
    """Driven by its own labels, a patrol avatar goes to within the pass-through distance of
    every landmark it reaches (the oracle turns at the arrival radius), and gives up little
    of the oracle's return for it."""
    tasks = TaskDistribution(families=("patrol",), n_train=6, n_heldout=1, seed=5).train_tasks()
    landmarks = np.array([complex(x, z) for x, z in contract.LANDMARKS])
    closest, returns = {}, {}
    passing_m = PATROL_PASS_THROUGH_M
    for radius in (0.0, passing_m):
        pos, returns[radius] = drive_by_labels(tasks, seed=5, pass_through_m=radius)
        nearest = np.abs(pos[..., None] - landmarks).min(axis=1)  # [n, 3] metres
        closest[radius] = nearest[nearest <= 1.0]  # the landmarks whose radius it entered
        assert len(closest[radius]) >= 2 * len(tasks), "patrol avatars should reach landmarks"
    assert closest[passing_m].max() <= passing_m + 0.05
    assert closest[0.0].max() > passing_m + 0.1, "the oracle turns at the edge: nothing to compare"
    oracle, passing = returns[0.0], returns[passing_m]
    assert passing.mean() >= 0.9 * oracle.mean()


def test_padding_rows_get_finite_labels() -> None:
    task = TaskDistribution(families=("reach_landmark",), n_train=1, n_heldout=1).train_tasks()[0]
    obs = np.zeros((2, 5, contract.OBSERVATION_SIZE), dtype=np.float32)
    cont, gesture = expert_labels(wire_spec(task), obs)
    assert np.isfinite(cont).all() and cont.shape == (2, 5, 2) and gesture.shape == (2, 5)


def test_pass_through_runs_match_their_step_by_step_definition() -> None:
    """`_passing_through` counts runs with a cumulative sum; the definition is a recurrence:
    passing[t] = (arrived at t or passing[t-1]) and still closing and beyond the radius."""
    from avatar_meta.world.observed_expert import _passing_through
    from avatar_meta.world.scenarios import ROUTE_XZ

    rng = np.random.default_rng(0)
    for route in range(6):
        slot = np.cumsum(rng.random((4, 80)) < 0.08, axis=1)
        slot[:, 0] = 0
        reached = ROUTE_XZ[route, (slot - 1) % 3]
        pos = reached + 1.5 * rng.random(slot.shape) * np.exp(2j * np.pi * rng.random(slot.shape))
        got, _ = _passing_through(slot, pos, route, 0.5)
        dist = np.abs(pos - reached)
        want = np.zeros(slot.shape, dtype=bool)
        for t in range(1, slot.shape[1]):
            arrived = slot[:, t] > slot[:, t - 1]
            closing = dist[:, t] < np.where(arrived, np.inf, dist[:, t - 1])
            want[:, t] = (arrived | want[:, t - 1]) & closing & (dist[:, t] > 0.5)
        assert want.any() and (~want).any()
        np.testing.assert_array_equal(got, want)
