"""Rollout collection: the TaskEnv contract, per-task grouping, episode boundaries, failure
recovery, and the protocol path (stock UnityEnvironment + the built-in world as a real
subprocess) against the in-process plaza, number for number."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import pytest

from avatar_meta import contract
from avatar_meta.envs.inprocess import PlazaEnvConfig, PlazaTaskEnv
from avatar_meta.envs.rollouts import (
    ActionBatch,
    CollectError,
    CollectStats,
    EnvStep,
    RandomPolicy,
    TaskRollout,
    WorldFailure,
    assign_areas,
    collect,
)
from avatar_meta.tasks import Task, TaskDistribution, make_task

OBS = contract.OBSERVATION_SIZE
FIELDS = ("obs", "mask", "cont_action", "gesture", "reward", "done", "interrupted", "valid")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
_USED: set[int] = set()


@pytest.fixture(params=["fast", "stock"], autouse=True)
def protocol_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test on both protocol paths (issue 7): AVATAR_META_PROTOCOL is inherited by
    the world process and read by MLAgentsTaskEnv (stock `UnityEnvironment` stays stock)."""
    monkeypatch.setenv("AVATAR_META_PROTOCOL", request.param)
    return str(request.param)


def free_port_block(size: int) -> int:
    """A base port such that base .. base+size-1 are free on loopback now (and unused here)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + size > 65535 or _USED & set(range(base, base + size)):
            continue
        socks = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        _USED.update(range(base, base + size))
        return base
    raise RuntimeError("no free block of ports")


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has exited
    except OSError:
        return False


def landmark_policy(targets: Sequence[int]) -> RandomPolicy:
    """Steer each row to landmark targets[task_index] (turn > 0 turns towards local +x)."""

    class Steer(RandomPolicy):
        def __call__(self, task_index: np.ndarray, obs: np.ndarray, mask: np.ndarray):
            out = super().__call__(task_index, obs, mask)
            lm = obs[:, contract.OBS["landmarks"]].reshape(-1, 3, 2)
            goal = lm[np.arange(len(obs)), np.asarray(targets)[task_index]]
            angle = np.arctan2(goal[:, 0], goal[:, 1])
            out.cont[:, 1] = np.clip(2.0 * angle, -1, 1)
            out.cont[:, 0] = np.where(np.abs(angle) < 0.6, 1.0, 0.2)
            out.gesture[:] = 0
            return out

    return Steer(0)


def world_config(num_areas: int, **kw):
    from avatar_meta.envs.mlagents_env import WorldConfig

    kw.setdefault("base_port", free_port_block(8))
    return WorldConfig(num_areas=num_areas, timeout_wait=20, **kw)


def assert_well_formed(r: TaskRollout, episodes: int) -> None:
    e, t = r.reward.shape
    assert e == episodes and r.num_episodes == episodes
    assert r.obs.shape == (e, t, OBS) and r.obs.dtype == np.float32
    assert r.mask.shape == (e, t, 4) and r.mask.dtype == bool
    assert r.cont_action.shape == (e, t, 2) and r.gesture.shape == (e, t)
    for name in ("log_prob", "value", "done", "interrupted", "valid"):
        assert getattr(r, name).shape == (e, t)
    assert r.terminal_obs.shape == (e, OBS) and r.last_value.shape == (e,)
    assert (r.valid.sum(axis=1) == r.length).all() and r.done.sum() == e
    assert r.done[np.arange(e), r.length - 1].all()
    np.testing.assert_allclose(r.episode_return, (r.reward * r.valid).sum(axis=1), rtol=1e-5)
    assert r.env_steps == int(r.length.sum())
    assert not r.reward[~r.valid].any()


# ---------------------------------------------------------------------------------------------
# fast: a fake env with uneven episode lengths, failure injection
# ---------------------------------------------------------------------------------------------
class FakeEnv:
    """Area a ends its episodes every `3 + a` steps; reward = the area's task parameter."""

    def __init__(
        self, num_areas: int = 3, fail_at: Sequence[int] = (), recover_fails: int = 0
    ) -> None:
        self.recover_fails = recover_fails
        self.num_areas = self.num_slots = num_areas
        self.slot_area = np.arange(num_areas)
        self.fail_at, self.calls, self.recovered = list(fail_at), 0, 0
        self.pending: list[Task | None] = [None] * num_areas
        self.active = list(self.pending)

    def set_tasks(self, tasks: Sequence[Task | None]) -> None:
        self.pending = [t if t is not None else p for t, p in zip(tasks, self.pending, strict=True)]

    def reset(self) -> tuple[np.ndarray, np.ndarray]:
        self.t = np.zeros(self.num_areas, dtype=np.int64)
        self.active = list(self.pending)
        return self._obs(), np.zeros((self.num_areas, 4), bool)

    def _obs(self) -> np.ndarray:
        obs = np.zeros((self.num_areas, OBS), np.float32)
        obs[:, 0] = self.t
        return obs

    def step(self, cont: np.ndarray, gesture: np.ndarray) -> EnvStep:
        self.calls += 1
        if self.fail_at and self.calls == self.fail_at[0]:
            self.fail_at.pop(0)
            raise WorldFailure("fake world died")
        self.t += 1
        done = self.t >= 3 + np.arange(self.num_areas)
        reward = np.array([t.params[0] if t else -1.0 for t in self.active], np.float32)
        terminal = np.where(done[:, None], self._obs(), 0).astype(np.float32)
        self.t[done] = 0
        mask = np.zeros((self.num_areas, 4), bool)
        return EnvStep(self._obs(), reward, done, done.copy(), terminal, mask)

    def recover(self) -> None:
        if self.recover_fails:
            self.recover_fails -= 1
            raise WorldFailure("restart failed")
        self.recovered += 1

    def close(self) -> None:
        pass


