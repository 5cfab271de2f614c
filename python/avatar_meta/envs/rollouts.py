"""Environment-agnostic rollout collection for meta-RL: whole episodes, grouped per task.

The data contract (N = slots = agent rows of an env, B = rows passed to the policy,
OBS = `contract.OBSERVATION_SIZE`, G = number of gestures = 4):

- `TaskEnv`: a batch of areas that each run one task. `set_tasks` (one entry per area)
  takes effect at the next `reset()`; `reset()` -> (obs [N, OBS] float32, mask [N, G] bool);
  `step(cont [N, 2] float32, gesture [N] int64)` -> `EnvStep`. Episodes restart on their own:
  a slot whose episode ended has `done` set, its last observation in `terminal_obs`, and the
  first observation of its next episode (same task) in `obs`. Masks: True = masked.
- `PolicyFn(task_index [B] int64, obs [B, OBS], mask [B, G]) -> ActionBatch`: numpy in and
  out; `task_index` indexes the `tasks` list given to `collect`, so a trainer can run
  per-task (adapted) parameters on each row.
- `collect(env, policy_fn, tasks, episodes_per_task)` -> one `TaskRollout` per entry of
  `tasks`, in the same order, each with exactly `episodes_per_task` complete episodes.

Implementations: `inprocess.PlazaTaskEnv` (the numpy plaza, no protocol),
`workers.MLAgentsTaskEnv` (one world over stock `UnityEnvironment`) and
`workers.ParallelTaskEnv` (several of those in subprocesses).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from avatar_meta import contract
from avatar_meta.tasks import Task

logger = logging.getLogger("avatar_meta.envs.rollouts")

OBS_SIZE = contract.OBSERVATION_SIZE
N_GESTURES = contract.DISCRETE_BRANCHES[0]
N_CONT = contract.NUM_CONTINUOUS_ACTIONS


class WorldFailure(RuntimeError):
    """A world died or stopped answering. `TaskEnv.recover()` restarts it; the data of the
    episodes in flight is lost, so `collect` repeats the current round."""


class CollectError(RuntimeError):
    """Collection could not finish (a world kept failing, or episodes never ended)."""


class EnvStep(NamedTuple):
    """What `TaskEnv.step` returns for all N slots (unpacks as a tuple in this order)."""

    obs: np.ndarray  # [N, OBS] float32, observation for the next decision
    reward: np.ndarray  # [N] float32, reward of the action just applied
    done: np.ndarray  # [N] bool, the episode ended with this step
    interrupted: np.ndarray  # [N] bool, it ended by the step limit (bootstrap from V)
    terminal_obs: np.ndarray  # [N, OBS] float32, last observation where done, else 0
    mask: np.ndarray  # [N, G] bool, gesture mask for the next decision, True = masked


class TaskEnv(Protocol):
    """A batch of areas, each running one task, stepped together."""

    @property
    def num_areas(self) -> int: ...

    @property
    def num_slots(self) -> int:
        """N: agent rows in obs/actions (areas x agents per area)."""
        ...

    @property
    def slot_area(self) -> np.ndarray:
        """[N] int64: the area each slot belongs to."""
        ...

    def set_tasks(self, tasks: Sequence[Task | None]) -> None:
        """One entry per area (None = leave the area as it is); applied at the next reset."""
        ...

    def reset(self) -> tuple[np.ndarray, np.ndarray]: ...

    def step(self, cont: np.ndarray, gesture: np.ndarray) -> EnvStep: ...

    def recover(self) -> None:
        """Restart whatever failed (after a `WorldFailure`); the next call must be `reset()`."""
        ...

    def close(self) -> None: ...


@dataclass
class ActionBatch:
    """What a policy returns for B rows (numpy; `rl.ActResult` converted by the trainer).

    Named apart from `rl.PolicyOutput`, which holds distribution parameters as tensors.
    """

    cont: np.ndarray  # [B, 2] float32, continuous actions (forward, turn), env clips to -1..1
    gesture: np.ndarray  # [B] (or [B, 1]) int64, gesture index; the world ignores masked ones
    log_prob: np.ndarray  # [B] float32, log pi(cont, gesture | obs) under the acting policy
    value: np.ndarray  # [B] float32, V(obs) (zeros if the learner has no critic)


PolicyFn = Callable[[np.ndarray, np.ndarray, np.ndarray], ActionBatch]
"""(task_index [B] int64, obs [B, OBS] float32, mask [B, G] bool) -> ActionBatch."""


@runtime_checkable
class ShardablePolicy(Protocol):
    """A policy over the tasks of one collection that can be cut by task and pickled, so
    each world's worker process can act for its share of the tasks itself
    (`workers.ParallelTaskEnv.collect_sharded`)."""

    def shard(self, index: np.ndarray) -> ShardablePolicy:
        """The policy of tasks `index` (positions in the collection's task list), renumbered
        0 .. len(index) - 1."""
        ...

    def policy_fn(self, stream: int) -> PolicyFn:
        """A PolicyFn whose action noise is random stream `stream` of this policy's seed."""
        ...


@dataclass
class TaskRollout:
    """All episodes collected for one task. E = episodes, T = longest episode (padded).

    Episode e occupies steps `0 .. length[e] - 1`; beyond that, `valid` is False and every
    other array is zero. For bootstrapping a truncated episode use
    `last_value[e] * interrupted[e, length[e] - 1]` (see `bootstrap_value`).
    """

    task: Task
    task_index: int  # position of this task in the list given to `collect`
    obs: np.ndarray  # [E, T, OBS] float32
    mask: np.ndarray  # [E, T, G] bool, True = gesture masked
    cont_action: np.ndarray  # [E, T, 2] float32
    gesture: np.ndarray  # [E, T] int64
    log_prob: np.ndarray  # [E, T] float32
    value: np.ndarray  # [E, T] float32
    reward: np.ndarray  # [E, T] float32
    done: np.ndarray  # [E, T] bool, True at each episode's last step
    interrupted: np.ndarray  # [E, T] bool, True at the last step if ended by the step limit
    valid: np.ndarray  # [E, T] bool, False on padding
    length: np.ndarray  # [E] int64
    terminal_obs: np.ndarray  # [E, OBS] float32, observation after the last action
    last_value: np.ndarray  # [E] float32, policy value of terminal_obs
    episode_return: np.ndarray  # [E] float32, undiscounted sum of reward
    env_steps: int  # agent-steps in these episodes (sum of length)

    @property
    def num_episodes(self) -> int:
        return int(self.length.shape[0])

    @property
    def terminal_value(self) -> np.ndarray:
        """[E, T] float32: last_value at each episode's last step, 0 elsewhere; this is
        `rl.gae(..., interrupted=self.interrupted, terminal_values=self.terminal_value)`."""
        out = np.zeros_like(self.value)
        out[np.arange(self.num_episodes), self.length - 1] = self.last_value
        return out

    @property
    def bootstrap_value(self) -> np.ndarray:
        """[E] float32: V(terminal_obs) for episodes cut by the step limit, 0 for true ends."""
        idx = np.arange(self.num_episodes)
        return self.last_value * self.interrupted[idx, self.length - 1]


@dataclass
class CollectStats:
    """Counters one `collect` call fills in (pass an instance to read them)."""

    agent_steps: int = 0
    """Agent-steps stepped, including idle slots and discarded partial episodes."""
    kept_steps: int = 0
    """Agent-steps in the returned episodes."""
    rounds: int = 0
    """Resets (rounds of episodes), including repeated ones."""
    retries: int = 0
    """World failures handled (each repeats the round after a restart)."""
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Policies for tests and benchmarks
# ---------------------------------------------------------------------------------------------
class RandomPolicy:
    """Uniform continuous actions in [-1, 1]^2 and a uniform allowed gesture; value 0."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, task_index: np.ndarray, obs: np.ndarray, mask: np.ndarray) -> ActionBatch:
        b = obs.shape[0]
        cont = self.rng.uniform(-1.0, 1.0, size=(b, N_CONT)).astype(np.float32)
        allowed = ~mask
        scores = self.rng.random((b, N_GESTURES)) * allowed
        gesture = scores.argmax(axis=1).astype(np.int64)
        n_allowed = allowed.sum(axis=1)
        log_prob = (np.log(0.25) - np.log(n_allowed)).astype(np.float32)  # log(1/4) for cont
        return ActionBatch(cont, gesture, log_prob, np.zeros(b, dtype=np.float32))


# ---------------------------------------------------------------------------------------------
# collect
# ---------------------------------------------------------------------------------------------
def collect(
    env: TaskEnv,
    policy_fn: PolicyFn,
    tasks: Sequence[Task],
    episodes_per_task: int,
    *,
    max_retries: int = 3,
    max_round_steps: int = 10 * contract.MAX_EPISODE_STEPS,
    stats: CollectStats | None = None,
) -> list[TaskRollout]:
    """Run whole episodes until every task has `episodes_per_task` of them.

    Work is done in rounds. Each round assigns areas to the tasks that still need episodes
    (a task may get several areas, and areas left over idle), resets, and steps until every
    assigned slot has finished at least one episode; episodes that end later in the round are
    kept too when their task still needs them, partial ones are dropped. A `WorldFailure`
    repeats the round after `env.recover()`, at most `max_retries` times per call.
    """
    if episodes_per_task < 1:
        raise ValueError(f"episodes_per_task = {episodes_per_task}; it must be >= 1")
    if not tasks:
        return []
    stats = stats if stats is not None else CollectStats()
    retries_before = stats.retries
    start = time.perf_counter()
    need = np.full(len(tasks), episodes_per_task, dtype=np.int64)
    kept: list[list[_Episode]] = [[] for _ in tasks]
    while need.sum() > 0:
        area_task = assign_areas(need, _slots_per_area(env))
        try:
            stats.rounds += 1
            episodes = _run_round(env, policy_fn, tasks, area_task, max_round_steps, stats)
        except WorldFailure as err:
            _recover(env, err, stats, max_retries, retries_before)
            continue
        for ep in episodes:
            if need[ep.task_index] > 0:
                kept[ep.task_index].append(ep)
                need[ep.task_index] -= 1
    rollouts = [_stack_episodes(tasks[k], k, kept[k]) for k in range(len(tasks))]
    stats.kept_steps += sum(r.env_steps for r in rollouts)
    stats.seconds += time.perf_counter() - start
    return rollouts


def has_workers(env: TaskEnv) -> bool:
    """Can the env's worker processes act themselves (`ParallelTaskEnv.collect_sharded`)?"""
    return callable(getattr(env, "collect_sharded", None))


def collect_shardable(
    env: TaskEnv,
    policy: ShardablePolicy,
    tasks: Sequence[Task],
    episodes_per_task: int,
    *,
    stats: CollectStats | None = None,
) -> list[TaskRollout]:
    """`collect` with `policy`: in the env's worker processes when it has them
    (`has_workers`), otherwise here with its random stream 0."""
    if has_workers(env):
        rollouts: list[TaskRollout] = env.collect_sharded(  # type: ignore[attr-defined]
            policy, tasks, episodes_per_task, stats=stats
        )
        return rollouts
    return collect(env, policy.policy_fn(0), tasks, episodes_per_task, stats=stats)


def _recover(
    env: TaskEnv, err: WorldFailure, stats: CollectStats, max_retries: int, retries_before: int
) -> None:
    """Count the failure and restart the env (a failing restart counts as one more failure);
    raise CollectError after more than `max_retries` failures in this collect() call."""
    while True:
        stats.retries += 1
        stats.errors.append(str(err))
        failures = stats.retries - retries_before
        if failures > max_retries:
            raise CollectError(
                f"a world failed {failures} times during one collect() "
                f"(max_retries={max_retries}); last error: {err}"
            ) from err
        logger.warning("world failure (%s); restarting and repeating the round", err)
        try:
            env.recover()
            return
        except WorldFailure as again:
            err = again


def assign_areas(need: np.ndarray, slots_per_area: np.ndarray) -> np.ndarray:
    """[A] int64 task index per area (-1 = idle) for one round.

    Tasks are served in order; each area gives its task as many episodes as it has slots.
    Example: need [2, 1], three 1-slot areas -> [0, 0, 1].
    """
    left = need.astype(np.int64).copy()
    out = np.full(len(slots_per_area), -1, dtype=np.int64)
    k = 0
    for area, n_slots in enumerate(slots_per_area):
        while k < len(left) and left[k] <= 0:
            k += 1
        if k == len(left):
            break
        out[area] = k
        left[k] -= n_slots
    return out


def _slots_per_area(env: TaskEnv) -> np.ndarray:
    return np.bincount(env.slot_area, minlength=env.num_areas)


@dataclass
class _Episode:
    """One finished episode of one slot, arrays [L, ...] (L = its length)."""

    task_index: int
    obs: np.ndarray
    mask: np.ndarray
    cont: np.ndarray
    gesture: np.ndarray
    log_prob: np.ndarray
    value: np.ndarray
    reward: np.ndarray
    interrupted: bool
    terminal_obs: np.ndarray
    last_value: float


@dataclass
class _RoundBuffer:
    """Per-step arrays of one round over the active slots (R rows), appended step by step."""

    obs: list[np.ndarray] = field(default_factory=list)  # [R, OBS] each
    mask: list[np.ndarray] = field(default_factory=list)
    cont: list[np.ndarray] = field(default_factory=list)
    gesture: list[np.ndarray] = field(default_factory=list)
    log_prob: list[np.ndarray] = field(default_factory=list)
    value: list[np.ndarray] = field(default_factory=list)
    reward: list[np.ndarray] = field(default_factory=list)
    done: list[np.ndarray] = field(default_factory=list)
    interrupted: list[np.ndarray] = field(default_factory=list)
    terminal: dict[tuple[int, int], tuple[np.ndarray, float]] = field(default_factory=dict)
    """(step, row) -> (terminal obs, its value) where an episode ended."""


def _run_round(
    env: TaskEnv,
    policy_fn: PolicyFn,
    tasks: Sequence[Task],
    area_task: np.ndarray,
    max_round_steps: int,
    stats: CollectStats,
) -> list[_Episode]:
    """Reset with this round's assignment and step until every active slot finished once."""
    env.set_tasks([tasks[k] if k >= 0 else None for k in area_task.tolist()])
    obs, mask = env.reset()
    slot_task = area_task[env.slot_area]  # [N]
    active = np.flatnonzero(slot_task >= 0)  # [R]
    row_task = slot_task[active]
    n = env.num_slots
    cont_all = np.zeros((n, N_CONT), dtype=np.float32)
    gesture_all = np.zeros(n, dtype=np.int64)
    finished_once = np.zeros(len(active), dtype=bool)
    buf = _RoundBuffer()
    for t in range(max_round_steps):
        o, m = obs[active], mask[active]
        out = _checked(policy_fn(row_task, o, m), len(active))
        cont_all[active] = out.cont
        gesture_all[active] = out.gesture
        step = env.step(cont_all, gesture_all)
        stats.agent_steps += n
        done = step.done[active]
        buf.obs.append(o)
        buf.mask.append(m)
        buf.cont.append(out.cont)
        buf.gesture.append(out.gesture)
        buf.log_prob.append(out.log_prob)
        buf.value.append(out.value)
        buf.reward.append(step.reward[active].astype(np.float32))
        buf.done.append(done)
        buf.interrupted.append(step.interrupted[active])
        if done.any():
            rows = np.flatnonzero(done)
            term = step.terminal_obs[active[rows]]
            allowed = np.zeros((len(rows), N_GESTURES), dtype=bool)
            values = _checked(policy_fn(row_task[rows], term, allowed), len(rows)).value
            for r, o_t, v in zip(rows.tolist(), term, values.tolist(), strict=True):
                buf.terminal[(t, r)] = (o_t, float(v))
            finished_once[rows] = True
        obs, mask = step.obs, step.mask
        if finished_once.all():
            return _split_episodes(buf, row_task)
    raise CollectError(
        f"episodes did not end within {max_round_steps} steps; the world must end every "
        f"episode (the contract says {contract.MAX_EPISODE_STEPS} decisions)"
    )


def _checked(out: ActionBatch, b: int) -> ActionBatch:
    """Coerce dtypes and check shapes of a policy's output for B rows."""
    cont = np.asarray(out.cont, dtype=np.float32).reshape(b, N_CONT)
    gesture = np.asarray(out.gesture, dtype=np.int64).reshape(b)
    log_prob = np.asarray(out.log_prob, dtype=np.float32).reshape(b)
    value = np.asarray(out.value, dtype=np.float32).reshape(b)
    return ActionBatch(cont, gesture, log_prob, value)


def _split_episodes(buf: _RoundBuffer, row_task: np.ndarray) -> list[_Episode]:
    """Cut the round's [S, R, ...] stream into finished episodes, ordered by end step, row."""
    done = np.stack(buf.done)  # [S, R]
    arrays = {
        name: np.stack(getattr(buf, name))
        for name in ("obs", "mask", "cont", "gesture", "log_prob", "value", "reward")
    }
    interrupted = np.stack(buf.interrupted)
    start = np.zeros(done.shape[1], dtype=np.int64)
    episodes: list[_Episode] = []
    for t, r in zip(*np.nonzero(done), strict=True):  # row-major: by step, then row
        t, r = int(t), int(r)
        s = int(start[r])
        term_obs, last_value = buf.terminal[(t, r)]
        parts = {name: a[s : t + 1, r] for name, a in arrays.items()}
        episodes.append(
            _Episode(
                task_index=int(row_task[r]),
                interrupted=bool(interrupted[t, r]),
                terminal_obs=term_obs,
                last_value=last_value,
                **parts,
            )
        )
        start[r] = t + 1
    return episodes


def _stack_episodes(task: Task, task_index: int, episodes: list[_Episode]) -> TaskRollout:
    """Pad a task's episodes to the longest one and stack them into a TaskRollout."""
    e = len(episodes)
    lengths = np.array([len(ep.reward) for ep in episodes], dtype=np.int64)
    t_max = int(lengths.max())

    def pad(name: str, tail: tuple[int, ...], dtype: type) -> np.ndarray:
        out: np.ndarray = np.zeros((e, t_max, *tail), dtype=dtype)
        for i, ep in enumerate(episodes):
            out[i, : lengths[i]] = getattr(ep, name)
        return out

    valid = np.arange(t_max)[None, :] < lengths[:, None]
    last = np.zeros((e, t_max), dtype=bool)
    last[np.arange(e), lengths - 1] = True
    interrupted = last & np.array([ep.interrupted for ep in episodes])[:, None]
    reward = pad("reward", (), np.float32)
    return TaskRollout(
        task=task,
        task_index=task_index,
        obs=pad("obs", (OBS_SIZE,), np.float32),
        mask=pad("mask", (N_GESTURES,), bool),
        cont_action=pad("cont", (N_CONT,), np.float32),
        gesture=pad("gesture", (), np.int64),
        log_prob=pad("log_prob", (), np.float32),
        value=pad("value", (), np.float32),
        reward=reward,
        done=last,
        interrupted=interrupted,
        valid=valid,
        length=lengths,
        terminal_obs=np.stack([ep.terminal_obs for ep in episodes]).astype(np.float32),
        last_value=np.array([ep.last_value for ep in episodes], dtype=np.float32),
        episode_return=reward.sum(axis=1, dtype=np.float32),
        env_steps=int(lengths.sum()),
    )


__all__ = [
    "CollectError",
    "CollectStats",
    "EnvStep",
    "PolicyFn",
    "ActionBatch",
    "RandomPolicy",
    "TaskEnv",
    "TaskRollout",
    "WorldFailure",
    "assign_areas",
    "collect",
]
