"""Collecting in the worlds' worker processes (`ParallelTaskEnv.collect_sharded`,
`training.common.TaskPolicy`) and collecting ahead of the learner (`training.prefetch`)."""

from __future__ import annotations

import os
import pickle
import signal

import numpy as np
import pytest
import torch
from tests.test_rollouts import alive, assert_well_formed, follow_tasks, world_config

from avatar_meta import contract
from avatar_meta.envs.inprocess import PlazaEnvConfig, PlazaTaskEnv
from avatar_meta.envs.rollouts import CollectStats, PolicyFn
from avatar_meta.rl import Policy, PolicySpec
from avatar_meta.training.common import TaskPolicy, per_task_policy_fn
from avatar_meta.training.prefetch import Prefetcher, collect_batch

OBS = contract.OBSERVATION_SIZE


def task_policy(n_tasks: int, seed: int = 0) -> TaskPolicy:
    """Distinct random weights per task, so a row acting for the wrong task shows."""
    policy = Policy(PolicySpec())
    rows = [policy.init(seed=s)[0] for s in range(n_tasks)]
    stacked = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    return TaskPolicy.of(policy.spec, stacked, policy.init(seed=0)[1], seed)


def test_task_policy_is_per_task_policy_fn_as_data() -> None:
    """It pickles by value, acts exactly as `per_task_policy_fn` on the same rows and noise
    stream, and a shard renumbers its tasks."""
    tp = task_policy(4, seed=3)
    again = pickle.loads(pickle.dumps(tp))
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(6, OBS)).astype(np.float32)
    mask = np.zeros((6, 4), dtype=bool)
    rows = np.array([0, 1, 2, 3, 2, 1])
    stacked = {k: torch.from_numpy(v) for k, v in tp.stacked.items()}
    buffers = {k: torch.as_tensor(v) for k, v in tp.buffers.items()}
    generator = torch.Generator().manual_seed(3 * 1_000_003 + 1)
    direct = per_task_policy_fn(Policy(tp.spec), stacked, buffers, generator)(rows, obs, mask)
    shipped = again.policy_fn(1)(rows, obs, mask)
    for name in ("cont", "gesture", "log_prob", "value"):
        np.testing.assert_array_equal(getattr(direct, name), getattr(shipped, name), name)
    shard = tp.shard(np.array([2, 0]))
    local = np.array([0, 1, 0, 1])
    a = shard.policy_fn(5)(local, obs[:4], mask[:4])
    b = tp.policy_fn(5)(np.array([2, 0, 2, 0]), obs[:4], mask[:4])
    np.testing.assert_array_equal(a.log_prob, b.log_prob)
    other = tp.policy_fn(5)(np.array([1, 3, 1, 3]), obs[:4], mask[:4])
    assert not np.allclose(a.log_prob, other.log_prob)  # the rows' weights really differ


def recomputed_log_probs(tp: TaskPolicy, row: int, rollout) -> np.ndarray:
    policy = Policy(tp.spec)
    params = {k: torch.from_numpy(v[row]) for k, v in tp.stacked.items()}
    buffers = {k: torch.as_tensor(v) for k, v in tp.buffers.items()}
    valid = rollout.valid
    out = policy.forward(
        params, buffers, torch.from_numpy(rollout.obs[valid]), torch.from_numpy(rollout.mask[valid])
    )
    gesture = torch.from_numpy(rollout.gesture[valid]).unsqueeze(-1)
    lp = policy.dist_log_prob(out, torch.from_numpy(rollout.cont_action[valid]), gesture)
    return lp.detach().numpy()


def test_workers_act_for_their_share_of_the_tasks() -> None:
    """Two real worlds, each worker acting itself: rollouts come back in task order, each
    task's actions were drawn from its own row of the policy."""
    from avatar_meta.envs.workers import ParallelTaskEnv

    tasks = follow_tasks(1.0, 1.5, 2.0, 2.5, 3.0)
    tp = task_policy(len(tasks), seed=1)
    env = ParallelTaskEnv.spread(world_config(3), 2)
    try:
        stats = CollectStats()
        rollouts = env.collect_sharded(tp, tasks, 2, stats=stats)
    finally:
        env.close()
    assert [r.task for r in rollouts] == tasks
    assert [r.task_index for r in rollouts] == list(range(len(tasks)))
    for r in rollouts:
        assert_well_formed(r, 2)
    assert stats.kept_steps == sum(r.env_steps for r in rollouts) and stats.seconds > 0
    for i, r in enumerate(rollouts):
        valid = r.log_prob[r.valid]
        np.testing.assert_allclose(recomputed_log_probs(tp, i, r), valid, atol=1e-4)
        neighbour = recomputed_log_probs(tp, (i + 1) % len(tasks), r)
        assert not np.allclose(neighbour, valid, atol=1e-4)


def test_a_dead_worker_is_replaced_and_a_dead_world_restarted() -> None:
    """Worker 1 is gone before the call: it is replaced and its share collected; worker 0's
    world is gone: that worker restarts it on its own. Nothing is lost."""
    from avatar_meta.envs.workers import ParallelTaskEnv

    tasks = follow_tasks(1.0, 2.0, 3.0, 4.0)
    env = ParallelTaskEnv.spread(world_config(2), 2)
    try:
        dead_world = env.world_pids[0]
        os.kill(env._procs[1].pid, signal.SIGKILL)
        env._procs[1].join(timeout=10)
        assert dead_world is not None
        os.kill(dead_world, signal.SIGKILL)
        stats = CollectStats()
        rollouts = env.collect_sharded(task_policy(4), tasks, 1, stats=stats)
        assert [r.task for r in rollouts] == tasks
        assert [r.num_episodes for r in rollouts] == [1, 1, 1, 1]
        assert stats.retries >= 2 and stats.errors  # the worker, then the world
        assert env.world_pids[0] != dead_world and alive(env.world_pids[0])
    finally:
        env.close()


class Broken:
    """A ShardablePolicy whose policy raises on the first step."""

    def shard(self, index: np.ndarray) -> Broken:
        return self

    def policy_fn(self, stream: int) -> PolicyFn:
        def fn(task_index: np.ndarray, obs: np.ndarray, mask: np.ndarray):
            raise ValueError("broken policy")

        return fn


def test_prefetcher_collects_in_the_background_and_reraises() -> None:
    env = PlazaTaskEnv(PlazaEnvConfig(num_areas=4, seed=0))
    tasks = follow_tasks(1.0, 2.0, 3.0)
    keys = ["a", "b", "c"]
    with Prefetcher(env, episodes=1) as ahead:
        assert ahead.take() is None  # nothing started
        ahead.start(task_policy(3), tasks, keys)
        with pytest.raises(RuntimeError, match="in flight"):
            ahead.start(task_policy(3), tasks, keys)
        batch = ahead.take()
        assert batch is not None and batch.tasks == tasks and batch.keys == keys
        assert [r.num_episodes for r in batch.rollouts] == [1, 1, 1]
        assert batch.stats.kept_steps == sum(r.env_steps for r in batch.rollouts)
        ahead.start(Broken(), tasks, keys)
        with pytest.raises(ValueError, match="broken policy"):
            ahead.take()
        ahead.start(Broken(), tasks, keys)  # left in flight: close() waits and drops it
    here = collect_batch(env, task_policy(3), tasks, keys, 2)  # no workers: collects here
    assert [r.num_episodes for r in here.rollouts] == [2, 2, 2]