def follow_tasks(*distances: float) -> list[Task]:
    return [make_task("follow_visitor", (d,), task_id=f"f{d}") for d in distances]


def test_assign_areas_serves_tasks_in_order() -> None:
    assert assign_areas(np.array([2, 1]), np.array([1, 1, 1, 1])).tolist() == [0, 0, 1, -1]
    assert assign_areas(np.array([0, 3]), np.array([2, 2])).tolist() == [1, 1]
    assert assign_areas(np.array([1, 1, 1]), np.array([1, 1])).tolist() == [0, 1]


def test_collect_groups_uneven_episodes_per_task() -> None:
    tasks = follow_tasks(1.0, 2.0, 3.0, 4.0)
    stats = CollectStats()
    rollouts = collect(FakeEnv(), RandomPolicy(0), tasks, 2, stats=stats)
    assert [r.task for r in rollouts] == tasks and [r.task_index for r in rollouts] == [0, 1, 2, 3]
    for r in rollouts:
        assert_well_formed(r, 2)
        assert (r.reward[r.valid] == r.task.params[0]).all()  # every step came from its task
        # the observation counts steps since the episode start: boundaries are exact
        for e in range(2):
            assert r.obs[e, : r.length[e], 0].tolist() == list(range(r.length[e]))
            assert r.terminal_obs[e, 0] == r.length[e]  # the observation after the last action
    assert stats.kept_steps == sum(r.env_steps for r in rollouts) and stats.retries == 0
    # round 1: areas 0, 1 -> task 0 (lengths 3, 4), area 2 -> task 1 (5); round 2: area 0 -> 1
    assert rollouts[0].length.tolist() == [3, 4] and rollouts[1].length.tolist() == [5, 3]


def test_batches_carry_each_step_reward_and_next_observation() -> None:
    """`rollout_to_batch` (what the task encoder reads): the next observation of a step is
    the following step's, and the world's terminal observation after an episode's last."""
    from avatar_meta.training.common import rollout_to_batch

    for r in collect(FakeEnv(), RandomPolicy(0), follow_tasks(1.5, 2.5), 2):
        batch = rollout_to_batch(r, 0.99, 0.95)
        assert batch.next_obs.shape == batch.obs.shape
        assert (batch.next_obs[:, 0] == batch.obs[:, 0] + 1).all()  # obs counts steps
        assert (batch.reward == r.task.params[0]).all()


def test_collect_repeats_round_after_world_failure() -> None:
    env = FakeEnv(fail_at=[2])
    stats = CollectStats()
    rollouts = collect(env, RandomPolicy(0), follow_tasks(1.0, 2.0), 1, stats=stats)
    assert env.recovered == 1 and stats.retries == 1 and "fake world died" in stats.errors[0]
    assert [r.num_episodes for r in rollouts] == [1, 1]


