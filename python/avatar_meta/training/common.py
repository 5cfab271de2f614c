"""Glue between rollouts (numpy, `envs.rollouts`) and the pure torch learners (`rl`, `meta`).

- `make_env(config)` / `env_factory(config)`: the TaskEnv a run uses (built-in world over the
  protocol, a Unity build, the Editor, or the in-process plaza with `env.inprocess`).
- `shared_policy_fn` / `per_task_policy_fn`: wrap torch params (one set, or one set per task
  stacked on dim 0) into the numpy `PolicyFn` that `collect()` calls; `TaskPolicy` is the
  latter as picklable data, which the worlds' worker processes can run themselves.
- `rollout_to_batch` / `rollouts_to_tasks`: GAE over a task's episodes, flattened into an
  `RLBatch`; task-stacked (padded) for vmap.
- `adapt_step`: one PG inner step for every task of a stack of per-task params (vmap).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avatar_meta.config import RunConfig
from avatar_meta.envs.inprocess import wire_spec
from avatar_meta.envs.rollouts import (
    ActionBatch,
    CollectStats,
    PolicyFn,
    TaskEnv,
    TaskRollout,
    collect,
    collect_shardable,
    has_workers,
)
from avatar_meta.meta.core import inner_grad, map_tasks, select_keys, sgd_step
from avatar_meta.rl import (
    Buffers,
    Params,
    Policy,
    PolicyOutput,
    PolicySpec,
    RLBatch,
    gae,
    make_batch,
)
from avatar_meta.rl.losses import GuidedBatch, LossFn, stack_batches, stack_guided
from avatar_meta.tasks import Task, task_code
from avatar_meta.world.observed_expert import expert_labels

EnvFactory = Callable[[], TaskEnv]


# ---------------------------------------------------------------------------------------------
# environments
# ---------------------------------------------------------------------------------------------
def make_env(
    config: RunConfig, log_folder: str | None = None, policy_public_key: str | None = None
) -> TaskEnv:
    """The TaskEnv described by `config.env` (all worlds' areas concatenated).
    `policy_public_key`: the PEM the built-in world verifies streamed policies with."""
    e = config.env
    if e.inprocess:
        from avatar_meta.envs.inprocess import PlazaEnvConfig, PlazaTaskEnv

        return PlazaTaskEnv(PlazaEnvConfig(num_areas=e.num_envs * e.num_areas, seed=e.seed))
    from avatar_meta.envs.mlagents_env import MLAgentsTaskEnv, WorldConfig

    world = WorldConfig(
        env_path=e.env_path,
        editor=e.editor,
        num_areas=e.num_areas,
        base_port=e.base_port,
        seed=e.seed,
        no_graphics=e.no_graphics,
        timeout_wait=e.timeout_wait,
        log_folder=log_folder,
        policy_public_key=policy_public_key,
    )
    if e.num_envs == 1:
        return MLAgentsTaskEnv(world)
    from avatar_meta.envs.workers import ParallelTaskEnv

    return ParallelTaskEnv.spread(world, e.num_envs)


def env_factory(config: RunConfig, log_folder: str | None = None) -> EnvFactory:
    """A zero-argument callable building the run's TaskEnv (what the baselines receive)."""
    return partial(make_env, config, log_folder)


# ---------------------------------------------------------------------------------------------
# acting
# ---------------------------------------------------------------------------------------------
def _to_batch(res_cont: Tensor, gesture: Tensor, log_prob: Tensor, value: Tensor) -> ActionBatch:
    return ActionBatch(
        res_cont.numpy().astype(np.float32),
        gesture.reshape(gesture.shape[0], -1)[:, 0].numpy().astype(np.int64),
        log_prob.numpy().astype(np.float32),
        value.numpy().astype(np.float32),
    )


def shared_policy_fn(
    policy: Policy, params: Params, buffers: Buffers, generator: torch.Generator
) -> PolicyFn:
    """Every row acts with the same params (the meta-policy before adaptation)."""
    params = {k: v.detach() for k, v in params.items()}

    def fn(task_index: np.ndarray, obs: np.ndarray, mask: np.ndarray) -> ActionBatch:
        res = policy.act(
            params, buffers, torch.from_numpy(obs), torch.from_numpy(mask), generator=generator
        )
        return _to_batch(res.cont_action, res.gesture, res.log_prob, res.value)

    return fn


def per_task_policy_fn(
    policy: Policy, stacked: Params, buffers: Buffers, generator: torch.Generator
) -> PolicyFn:
    """Row b acts with `stacked[name][task_index[b]]` (per-task adapted params, [K, ...]).

    The forward pass is vmapped over rows with per-row weights; sampling follows
    `Policy.act` (Gaussian + masked categorical) outside the vmap. The per-row weights of the
    last few `task_index` arrays are kept: a collection round asks with the same rows at
    every step, and gathering them anew was a fifth of the demo's collection time.
    """
    stacked = {k: v.detach() for k, v in stacked.items()}

    def one(p: Params, o: Tensor, m: Tensor) -> PolicyOutput:
        return policy.forward(p, buffers, o.unsqueeze(0), m.unsqueeze(0))

    batched = torch.func.vmap(one)
    recent: dict[bytes, Params] = {}  # the round's rows, and its episode ends' few rows

    def gathered(task_index: np.ndarray) -> Params:
        index = np.asarray(task_index, dtype=np.int64)
        key = index.tobytes()
        if key not in recent:
            if len(recent) >= 4:
                recent.clear()
            idx = torch.from_numpy(index)
            recent[key] = {k: v[idx] for k, v in stacked.items()}
        return recent[key]

    @torch.no_grad()
    def fn(task_index: np.ndarray, obs: np.ndarray, mask: np.ndarray) -> ActionBatch:
        rows = gathered(task_index)
        raw = batched(rows, torch.from_numpy(obs), torch.from_numpy(mask))
        out = PolicyOutput(raw.mean[:, 0], raw.log_std, raw.logits[:, 0], raw.value[:, 0])
        noise = torch.randn(out.mean.shape, generator=generator, dtype=out.mean.dtype)
        cont = out.mean + noise * out.log_std.exp()
        probs = torch.softmax(out.logits, dim=-1)
        gesture = torch.multinomial(probs, 1, generator=generator)
        log_prob = policy.dist_log_prob(out, cont, gesture)
        return _to_batch(cont, gesture, log_prob, out.value)

    return fn


@dataclass
class TaskPolicy:
    """`per_task_policy_fn`'s inputs as data: per-task parameters stacked [K, ...], the
    normalisation buffers and a seed, as numpy arrays so that it pickles by value. It is the
    `envs.rollouts.ShardablePolicy` that `ParallelTaskEnv.collect_sharded` cuts by task and
    sends to the worlds' worker processes, which act for their tasks themselves."""

    spec: PolicySpec
    stacked: dict[str, np.ndarray]
    buffers: dict[str, Any]
    seed: int
    """Random stream k of the action noise is seeded by (seed, k)."""

    @classmethod
    def of(cls, spec: PolicySpec, stacked: Params, buffers: Buffers, seed: int) -> TaskPolicy:
        """A snapshot (copies) of torch parameters and buffers."""
        return cls(spec, _numpy(stacked), _numpy(buffers), seed)

    def shard(self, index: np.ndarray) -> TaskPolicy:
        rows = np.asarray(index, dtype=np.int64)
        return replace(self, stacked={k: v[rows] for k, v in self.stacked.items()})

    def policy_fn(self, stream: int) -> PolicyFn:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + stream) % 2**63)
        stacked = {k: torch.from_numpy(v) for k, v in self.stacked.items()}
        buffers = {
            k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
            for k, v in self.buffers.items()
        }
        return per_task_policy_fn(Policy(self.spec), stacked, buffers, generator)


