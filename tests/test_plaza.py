"""The plaza simulation: observation layout, masks, sanitising, determinism, episodes, tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avatar_meta import contract
from avatar_meta.world import scripted
from avatar_meta.world.plaza import Plaza
from avatar_meta.world.types import TaskSpec

OBS = contract.OBS
STILL_BODY = (2.0, 3.0, 0.0)
"""No actuation noise: zero commands leave the avatar exactly where it is."""


def still(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((n, 2)), np.zeros(n, dtype=np.int64)


def plaza_with(
    task: TaskSpec, num_areas: int = 1, agents_per_area: int = 1, seed: int = 0
) -> Plaza:
    plaza = Plaza(num_areas=num_areas, agents_per_area=agents_per_area, seed=seed)
    for area in range(num_areas):
        plaza.assign_task(area, task)
    plaza.reset()
    return plaza


def observe_at(plaza: Plaza, x: float, z: float, heading: float) -> np.ndarray:
    """Place avatar 0 and return its observation after one decision of standing still."""
    plaza.place_avatar(0, x, z, heading)
    return plaza.step(*still(plaza.n_agents)).obs[0]


# ============================================================================ observation layout
def test_reset_shapes_and_first_observation() -> None:
    plaza = Plaza(num_areas=3, agents_per_area=2, seed=1)
    obs, mask = plaza.reset()
    assert plaza.n_agents == 6
    assert obs.shape == (6, contract.OBSERVATION_SIZE) and obs.dtype == np.float32
    assert mask.shape == (6, 4) and mask.dtype == bool and not mask.any()
    assert np.isfinite(obs).all()
    assert (obs[:, OBS["time_left"]] == 1.0).all()
    assert (obs[:, OBS["own_gesture"]] == [1, 0, 0, 0]).all()  # "none" at episode start
    assert (obs[:, OBS["own_velocity"]] == 0).all()
    state = plaza.state()
    np.testing.assert_allclose(obs[:, OBS["own_position"]], state["pos"] / 10.0, atol=1e-6)


def test_landmarks_are_in_the_local_frame() -> None:
    plaza = plaza_with(TaskSpec.make("reach_landmark", body=STILL_BODY))
    # Facing +z from the origin: the local frame is the world frame.
    obs = observe_at(plaza, 0.0, 0.0, 0.0)
    np.testing.assert_allclose(obs[OBS["landmarks"]], np.ravel(contract.LANDMARKS) / 10, atol=1e-6)
    # Facing +x (yaw +90 degrees): landmark (6, 6) is 6 m ahead and 6 m to the left.
    obs = observe_at(plaza, 0.0, 0.0, math.pi / 2)
    np.testing.assert_allclose(obs[OBS["landmarks"]][2:4], [-0.6, 0.6], atol=1e-6)
    # Arbitrary pose: lateral = dx cos h - dz sin h, forward = dx sin h + dz cos h.
    x, z, h = -1.0, -5.0, 2.3
    obs = observe_at(plaza, x, z, h)
    for i, (lx, lz) in enumerate(contract.LANDMARKS):
        dx, dz = lx - x, lz - z
        expected = [dx * math.cos(h) - dz * math.sin(h), dx * math.sin(h) + dz * math.cos(h)]
        np.testing.assert_allclose(
            obs[OBS["landmarks"]][2 * i : 2 * i + 2], np.array(expected) / 10, atol=1e-6
        )
    np.testing.assert_allclose(obs[OBS["own_position"]], [-0.1, -0.5], atol=1e-6)


def test_last_landmark_remembers_the_landmark_touched_last_this_episode() -> None:
    plaza = plaza_with(TaskSpec.make("patrol", body=STILL_BODY))
    radius = contract.LANDMARK_TOUCH_RADIUS
    (x1, z1), (x2, z2) = contract.LANDMARKS[1], contract.LANDMARKS[2]
    assert list(observe_at(plaza, x1 + 0.9 * radius, z1, 0.0)[OBS["last_landmark"]]) == [0, 1, 0]
    # Walking away keeps it; coming close to another, but not within the radius, too.
    assert list(observe_at(plaza, 0.0, 0.0, 1.0)[OBS["last_landmark"]]) == [0, 1, 0]
    assert list(observe_at(plaza, x2, z2 + 1.1 * radius, 0.0)[OBS["last_landmark"]]) == [0, 1, 0]
    assert list(observe_at(plaza, x2, z2 + 0.5, 0.0)[OBS["last_landmark"]]) == [0, 0, 1]
    while True:
        result = plaza.step(*still(1))
        if result.done[0]:
            break
    assert list(result.terminal_obs[0, OBS["last_landmark"]]) == [0, 0, 1]
    # A new episode forgets it, unless the avatar spawned touching a landmark.
    last = int(plaza.state()["last_landmark"][0])
    spawn = complex(*plaza.state()["pos"][0])
    touching = [abs(spawn - complex(*lm)) <= radius for lm in contract.LANDMARKS]
    assert last == (touching.index(True) if any(touching) else -1)
    assert list(result.obs[0, OBS["last_landmark"]]) == [float(i == last) for i in range(3)]


def test_visitor_fields_match_the_state() -> None:
    plaza = plaza_with(TaskSpec.make("follow_visitor", body=STILL_BODY))
    obs = observe_at(plaza, 1.0, 2.0, -0.7)
    state = plaza.state()
    v = state["visitor_pos"][0] - state["pos"][0]
    h = state["heading"][0]
    local = [v[0] * math.cos(h) - v[1] * math.sin(h), v[0] * math.sin(h) + v[1] * math.cos(h)]
    np.testing.assert_allclose(obs[OBS["visitor_position"]], np.array(local) / 10, atol=1e-6)
    assert obs[OBS["visitor_distance"]][0] == pytest.approx(np.hypot(*v) / 10, abs=1e-6)
    vel = state["visitor_vel"][0]
    assert np.hypot(*vel) == pytest.approx(0.9, abs=1e-6)  # a walking visitor
    assert np.hypot(*obs[OBS["visitor_velocity"]]) == pytest.approx(0.9 / 2, abs=1e-6)
    assert obs[OBS["visitor_gesture"]].sum() == 1.0


def test_rays_hit_walls_and_obstacles_at_the_expected_distance() -> None:
    plaza = plaza_with(TaskSpec.make("reach_landmark", body=STILL_BODY))
    rays = observe_at(plaza, 0.0, 8.0, 0.0)[OBS["rays"]] * contract.RAY_LENGTH
    assert rays[0] == pytest.approx(2.0, abs=1e-5)  # forward: the wall at z = 10
    assert rays[1] == pytest.approx(2.0 * math.sqrt(2), abs=1e-5)  # 45 degrees left
    assert rays[2] == pytest.approx(10.0, abs=1e-5)  # left: wall 10 m away = out of range
    assert rays[4] == pytest.approx(8.0 - 3.5 - 0.7, abs=1e-5)  # back: obstacle (0, 3.5, r 0.7)
    assert rays[6] == pytest.approx(10.0, abs=1e-5)  # right
    rays = observe_at(plaza, 8.5, 1.5, math.pi / 2)[OBS["rays"]] * contract.RAY_LENGTH
    assert rays[0] == pytest.approx(1.5, abs=1e-5)  # facing +x: wall at x = 10
    assert rays[2] == pytest.approx(8.5, abs=1e-5)  # left = +z: wall at z = 10
    assert rays[4] == pytest.approx(8.5 - 3.5 - 0.8, abs=1e-5)  # back: obstacle (3.5, 1.5, r 0.8)
    assert rays[6] == pytest.approx(10.0, abs=1e-5)  # right = -z: 11.5 m, out of range


def test_time_left_runs_from_one_to_zero_and_the_episode_ends_at_200() -> None:
    plaza = Plaza(num_areas=2, seed=3)
    plaza.set_defaults({"family": 1})
    obs, _ = plaza.reset()
    seen = [obs[0, OBS["time_left"]][0]]
    for step in range(1, contract.MAX_EPISODE_STEPS + 1):
        result = plaza.step(*still(2))
        if step < contract.MAX_EPISODE_STEPS:
            assert not result.done.any() and not result.finished
            seen.append(result.obs[0, OBS["time_left"]][0])
    assert seen[0] == 1.0 and seen[-1] == 0.0 and len(seen) == contract.MAX_EPISODE_STEPS
    assert np.all(np.diff(seen) < 0)
    assert result.done.all() and result.interrupted.all()
    assert (result.terminal_obs[:, OBS["time_left"]] == 0.0).all()
    assert (result.obs[:, OBS["time_left"]] == 1.0).all()  # already the next episode
    assert [(s.area, s.length, s.family) for s in result.finished] == [
        (0, 200, "follow_visitor"),
        (1, 200, "follow_visitor"),
    ]


# ============================================================================ actions
def test_gestures_are_masked_while_fast_and_a_masked_gesture_is_none() -> None:
    plaza = plaza_with(TaskSpec.make("reach_landmark", body=STILL_BODY))
    plaza.place_avatar(0, 0.0, -3.0, 0.0)
    result = plaza.step(np.array([[1.0, 0.0]]), np.array([2]))  # allowed: was standing
    assert result.obs[0, OBS["own_gesture"]].tolist() == [0, 0, 1, 0]
    assert result.mask[0].tolist() == [False, True, True, True]  # now at top speed
    assert plaza.state()["speed"][0] == pytest.approx(2.0)
    result = plaza.step(np.array([[0.4, 0.0]]), np.array([3]))  # masked -> treated as none
    assert result.obs[0, OBS["own_gesture"]].tolist() == [1, 0, 0, 0]
    assert result.mask[0].tolist() == [False, False, False, False]  # 0.8 m/s <= 1.0 m/s
    result = plaza.step(np.array([[0.0, 0.0]]), np.array([3]))
    assert result.obs[0, OBS["own_gesture"]].tolist() == [0, 0, 0, 1]
    # Backwards is allowed at half speed and counts for the mask by its magnitude.
    result = plaza.step(np.array([[-1.0, 0.0]]), np.array([0]))
    assert plaza.state()["speed"][0] == pytest.approx(-1.0)
    assert not result.mask[0].any()


def test_bad_actions_are_sanitised() -> None:
    task = TaskSpec.make("follow_visitor", body=(2.0, 3.0, 0.1))
    clean, dirty = plaza_with(task, 4, seed=5), plaza_with(task, 4, seed=5)
    bad = np.array([[np.nan, 0.5], [np.inf, -np.inf], [5.0, -7.0], [0.3, 0.2]])
    good = np.array([[0.0, 0.5], [0.0, 0.0], [1.0, -1.0], [0.3, 0.2]])
    for _ in range(3):
        a = clean.step(good, np.array([0, 0, 0, 1]))
        b = dirty.step(bad, np.array([7, -1, 0, 1]))
        np.testing.assert_array_equal(a.obs, b.obs)
        np.testing.assert_array_equal(a.reward, b.reward)
    b = dirty.step(bad, np.array([np.nan, 2.0, 1.0, 0.0]))  # float gestures with a NaN
    assert np.isfinite(b.obs).all()
    with pytest.raises(ValueError, match="shape"):
        dirty.step(np.zeros((3, 2)), np.zeros(4))


def test_bodies_cannot_leave_the_plaza_or_enter_obstacles() -> None:
    plaza = Plaza(num_areas=16, seed=2)
    rng = np.random.default_rng(0)
    for _ in range(400):
        plaza.step(*scripted.random_actions(rng, 16))
        pos = plaza.state()["pos"]
        assert (np.abs(pos) <= 10.0 - contract.AVATAR_RADIUS + 1e-9).all()
        for x, z, r in contract.OBSTACLES:
            assert (
                np.hypot(pos[:, 0] - x, pos[:, 1] - z) >= r + contract.AVATAR_RADIUS - 1e-9
            ).all()


# ============================================================================ determinism
def run(seed: int, steps: int = 260) -> tuple[np.ndarray, np.ndarray]:
    plaza = Plaza(num_areas=6, agents_per_area=2, seed=seed)
    rng = np.random.default_rng(42)
    obs, rewards = [plaza.reset()[0]], []
    for _ in range(steps):
        result = plaza.step(*scripted.random_actions(rng, plaza.n_agents))
        obs.append(result.obs)
        rewards.append(result.reward)
    return np.stack(obs), np.stack(rewards)


def test_same_seed_same_actions_is_bit_identical_and_seeds_differ() -> None:
    obs_a, rew_a = run(seed=11)
    obs_b, rew_b = run(seed=11)
    assert obs_a.tobytes() == obs_b.tobytes() and rew_a.tobytes() == rew_b.tobytes()
    obs_c, _ = run(seed=12)
    assert not np.array_equal(obs_a, obs_c)


# ============================================================================ episodes and tasks
def test_greet_success_ends_the_episode_early() -> None:
    greet = TaskSpec.make(
        "greet_visitor", {"greet_gesture": 2, "comfort_distance": 1.5}, STILL_BODY
    )
    plaza = Plaza(num_areas=2, agents_per_area=2, seed=0)
    plaza.assign_task(0, greet)
    plaza.assign_task(1, TaskSpec.make("follow_visitor"))
    plaza.reset()
    for _ in range(contract.MAX_EPISODE_STEPS - 1):
        result = plaza.step(*scripted.scripted_actions(plaza))
        if result.done.any():
            break
    assert result.done.tolist() == [True, True, False, False]  # only the greeting area ends
    assert [(s.area, s.family) for s in result.finished] == [(0, "greet_visitor")] * 2
    assert 0 < result.finished[0].length < contract.MAX_EPISODE_STEPS
    greeters = [s.agent for s in result.finished if s.success]
    assert greeters
    # A greeter's episode ended by success (not interrupted); an area-mate that did not
    # greet is cut short (interrupted).
    for agent in (0, 1):
        assert result.interrupted[agent] == (agent not in greeters)
    assert result.reward[greeters[0]] >= 0.9  # the success bonus
    assert (result.obs[0:2, OBS["time_left"]] == 1.0).all()  # the next episode has begun
    assert (result.terminal_obs[0:2, OBS["time_left"]] < 1.0).all()


def test_a_wrong_greeting_is_penalised_and_the_visitor_stops_listening() -> None:
    task = TaskSpec.make("greet_visitor", {"greet_gesture": 3, "comfort_distance": 1.5}, STILL_BODY)
    plaza = plaza_with(task)
    visitor = plaza.state()["visitor_pos"][0]
    plaza.place_avatar(0, visitor[0], visitor[1] - 1.5, 0.0)  # 1.5 m in front, facing it
    plaza.step(*still(1))
    wrong = plaza.step(np.zeros((1, 2)), np.array([1]))
    right = plaza.step(np.zeros((1, 2)), np.array([3]))
    assert wrong.reward[0] == pytest.approx(-0.5 - 0.01, abs=1e-6)
    assert right.reward[0] == pytest.approx(-0.01, abs=1e-6) and not right.done[0]


def test_assign_task_applies_at_the_next_episode_start_and_sticks() -> None:
    plaza = Plaza(num_areas=3, seed=4)
    plaza.set_defaults({"family": 0})
    plaza.reset()
    task = TaskSpec.make("patrol", {"route": 4}, (1.5, 2.0, 0.0))
    plaza.assign_task(1, task)
    for _ in range(contract.MAX_EPISODE_STEPS - 1):
        plaza.step(*still(3))
        assert plaza.current_tasks()[1].family == "reach_landmark"
    plaza.step(*still(3))  # the 200th decision ends the episode
    assert plaza.current_tasks()[1] == task
    assert plaza.current_tasks()[0].family == "reach_landmark"
    plaza.reset()
    assert plaza.current_tasks()[1] == task  # assignments stick
    assert plaza.state()["top_speed"][1] == 1.5
    plaza.assign_task(1, None)
    plaza.reset()
    assert plaza.current_tasks()[1].family == "reach_landmark"  # back to the defaults


def test_set_defaults() -> None:
    plaza = Plaza(num_areas=12, seed=6)
    ignored = plaza.set_defaults(
        {
            "family": 1,
            "follow_distance": 10.0,
            "top_speed": 2.5,
            "colour": 3.0,
            "turn_rate": float("nan"),
        }
    )
    assert sorted(ignored) == ["colour", "turn_rate"]
    plaza.reset()
    tasks = plaza.current_tasks()
    assert {t.family for t in tasks} == {"follow_visitor"}
    assert {t.params for t in tasks} == {(4.0,)}  # clipped to the contract range
    assert {t.body[0] for t in tasks} == {2.5}
    assert len({t.body[1] for t in tasks}) == 12  # turn_rate still sampled per episode
    assert plaza.set_defaults({"family": 9}) == ["family"]  # out of range: ignored
    plaza.reset()
    assert {t.family for t in plaza.current_tasks()} == {"follow_visitor"}
    assert plaza.set_defaults({"family": -1}) == []
    plaza.reset()
    assert len({t.family for t in plaza.current_tasks()}) > 2


def test_bad_area_index_raises_a_clear_error() -> None:
    plaza = Plaza(num_areas=2)
    for bad in (2, -1, 17):
        with pytest.raises(IndexError, match=r"this plaza has 2 areas \(0\.\.1\)"):
            plaza.assign_task(bad, None)
    with pytest.raises(IndexError, match="integer"):
        plaza.assign_task("1", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        plaza.assign_task(0, "reach_landmark")  # type: ignore[arg-type]


def test_avatars_of_an_area_share_visitor_and_clock() -> None:
    plaza = plaza_with(TaskSpec.make("keep_distance"), num_areas=2, agents_per_area=3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        result = plaza.step(*scripted.random_actions(rng, 6))
    state = plaza.state()
    assert state["area"].tolist() == [0, 0, 0, 1, 1, 1]
    assert state["step"].tolist() == [5] * 6
    for agent in range(6):
        rel = state["visitor_pos"][agent // 3] - state["pos"][agent]
        assert result.obs[agent, OBS["visitor_distance"]][0] == pytest.approx(
            np.hypot(*rel) / 10, abs=1e-6
        )


def test_reach_landmark_reward_formula() -> None:
    plaza = plaza_with(TaskSpec.make("reach_landmark", {"landmark": 1}, STILL_BODY))
    plaza.place_avatar(0, 6.0, 5.5, 0.0)  # 0.5 m from landmark 1
    plaza.step(*still(1))
    r = plaza.step(*still(1)).reward[0]
    assert r == pytest.approx(0.5 - 0.01, abs=1e-6)  # arrived bonus minus time cost
    r = plaza.step(np.array([[1.0, 0.0]]), np.zeros(1, np.int64)).reward[0]  # 0.2 m closer
    assert r == pytest.approx(0.5 * 0.2 + 0.5 - 0.01, abs=1e-6)


def test_assigned_tasks_are_validated() -> None:
    plaza = Plaza(num_areas=1)
    plaza.assign_task(0, TaskSpec("reach_landmark", (7.0,), (9.0, 0.0, 1.0)))  # built by hand
    plaza.reset()
    assert plaza.current_tasks()[0] == TaskSpec("reach_landmark", (2.0,), (3.0, 1.5, 0.2))
    with pytest.raises(ValueError, match="unknown scenario family"):
        plaza.assign_task(0, TaskSpec("dance_off", ()))


def test_the_visitor_cue_does_not_give_the_preferred_gesture_away() -> None:
    def cues(preferred: int) -> np.ndarray:
        task = TaskSpec.make("greet_visitor", {"greet_gesture": preferred, "comfort_distance": 2.0})
        plaza = plaza_with(task, num_areas=8, seed=9)
        shown = [
            plaza.step(*still(8)).obs[:, OBS["visitor_gesture"]].argmax(axis=1) for _ in range(150)
        ]
        return np.array(shown)

    wave, dance = cues(1), cues(3)
    np.testing.assert_array_equal(wave, dance)  # the same cues whatever the preference
    assert 0.05 < (wave > 0).mean() < 0.4 and set(np.unique(wave)) == {0, 1, 2, 3}