def test_failed_restart_counts_as_a_failure() -> None:
    env = FakeEnv(fail_at=[2], recover_fails=1)
    stats = CollectStats(retries=5)  # counters accumulate; the limit is per collect() call
    collect(env, RandomPolicy(0), follow_tasks(1.0), 1, max_retries=2, stats=stats)
    assert env.recovered == 1 and stats.retries == 7 and stats.errors[-1] == "restart failed"
    with pytest.raises(CollectError, match="failed 2 times"):
        collect(
            FakeEnv(fail_at=[2], recover_fails=1),
            RandomPolicy(0),
            follow_tasks(1.0),
            1,
            max_retries=1,
        )


def test_collect_gives_up_with_clear_error() -> None:
    env = FakeEnv(fail_at=[1, 2, 3])
    with pytest.raises(CollectError, match="failed 3 times.*max_retries=2"):
        collect(env, RandomPolicy(0), follow_tasks(1.0), 1, max_retries=2)


def test_unity_style_fresh_episode_ids_keep_their_slots() -> None:
    """Unity sends a new id per episode: the new ids take over the ended ids' slots."""
    from avatar_meta.envs.mlagents_env import MLAgentsTaskEnv

    env = MLAgentsTaskEnv.__new__(MLAgentsTaskEnv)
    env._slot_of = {10: 0, 11: 1, 12: 2}
    env._slot_area = np.arange(3)
    env._decision_ids = np.array([10, 11, 12])
    env._decision_slots = np.array([0, 1, 2])

    def steps(ids: list[int], rows: list[int], reward: list[float], interrupted=None):
        obs = np.zeros((len(ids), OBS), np.float32)
        obs[:, 0] = rows  # tag each observation with the slot it must land in
        return SimpleNamespace(
            agent_id=np.array(ids),
            obs=[obs],
            reward=np.array(reward, np.float32),
            interrupted=np.array(interrupted or [False] * len(ids)),
            action_mask=None,
        )

    # agents in slots 0 and 2 end; they come back as ids 14 and 13 (in any order)
    terminal = steps([12, 10], [2, 0], [5.0, 7.0], [True, False])
    decision = steps([11, 14, 13], [1, 2, 0], [1.0, 0.0, 0.0])
    step = env._read_step(decision, terminal)
    assert step.done.tolist() == [True, False, True]
    assert step.interrupted.tolist() == [False, False, True]
    assert step.reward.tolist() == [7.0, 1.0, 5.0]
    assert step.obs[:, 0].tolist() == [0, 1, 2] and step.terminal_obs[[0, 2], 0].tolist() == [0, 2]
    assert env._slot_of == {11: 1, 13: 0, 14: 2}


# ---------------------------------------------------------------------------------------------
# in-process plaza
# ---------------------------------------------------------------------------------------------
LANDMARK_TASKS = [make_task("reach_landmark", (k,), task_id=f"lm{k}") for k in range(3)]


def landmark_returns(env, wrong: bool) -> np.ndarray:
    targets = [(k + 1) % 3 if wrong else k for k in range(3)]
    rollouts = collect(env, landmark_policy(targets), LANDMARK_TASKS, 2)
    for r in rollouts:
        assert_well_formed(r, 2)
    return np.array([r.episode_return.mean() for r in rollouts])


def test_inprocess_tasks_reach_their_areas() -> None:
    env = PlazaTaskEnv(PlazaEnvConfig(num_areas=6, seed=1))
    right, wrong = landmark_returns(env, False), landmark_returns(env, True)
    assert (right > wrong + 20.0).all(), (right, wrong)


def test_inprocess_agents_per_area() -> None:
    env = PlazaTaskEnv(PlazaEnvConfig(num_areas=2, agents_per_area=2, seed=0))
    assert env.slot_area.tolist() == [0, 0, 1, 1]
    rollouts = collect(env, RandomPolicy(0), follow_tasks(1.0, 2.0, 3.0), 3)
    assert [r.num_episodes for r in rollouts] == [3, 3, 3]