def collect_per_task(
    env: TaskEnv,
    policy: Policy,
    stacked: Params,
    buffers: Buffers,
    generator: torch.Generator,
    tasks: Sequence[Task],
    episodes: int,
    stats: CollectStats | None = None,
) -> list[TaskRollout]:
    """`collect` with `per_task_policy_fn(policy, stacked, buffers, generator)`. On an env of
    worker processes (`ParallelTaskEnv`) the workers act for their tasks themselves
    (`collect_sharded`, the action noise seeded by one draw from `generator`): the trainer
    then only waits, instead of computing every step's actions and crossing the pipes."""
    if not has_workers(env):  # acting here with the caller's generator, as always
        act = per_task_policy_fn(policy, stacked, buffers, generator)
        return collect(env, act, tasks, episodes, stats=stats)
    snapshot = TaskPolicy.of(policy.spec, stacked, buffers, derived_seed(generator))
    return collect_shardable(env, snapshot, tasks, episodes, stats=stats)


def derived_seed(generator: torch.Generator) -> int:
    """One draw from `generator`: the seed of a snapshot that acts in another thread or
    process (no generator is shared, and the run stays reproducible)."""
    return int(torch.randint(0, 2**31, (1,), generator=generator))


def _numpy(tensors: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v.detach().numpy().copy() if isinstance(v, Tensor) else v for k, v in tensors.items()
    }


