"""`MLAgentsTaskEnv`: the `TaskEnv` interface over one world through stock `UnityEnvironment`.

The world is the built-in headless world (launched from `world_executable_path()`), a user's
Unity build (`--env PATH`) or the Unity Editor in play mode (port 5004). Tasks go to the
areas on the TaskChannel; one behaviour (`contract.BEHAVIOR_NAME`) is driven.

Agent ids -> slots. The built-in world keeps id `i` for agent `i` (area `i // agents_per_area`)
for the whole run. Unity builds send a fresh id per episode instead. So slots are assigned at
every reset from the sorted ids (area = slot // agents_per_area, Unity's creation order), and
when an id ends in TerminalSteps and an unknown id appears in DecisionSteps of the same step,
the new ids take over the freed slots in sorted order. Every agent must request a decision
every step (DecisionRequester period 1).

The environment class is `envs.fast_env.FastUnityEnvironment` (a drop-in subclass of stock
`UnityEnvironment` with a bytes-level codec) unless AVATAR_META_PROTOCOL=stock.

Failures (the world process died, a timeout, the communicator stopped) raise `WorldFailure`;
`recover()` closes what is left and starts a fresh world on the next port.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from avatar_meta import contract
from avatar_meta.envs.rollouts import EnvStep, WorldFailure
from avatar_meta.tasks import Task, send_tasks

logger = logging.getLogger("avatar_meta.envs.mlagents_env")

EDITOR_PORT = 5004


@dataclass
class WorldConfig:
    """Where the world comes from and how to start it (one world = one UnityEnvironment)."""

    env_path: str | None = None
    """Path of a Unity build (`--env`); None = the built-in headless world."""
    editor: bool = False
    """Connect to the Unity Editor in play mode on port 5004 instead of launching anything."""
    num_areas: int = 8
    """Areas to ask for (handshake num_areas and `--num-areas`); each area runs one task."""
    base_port: int = 5005
    """Port = base_port + worker_id (ignored for the Editor)."""
    worker_id: int = 0
    """Offset of this world's port; ParallelTaskEnv gives each world its own."""
    port_stride: int = 1
    """A restarted world uses worker_id + k * port_stride for its k-th restart."""
    seed: int = 0
    """World seed sent in the handshake."""
    no_graphics: bool = True
    """Pass -nographics -batchmode to the executable."""
    timeout_wait: int = 60
    """Seconds UnityEnvironment waits for the world to answer; a death is noticed within
    about a tenth of this (mlagents polls the process at timeout_wait // 10)."""
    log_folder: str | None = None
    """Absolute folder for the world's `Player-<worker_id>.log`; None = world's stderr."""
    extra_args: tuple[str, ...] = ()
    """More command-line arguments for the executable."""
    policy_public_key: str | None = None
    """PEM public key the built-in world checks streamed PolicyWeights with
    (`--policy-public-key`); a Unity build or the Editor uses the key its scene trusts."""

    def file_name(self) -> str | None:
        if self.editor:
            return None
        if self.env_path is not None:
            return self.env_path
        from avatar_meta.world.launcher import world_executable_path

        return world_executable_path()


def _failure_types() -> tuple[type[BaseException], ...]:
    from mlagents_envs.exception import (
        UnityCommunicationException,
        UnityCommunicatorStoppedException,
        UnityEnvironmentException,
        UnityTimeOutException,
    )

    return (
        UnityTimeOutException,
        UnityCommunicatorStoppedException,
        UnityCommunicationException,
        UnityEnvironmentException,
        BrokenPipeError,
        EOFError,
        ConnectionError,
    )