# ---------------------------------------------------------------------------------------------
# through the protocol (real world subprocesses)
# ---------------------------------------------------------------------------------------------
def test_protocol_matches_inprocess_exactly() -> None:
    from avatar_meta.envs.mlagents_env import MLAgentsTaskEnv

    tasks = TaskDistribution(seed=0, n_train=12, n_heldout=0).train_tasks()[::2]  # all families
    results = {}
    with MLAgentsTaskEnv(world_config(4, seed=3)) as remote:
        assert remote.num_slots == 4 and remote.slot_area.tolist() == [0, 1, 2, 3]
        results["protocol"] = collect(remote, RandomPolicy(7), tasks, 2)
    results["inprocess"] = collect(
        PlazaTaskEnv(PlazaEnvConfig(4, seed=3)), RandomPolicy(7), tasks, 2
    )
    for a, b in zip(results["protocol"], results["inprocess"], strict=True):
        assert a.task == b.task
        assert_well_formed(a, 2)
        for name in (*FIELDS, "terminal_obs", "length", "episode_return"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert a.interrupted[np.arange(2), a.length - 1].all() or a.task.family == "greet_visitor"


def test_protocol_tasks_reach_their_areas() -> None:
    from avatar_meta.envs.mlagents_env import MLAgentsTaskEnv

    with MLAgentsTaskEnv(world_config(6, seed=1)) as env:
        right, wrong = landmark_returns(env, False), landmark_returns(env, True)
    assert (right > wrong + 20.0).all(), (right, wrong)


def test_parallel_two_workers_and_clean_close() -> None:
    from avatar_meta.envs.workers import ParallelTaskEnv

    env = ParallelTaskEnv.spread(world_config(3), 2)
    pids = env.world_pids
    try:
        assert env.num_slots == 6 and env.slot_area.tolist() == [0, 1, 2, 3, 4, 5]
        assert len(set(pids)) == 2 and all(alive(p) for p in pids)
        right, wrong = landmark_returns(env, False), landmark_returns(env, True)
        assert (right > wrong + 20.0).all(), (right, wrong)
    finally:
        env.close()
    time.sleep(0.2)
    assert not any(alive(p) for p in pids), "a world outlived close()"


def kill_on_call(get_pid, call: int):
    """A random policy that SIGKILLs a world at its `call`-th invocation."""
    inner, count, killed = RandomPolicy(0), [0], []

    def policy(task_index: np.ndarray, obs: np.ndarray, mask: np.ndarray) -> ActionBatch:
        count[0] += 1
        if count[0] == call:
            pid = get_pid()
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        return inner(task_index, obs, mask)

    return policy, killed


def test_restart_after_world_killed_mid_collection() -> None:
    from avatar_meta.envs.workers import ParallelTaskEnv

    env = ParallelTaskEnv.spread(world_config(2), 2)
    try:
        policy, killed = kill_on_call(lambda: env.world_pids[1], 60)
        stats = CollectStats()
        rollouts = collect(env, policy, follow_tasks(1.0, 2.0, 3.0), 2, stats=stats)
        assert killed and stats.retries == 1 and "SIGKILL" in stats.errors[0]
        assert [r.num_episodes for r in rollouts] == [2, 2, 2]
        for r in rollouts:
            assert_well_formed(r, 2)
        new_pid = env.world_pids[1]
        assert new_pid != killed[0] and alive(new_pid) and not alive(killed[0])
    finally:
        env.close()


def test_restart_after_worker_process_killed() -> None:
    """The worker (trainer side) dies: a new worker and world replace it on fresh ports."""
    from avatar_meta.envs.workers import ParallelTaskEnv

    env = ParallelTaskEnv.spread(world_config(2), 2)
    old_world = env.world_pids[0]
    try:
        policy, killed = kill_on_call(lambda: env._procs[0].pid, 30)
        rollouts = collect(env, policy, follow_tasks(1.0, 2.0), 2)
        assert killed and [r.num_episodes for r in rollouts] == [2, 2]
        time.sleep(1.5)  # the orphaned world notices its parent is gone (watchdog, 0.5 s)
        assert not alive(old_world)
    finally:
        env.close()


def test_single_env_restart_after_kill() -> None:
    from avatar_meta.envs.mlagents_env import MLAgentsTaskEnv

    env = MLAgentsTaskEnv(world_config(2))
    pids = [env.world_pid]
    try:
        first_port = env.port
        policy, killed = kill_on_call(lambda: env.world_pid, 10)
        rollouts = collect(env, policy, follow_tasks(1.0, 2.0), 1)
        assert killed and env.restarts == 1 and env.port == first_port + 1
        assert [r.num_episodes for r in rollouts] == [1, 1]
        pids.append(env.world_pid)
    finally:
        env.close()
    assert not any(alive(p) for p in pids)