# ---------------------------------------------------------------------------------------------
# rollouts -> RLBatch
# ---------------------------------------------------------------------------------------------
def rollout_to_batch(
    rollout: TaskRollout, gamma: float, lam: float, returns: bool = True
) -> RLBatch:
    """GAE advantages and lambda-returns over one task's episodes, valid steps flattened.
    `returns` False leaves both zero, for losses that read neither (about 1 ms per task of
    time-step loop saved)."""
    t = torch.from_numpy
    if returns:
        adv, ret = gae(
            t(rollout.reward),
            t(rollout.value),
            t(rollout.done),
            torch.zeros(rollout.num_episodes),
            interrupted=t(rollout.interrupted),
            terminal_values=t(rollout.terminal_value),
            gamma=gamma,
            lam=lam,
        )
    else:
        adv = ret = torch.zeros_like(t(rollout.value))
    v = t(rollout.valid)
    return make_batch(
        t(rollout.obs)[v],
        t(rollout.mask)[v],
        t(rollout.cont_action)[v],
        t(rollout.gesture)[v],
        adv[v],
        ret[v],
        t(rollout.log_prob)[v],
        t(rollout.value)[v],
        reward=t(rollout.reward)[v],
        next_obs=t(next_observations(rollout))[v],
    )


def next_observations(rollout: TaskRollout) -> np.ndarray:
    """[E, T, OBS]: the observation after each step (the episode's terminal observation after
    its last step; zeros on padding)."""
    nxt = np.zeros_like(rollout.obs)
    nxt[:, :-1] = rollout.obs[:, 1:]
    last = rollout.length - 1
    nxt[np.arange(rollout.num_episodes), last] = rollout.terminal_obs
    return nxt * rollout.valid[..., None]


def rollouts_to_tasks(rollouts: Sequence[TaskRollout], gamma: float, lam: float) -> RLBatch:
    """Task-stacked, zero-weight-padded RLBatch [K, N_max, ...] for vmap."""
    return stack_batches([rollout_to_batch(r, gamma, lam) for r in rollouts])


def rollouts_to_guided(rollouts: Sequence[TaskRollout], gamma: float, lam: float) -> GuidedBatch:
    """`rollouts_to_tasks` plus the scripted expert's action at every visited state, rebuilt
    from the observations and each rollout's task (`world.observed_expert`), and the task's
    code (`tasks.task_code`) on every row."""
    return stack_guided(guided_parts(rollouts, gamma, lam))


def guided_parts(
    rollouts: Sequence[TaskRollout], gamma: float, lam: float, returns: bool = True
) -> list[GuidedBatch]:
    """`rollouts_to_guided` before stacking: one GuidedBatch [N_k, ...] per task (`returns`
    as in `rollout_to_batch`)."""
    parts = []
    for r in rollouts:
        batch = rollout_to_batch(r, gamma, lam, returns)
        code = torch.from_numpy(task_code(r.task)).expand(batch.obs.shape[0], -1)
        parts.append(GuidedBatch(batch, *expert_rows(r), code))
    return parts


def expert_rows(rollout: TaskRollout) -> tuple[Tensor, Tensor]:
    """The scripted expert's actions at the valid steps of one rollout, in `rollout_to_batch`
    row order: continuous [n, 2] and gesture [n, 1]."""
    cont, gesture = expert_labels(wire_spec(rollout.task), rollout.obs)
    v = rollout.valid
    return torch.from_numpy(cont[v]), torch.from_numpy(gesture[v]).unsqueeze(-1)


def adapt_prefix(config: RunConfig) -> str:
    """Names of the parameters adaptation changes: the actor, or only its task context."""
    return "actor.context" if config.meta.adapt == "context" else "actor."


def mean_returns(rollouts: Sequence[TaskRollout]) -> np.ndarray:
    """[K] mean undiscounted episode return per task."""
    return np.array([float(r.episode_return.mean()) for r in rollouts])


def all_obs(rollouts: Sequence[TaskRollout]) -> Tensor:
    """Every valid observation of these rollouts, [M, OBS] (for the normalisation stats)."""
    return torch.from_numpy(np.concatenate([r.obs[r.valid] for r in rollouts]))


# ---------------------------------------------------------------------------------------------
# adaptation of stacked per-task params
# ---------------------------------------------------------------------------------------------
def adapt_step(
    loss_fn: LossFn,
    stacked: Params,
    batches: Any,
    lr: float | Params,
    prefix: str | None = "actor.",
    use_vmap: bool = True,
) -> Params:
    """One gradient step per task: stacked params [K, ...] and task-stacked batches [K, ...].
    `lr` is a number or a per-parameter dict (Meta-SGD's learned step sizes, unstacked)."""
    keys = select_keys(stacked, prefix)

    def one(p: Params, b: Any) -> Params:
        return sgd_step(p, inner_grad(loss_fn, p, b, keys, first_order=True), lr)

    with torch.no_grad():
        out: Params = map_tasks(one, (0, 0), use_vmap)(stacked, batches)
    return {k: v.detach() for k, v in out.items()}