class MLAgentsTaskEnv:
    """One world (headless, Unity build or Editor) as a `TaskEnv`. Starts it on construction."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        self.restarts = 0
        self._env: Any = None
        self._channel: Any = None
        self._stats: Any = None
        self._policy: Any = None
        self.last_round_stats: dict[str, list[tuple[float, Any]]] = {}
        self._behavior = ""
        self._tasks: list[Task | None] = [None] * self.config.num_areas
        self._num_areas = self.config.num_areas
        self._slot_of: dict[int, int] = {}
        self._decision_ids = np.zeros(0, dtype=np.int64)
        self._decision_slots = np.zeros(0, dtype=np.int64)
        self._slot_area = np.zeros(0, dtype=np.int64)
        self._start(self.config.worker_id)

    # -- lifecycle --------------------------------------------------------------------------
    def _start(self, worker_id: int) -> None:
        from mlagents_envs.exception import UnityWorkerInUseException
        from mlagents_envs.side_channel.stats_side_channel import StatsSideChannel

        from avatar_meta.envs.fast_env import environment_class
        from avatar_meta.envs.policy_channel import PolicyChannel
        from avatar_meta.envs.task_channel import TaskChannel

        cfg = self.config
        file_name = cfg.file_name()
        args = list(cfg.extra_args)
        if file_name is not None:
            args = ["--num-areas", str(cfg.num_areas), *args]
        if cfg.policy_public_key and cfg.env_path is None and not cfg.editor:
            args += ["--policy-public-key", cfg.policy_public_key]
        self._channel = TaskChannel()
        self._stats = StatsSideChannel()
        self._policy = PolicyChannel()
        try:
            # FastUnityEnvironment unless AVATAR_META_PROTOCOL=stock (same API, bytes codec).
            self._env = environment_class()(
                file_name=file_name,
                worker_id=0 if cfg.editor else worker_id,
                base_port=EDITOR_PORT if cfg.editor else cfg.base_port,
                seed=cfg.seed,
                no_graphics=cfg.no_graphics,
                timeout_wait=cfg.timeout_wait,
                additional_args=args,
                side_channels=[self._channel, self._stats, self._policy],
                log_folder=cfg.log_folder,
                num_areas=cfg.num_areas,
            )
        except UnityWorkerInUseException as err:
            raise WorldFailure(f"port {cfg.base_port + worker_id} is in use: {err}") from err
        except _failure_types() as err:
            raise WorldFailure(f"world did not start ({type(err).__name__}: {err})") from err
        self._worker_id = worker_id
        self._slot_of.clear()
        try:
            self.reset()  # learn the agents, their slots and the behaviour name
        except WorldFailure:
            self._shutdown(timeout=0)
            raise

    def push_policy(self, area: int, envelope: bytes, inference: bool = False) -> int:
        """Queue a signed PolicyWeights envelope for `area` on the PolicyChannel; it leaves
        over the next exchanges (see `envs.policy_channel`). Returns the transfer id."""
        return int(self._policy.push(area, envelope, inference))

    def policy_acks(self) -> list[Any]:
        """The world's answers (`PolicyAck`) to every transfer so far."""
        return list(self._policy.acks)

    @property
    def port(self) -> int:
        return EDITOR_PORT if self.config.editor else self.config.base_port + self._worker_id

    @property
    def world_pid(self) -> int | None:
        """Process id of the launched world (None for the Editor or after close)."""
        proc = getattr(self._env, "_process", None)
        return None if proc is None else int(proc.pid)

    def drain_stats(self) -> dict[str, list[tuple[float, Any]]]:
        """Stats the world sent (per-family episode returns, ...) since the last drain.

        Collected on the standard Stats side channel (keys and values as mlagents'
        `StatsSideChannel.get_and_reset_stats`). Every `reset()` drains them into
        `last_round_stats`, so they never pile up."""
        return {} if self._stats is None else dict(self._stats.get_and_reset_stats())

    def recover(self) -> None:
        """Close the failed world (killing it if needed) and start a new one on the next port."""
        self._shutdown(timeout=0)
        for _ in range(8):
            self.restarts += 1
            worker_id = self.config.worker_id + self.restarts * self.config.port_stride
            try:
                self._start(worker_id)
            except WorldFailure as err:
                logger.warning("restart on worker_id %d failed: %s", worker_id, err)
                self._shutdown(timeout=0)
                continue
            logger.info("world restarted on port %d", self.port)
            self.set_tasks(self._tasks)
            return
        raise WorldFailure("could not restart the world after 8 attempts")

    def _shutdown(self, timeout: int | None) -> None:
        env, self._env = self._env, None
        if env is None:
            return
        proc = getattr(env, "_process", None)
        try:
            env._close(timeout)  # the public close() refuses when the world is already gone
        except Exception as err:  # a dead world may fail to close in many ways
            logger.debug("closing the world: %s", err)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def close(self) -> None:
        """Ask the world to quit (status 400), wait for it, kill it if it lingers."""
        self._shutdown(timeout=10)

    def __enter__(self) -> MLAgentsTaskEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- TaskEnv ----------------------------------------------------------------------------
    @property
    def num_areas(self) -> int:
        return self._num_areas

    @property
    def num_slots(self) -> int:
        return int(self._slot_area.shape[0])

    @property
    def slot_area(self) -> np.ndarray:
        return self._slot_area

    def set_tasks(self, tasks: Sequence[Task | None]) -> None:
        if len(tasks) != self.num_areas:
            raise ValueError(f"set_tasks: got {len(tasks)} tasks for {self.num_areas} areas")
        self._tasks = list(tasks)
        send_tasks(self._channel, self._tasks)

    def reset(self) -> tuple[np.ndarray, np.ndarray]:
        env = self._live_env()
        self.last_round_stats = self.drain_stats()
        try:
            env.reset()
            if not self._behavior:
                self._behavior = _pick_behavior(list(env.behavior_specs))
            decision, _ = env.get_steps(self._behavior)
        except _failure_types() as err:
            raise WorldFailure(f"world on port {self.port} failed at reset: {err}") from err
        ids = np.asarray(decision.agent_id, dtype=np.int64)
        self._map_slots(np.sort(ids))
        slots = np.array([self._slot_of[i] for i in ids.tolist()], dtype=np.int64)
        obs = np.zeros((len(ids), contract.OBSERVATION_SIZE), dtype=np.float32)
        mask = np.zeros((len(ids), contract.DISCRETE_BRANCHES[0]), dtype=bool)
        obs[slots] = decision.obs[0]
        mask[slots] = _mask_of(decision)
        self._decision_ids, self._decision_slots = ids, slots
        return obs, mask

    def step(self, cont: np.ndarray, gesture: np.ndarray) -> EnvStep:
        from mlagents_envs.base_env import ActionTuple

        env = self._live_env()
        rows = self._decision_slots
        action = ActionTuple(
            continuous=np.asarray(cont, dtype=np.float32)[rows],
            discrete=np.asarray(gesture, dtype=np.int32)[rows].reshape(-1, 1),
        )
        try:
            env.set_actions(self._behavior, action)
            env.step()
            decision, terminal = env.get_steps(self._behavior)
        except _failure_types() as err:
            raise WorldFailure(f"world on port {self.port} failed at step: {err}") from err
        return self._read_step(decision, terminal)

    # -- helpers ----------------------------------------------------------------------------
    def _live_env(self) -> Any:
        if self._env is None:
            raise WorldFailure("the world is closed; call recover() to start a new one")
        return self._env

    def _map_slots(self, sorted_ids: np.ndarray) -> None:
        """At reset: keep the mapping if every id is known, else slots in sorted id order."""
        n = len(sorted_ids)
        if n == 0:
            raise WorldFailure("no agent requested a decision after reset")
        if self._slot_of and sorted(self._slot_of) == sorted_ids.tolist():
            return
        self._slot_of = {int(i): s for s, i in enumerate(sorted_ids.tolist())}
        per_area = n // self.config.num_areas if n % self.config.num_areas == 0 else 1
        if per_area == 1 and n != self.config.num_areas:
            logger.warning(
                "%d agents do not divide into %d areas; treating each agent as its own area",
                n,
                self.config.num_areas,
            )
        self._num_areas = n // per_area
        self._slot_area = np.arange(n, dtype=np.int64) // per_area
        if len(self._tasks) != self._num_areas:
            self._tasks = [None] * self._num_areas

    def _read_step(self, decision: Any, terminal: Any) -> EnvStep:
        """Scatter DecisionSteps/TerminalSteps into slot order (see module doc for ids)."""
        n = self.num_slots
        reward = np.zeros(n, dtype=np.float32)
        done = np.zeros(n, dtype=bool)
        interrupted = np.zeros(n, dtype=bool)
        terminal_obs = np.zeros((n, contract.OBSERVATION_SIZE), dtype=np.float32)
        dec_ids = np.asarray(decision.agent_id, dtype=np.int64)
        term_ids = np.asarray(terminal.agent_id, dtype=np.int64)
        if len(term_ids):
            term_slots = np.array([self._slot(i) for i in term_ids.tolist()], dtype=np.int64)
            reward[term_slots] = terminal.reward
            done[term_slots] = True
            interrupted[term_slots] = terminal.interrupted
            terminal_obs[term_slots] = terminal.obs[0]
            self._hand_over_slots(term_ids, dec_ids)
        if len(term_ids) == 0 and np.array_equal(dec_ids, self._decision_ids):
            dec_slots = self._decision_slots  # the common case: same agents, same order
        else:
            dec_slots = np.array([self._slot(i) for i in dec_ids.tolist()], dtype=np.int64)
        if len(dec_slots) != n or len(np.unique(dec_slots)) != n:
            raise WorldFailure(
                f"{len(dec_slots)} of {n} agents requested a decision; every agent must "
                "request one every step (DecisionRequester period 1, no agents added or removed)"
            )
        obs = np.zeros((n, contract.OBSERVATION_SIZE), dtype=np.float32)
        mask = np.zeros((n, contract.DISCRETE_BRANCHES[0]), dtype=bool)
        obs[dec_slots] = decision.obs[0]
        mask[dec_slots] = _mask_of(decision)
        fresh = ~done[dec_slots]  # a restarted agent's decision reward belongs to no action
        reward[dec_slots[fresh]] = np.asarray(decision.reward, dtype=np.float32)[fresh]
        self._decision_ids, self._decision_slots = dec_ids, dec_slots
        return EnvStep(obs, reward, done, interrupted, terminal_obs, mask)

    def _hand_over_slots(self, term_ids: np.ndarray, dec_ids: np.ndarray) -> None:
        """Ids that ended and did not come back give their slots to new ids (sorted order)."""
        dec_set = set(dec_ids.tolist())
        freed = sorted(i for i in term_ids.tolist() if i not in dec_set)
        new = sorted(i for i in dec_ids.tolist() if i not in self._slot_of)
        for old, fresh in zip(freed, new, strict=False):
            self._slot_of[fresh] = self._slot_of.pop(old)

    def _slot(self, agent_id: int) -> int:
        try:
            return self._slot_of[agent_id]
        except KeyError:
            raise WorldFailure(
                f"agent id {agent_id} appeared without a free slot; the world added agents "
                "mid-episode, which the rollout collector does not support"
            ) from None


def _pick_behavior(names: list[str]) -> str:
    ours = [n for n in names if n.split("?")[0] == contract.BEHAVIOR_NAME]
    if len(ours) == 1:
        return ours[0]
    if len(names) == 1:
        logger.warning("behaviour %r is not %r; using it anyway", names[0], contract.BEHAVIOR_NAME)
        return names[0]
    raise WorldFailure(
        f"expected one behaviour named {contract.BEHAVIOR_NAME!r}, the world has {names}"
    )


def _mask_of(decision: Any) -> np.ndarray:
    """[n, G] bool gesture mask (True = masked) from DecisionSteps; all allowed if absent."""
    n = len(decision.agent_id)
    if decision.action_mask is None or len(decision.action_mask) == 0:
        return np.zeros((n, contract.DISCRETE_BRANCHES[0]), dtype=bool)
    return np.asarray(decision.action_mask[0], dtype=bool)
