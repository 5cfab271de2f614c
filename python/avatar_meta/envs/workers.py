"""`ParallelTaskEnv`: several worlds, each in its own worker subprocess, as one `TaskEnv`.

Each worker process (multiprocessing 'spawn') owns one `MLAgentsTaskEnv`, i.e. one
`UnityEnvironment` and the world it launched. The parent talks to the workers over Pipes with
a tiny request/reply protocol: ("set_tasks", tasks) | ("reset",) | ("step", cont, gesture) |
("recover",) | ("close",), each answered by ("ok", result) | ("failure", message) (the world
failed; recoverable) | ("error", traceback) (a bug; raised as RuntimeError).

`step` and `reset` send to every worker first and then collect the replies, so all worlds step
concurrently. Slots and areas are concatenated in worker order: worker w's area a is area
`areas_before(w) + a` of the combined env.

Failures: a worker reporting a world failure, a worker that died (EOF / broken pipe) or one that
does not answer within `reply_timeout` is marked failed and the call raises `WorldFailure` after
the healthy workers have answered. `recover()` then restarts the world inside a live worker, or
spawns a new worker for a dead one; every restart gets a fresh port
(`base_port + worker_id + k * port_stride`, with port_stride = number of workers).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from avatar_meta.envs.mlagents_env import MLAgentsTaskEnv, WorldConfig
from avatar_meta.envs.rollouts import (
    CollectError,
    CollectStats,
    EnvStep,
    ShardablePolicy,
    TaskRollout,
    WorldFailure,
    collect,
)
from avatar_meta.tasks import Task

logger = logging.getLogger("avatar_meta.envs.workers")


@dataclass
class _WorkerInfo:
    """What a worker reports after starting or recovering its world."""

    num_areas: int
    slot_area: np.ndarray  # [n_w] int64, local area of each local slot
    world_pid: int | None
    restarts: int
    port: int


def _info(env: MLAgentsTaskEnv) -> _WorkerInfo:
    return _WorkerInfo(env.num_areas, env.slot_area, env.world_pid, env.restarts, env.port)


def _worker_main(conn: Connection, config: WorldConfig) -> None:
    """Entry point of a worker process: serve requests until "close" or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which closes us

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    env: MLAgentsTaskEnv | None = None
    try:
        try:
            env = MLAgentsTaskEnv(config)
        except Exception as err:
            conn.send(("failure", f"world did not start: {err}"))
            return
        conn.send(("ok", _info(env)))
        while True:
            request = conn.recv()
            if request[0] == "close":
                env.close()
                conn.send(("ok", None))
                return
            conn.send(_serve(env, request))
    except (EOFError, BrokenPipeError, KeyboardInterrupt, SystemExit):
        pass
    finally:
        if env is not None:
            env.close()


def _serve(env: MLAgentsTaskEnv, request: tuple[Any, ...]) -> tuple[str, Any]:
    command, *args = request
    try:
        if command == "step":
            return "ok", env.step(args[0], args[1])
        if command == "reset":
            return "ok", env.reset()
        if command == "set_tasks":
            env.set_tasks(args[0])
            return "ok", None
        if command == "recover":
            env.recover()
            return "ok", _info(env)
        if command == "push_policy":
            return "ok", env.push_policy(args[0], args[1], args[2])
        if command == "policy_acks":
            return "ok", env.policy_acks()
        if command == "collect":
            policy, tasks, episodes, stream = args
            _one_torch_thread()
            stats = CollectStats()
            rollouts = collect(env, policy.policy_fn(stream), tasks, episodes, stats=stats)
            return "ok", (rollouts, stats, _info(env))
        return "error", f"unknown worker command {command!r}"
    except (WorldFailure, CollectError) as err:  # CollectError: the world kept failing
        return "failure", str(err)
    except Exception:
        return "error", traceback.format_exc()


class ParallelTaskEnv:
    """N worlds in N worker subprocesses, presented as one `TaskEnv` with concatenated slots."""

    def __init__(self, configs: Sequence[WorldConfig], reply_timeout: float | None = None):
        if not configs:
            raise ValueError("ParallelTaskEnv needs at least one WorldConfig")
        self._ctx = mp.get_context("spawn")
        self._configs = list(configs)
        self.reply_timeout = reply_timeout or max(c.timeout_wait for c in configs) + 60.0
        n = len(self._configs)
        self._procs: list[Any] = [None] * n
        self._conns: list[Connection | None] = [None] * n
        self._infos: list[_WorkerInfo | None] = [None] * n
        self._offsets = [0] * n  # port offset of each worker's current config, in strides
        self._failed: set[int] = set()
        self._tasks: list[Task | None] = []
        self._world_files: list[str | None] = [None] * n
        self._replies: dict[int, Any] = {}
        for w in range(n):
            self._spawn(w)
        failures = self._collect_replies(range(n), "start")
        if failures:
            self.close()
            raise WorldFailure("; ".join(failures))
        self._layout()

    @classmethod
    def spread(cls, base: WorldConfig, num_envs: int, **kwargs: Any) -> ParallelTaskEnv:
        """`num_envs` copies of `base` on ports base_port + worker_id + i, seeds seed + i."""
        configs = [
            replace(base, worker_id=base.worker_id + i, port_stride=num_envs, seed=base.seed + i)
            for i in range(num_envs)
        ]
        return cls(configs, **kwargs)

    # -- workers ----------------------------------------------------------------------------
    def _spawn(self, w: int) -> None:
        cfg = self._configs[w]
        cfg = replace(cfg, worker_id=cfg.worker_id + self._offsets[w] * cfg.port_stride)
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker_main, args=(child, cfg), name=f"avatar-meta-env-{w}", daemon=True
        )
        proc.start()
        child.close()
        self._procs[w], self._conns[w] = proc, parent
        self._world_files[w] = cfg.file_name()

    def _send(self, w: int, message: tuple[Any, ...]) -> bool:
        conn = self._conns[w]
        if conn is None or w in self._failed:
            return False
        try:
            conn.send(message)
            return True
        except (BrokenPipeError, EOFError, OSError):
            self._mark_failed(w, "its worker process is gone")
            return False

    def _recv(self, w: int) -> tuple[str, Any]:
        conn = self._conns[w]
        assert conn is not None
        try:
            if not conn.poll(self.reply_timeout):
                self._kill_worker(w)
                return "failure", f"no answer within {self.reply_timeout:.0f} s"
            return conn.recv()
        except (EOFError, BrokenPipeError, OSError):
            return "failure", "its worker process died"

    def _collect_replies(self, workers: Sequence[int] | range, what: str) -> list[str]:
        """Receive one reply per worker; record infos; return failure messages."""
        failures = []
        self._replies = {}
        for w in workers:
            status, payload = self._recv(w)
            if status == "ok":
                if isinstance(payload, _WorkerInfo):
                    self._infos[w] = payload
                self._replies[w] = payload
            elif status == "failure":
                self._mark_failed(w, payload)
                failures.append(f"world {w} ({what}): {payload}")
            else:
                raise RuntimeError(f"env worker {w} crashed during {what}:\n{payload}")
        return failures

    def _mark_failed(self, w: int, why: str) -> None:
        if w not in self._failed:
            logger.warning("env worker %d failed: %s", w, why)
        self._failed.add(w)

    def _kill_worker(self, w: int) -> None:
        proc = self._procs[w]
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(timeout=10)

    def _broadcast(self, what: str, messages: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send messages[w] to every worker, then gather every reply (concurrent execution)."""
        sent = [w for w in range(len(messages)) if self._send(w, messages[w])]
        failures = self._collect_replies(sent, what)
        failed = sorted(set(range(len(messages))) - set(self._replies))
        if failures or failed:
            reasons = failures or [f"world {w} is not running" for w in failed]
            raise WorldFailure("; ".join(reasons) + " (call recover())")
        return [self._replies[w] for w in range(len(messages))]

    # -- layout -----------------------------------------------------------------------------
    def _layout(self) -> None:
        infos = [i for i in self._infos if i is not None]
        self._area_counts = [i.num_areas for i in infos]
        self._slot_counts = [len(i.slot_area) for i in infos]
        area_offsets = np.cumsum([0, *self._area_counts])
        self._slot_area = np.concatenate(
            [i.slot_area + area_offsets[w] for w, i in enumerate(infos)]
        ).astype(np.int64)
        self._slot_bounds = np.cumsum([0, *self._slot_counts])
        if len(self._tasks) != self.num_areas:
            self._tasks = [None] * self.num_areas

    def _split_slots(self, array: np.ndarray) -> list[np.ndarray]:
        b = self._slot_bounds
        return [array[b[w] : b[w + 1]] for w in range(len(self._configs))]

    # -- TaskEnv ----------------------------------------------------------------------------
    @property
    def num_envs(self) -> int:
        return len(self._configs)

    @property
    def num_areas(self) -> int:
        return int(sum(self._area_counts))

    @property
    def num_slots(self) -> int:
        return int(self._slot_area.shape[0])

    @property
    def slot_area(self) -> np.ndarray:
        return self._slot_area

    @property
    def world_pids(self) -> list[int | None]:
        return [None if i is None else i.world_pid for i in self._infos]

    def push_policy(self, area: int, envelope: bytes, inference: bool = False) -> int:
        """Queue a signed PolicyWeights envelope for global `area` on its world's
        PolicyChannel; returns the transfer id (unique per world, see `policy_acks`)."""
        bounds = np.cumsum([0, *self._area_counts])
        w = int(np.searchsorted(bounds, area, side="right") - 1)
        if not 0 <= area < self.num_areas:
            raise ValueError(f"push_policy: area {area} not in 0..{self.num_areas - 1}")
        if not self._send(w, ("push_policy", int(area - bounds[w]), envelope, inference)):
            raise WorldFailure(f"world {w} is not running (call recover())")
        failures = self._collect_replies([w], "push_policy")
        if failures:
            raise WorldFailure("; ".join(failures))
        return int(self._replies[w])

    def policy_acks(self) -> list[Any]:
        """Every world's answers to its transfers, areas made global."""
        from dataclasses import replace

        bounds = np.cumsum([0, *self._area_counts])
        replies = self._broadcast("policy_acks", [("policy_acks",)] * self.num_envs)
        return [
            replace(ack, area=int(ack.area + bounds[w]))
            for w, acks in enumerate(replies)
            for ack in acks
        ]

    def set_tasks(self, tasks: Sequence[Task | None]) -> None:
        if len(tasks) != self.num_areas:
            raise ValueError(f"set_tasks: got {len(tasks)} tasks for {self.num_areas} areas")
        self._tasks = list(tasks)
        bounds = np.cumsum([0, *self._area_counts])
        self._broadcast(
            "set_tasks",
            [("set_tasks", self._tasks[bounds[w] : bounds[w + 1]]) for w in range(self.num_envs)],
        )

    def reset(self) -> tuple[np.ndarray, np.ndarray]:
        replies = self._broadcast("reset", [("reset",)] * self.num_envs)
        return (
            np.concatenate([obs for obs, _ in replies]),
            np.concatenate([mask for _, mask in replies]),
        )

    def step(self, cont: np.ndarray, gesture: np.ndarray) -> EnvStep:
        conts, gestures = (
            self._split_slots(np.asarray(cont)),
            self._split_slots(np.asarray(gesture)),
        )
        replies: list[EnvStep] = self._broadcast(
            "step", [("step", c, g) for c, g in zip(conts, gestures, strict=True)]
        )
        return EnvStep(*(np.concatenate(parts) for parts in zip(*replies, strict=True)))

    def collect_sharded(
        self,
        policy: ShardablePolicy,
        tasks: Sequence[Task],
        episodes_per_task: int,
        *,
        stats: CollectStats | None = None,
        max_retries: int = 3,
    ) -> list[TaskRollout]:
        """`rollouts.collect` with every worker acting for itself: the tasks are split among
        the worlds in proportion to their areas, worker w runs `policy.shard(its tasks)` with
        random stream w and collects its share, and the parent only waits. Nothing crosses
        the pipes per step, and the parent is free (e.g. to learn) meanwhile.

        A worker restarts its own world on failure (as `collect` does); a worker that dies or
        gives up is replaced (`recover`) and its share collected again, at most `max_retries`
        times per call. Rollouts come back in task order with global `task_index`."""
        stats = stats if stats is not None else CollectStats()
        start = time.perf_counter()
        shares = self._task_shares(len(tasks))
        done: dict[int, list[TaskRollout]] = {w: [] for w, s in enumerate(shares) if len(s) == 0}
        failures = 0
        while len(done) < len(shares):
            todo = [w for w in range(len(shares)) if w not in done]
            sent = [
                w
                for w in todo
                if self._send(
                    w,
                    (
                        "collect",
                        policy.shard(shares[w]),
                        [tasks[int(i)] for i in shares[w]],
                        episodes_per_task,
                        w,
                    ),
                )
            ]
            errors = self._collect_replies(sent, "collect")
            for w in sent:
                if w in self._replies:
                    rollouts, part, self._infos[w] = self._replies[w]
                    _add_stats(stats, part)
                    done[w] = [
                        replace(r, task_index=int(shares[w][r.task_index])) for r in rollouts
                    ]
            if len(done) < len(shares):
                failures += 1
                stats.retries += 1
                errors = errors or [f"world {w} is not running" for w in todo if w not in done]
                stats.errors += errors
                if failures > max_retries:
                    raise CollectError(
                        f"worlds failed {failures} times during one collect_sharded() "
                        f"(max_retries={max_retries}); last errors: {'; '.join(errors)}"
                    )
                logger.warning("%s; replacing the worker and collecting its share again", errors)
                self.recover()
        self._layout()  # a worker may have restarted its world: ports and slots are new
        stats.seconds += time.perf_counter() - start
        return [r for w in range(len(shares)) for r in done[w]]

    def _task_shares(self, n_tasks: int) -> list[np.ndarray]:
        """Task indices per worker: contiguous, in proportion to the worlds' areas."""
        counts = np.asarray(self._area_counts, dtype=np.float64)
        bounds = np.round(np.cumsum([0.0, *counts]) / counts.sum() * n_tasks).astype(np.int64)
        return [np.arange(bounds[w], bounds[w + 1]) for w in range(len(counts))]

    def recover(self) -> None:
        """Restart every failed world (in its worker, or with a new worker if it died)."""
        for w in sorted(self._failed):
            proc, info = self._procs[w], self._infos[w]
            restarts = 0 if info is None else info.restarts
            if proc is not None and proc.is_alive() and self._send_recover(w):
                continue
            self._kill_worker(w)
            self._close_conn(w)
            self._offsets[w] += restarts + 1
            self._spawn(w)
            self._failed.discard(w)
            failures = self._collect_replies([w], "restart")
            if failures:
                raise WorldFailure("; ".join(failures))
        self._layout()
        # the assignment must reach the restarted worlds before the next reset
        self.set_tasks(self._tasks)

    def _send_recover(self, w: int) -> bool:
        """Ask a live worker to restart its world; False if that failed too."""
        self._failed.discard(w)
        if not self._send(w, ("recover",)):
            return False
        return not self._collect_replies([w], "recover")

    def _close_conn(self, w: int) -> None:
        conn, self._conns[w] = self._conns[w], None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Ask every worker to close its world, then make sure no worker or world is left."""
        for w in range(self.num_envs):
            if self._procs[w] is not None and self._procs[w].is_alive():
                self._send(w, ("close",))
        for w in range(self.num_envs):
            proc = self._procs[w]
            if proc is None:
                continue
            conn = self._conns[w]
            if conn is not None and w not in self._failed:
                with contextlib.suppress(EOFError, OSError):
                    if conn.poll(30):
                        conn.recv()
            proc.join(timeout=15)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
            self._close_conn(w)
            self._procs[w] = None
        for w, info in enumerate(self._infos):
            if info is not None and info.world_pid is not None:
                _kill_leftover_world(info.world_pid, self._world_files[w])

    def __enter__(self) -> ParallelTaskEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _one_torch_thread() -> None:
    """A policy acting in a worker shares the cores with the worlds, where torch's extra
    intra-op threads only spin: one thread made the demo's batches 7x faster (0.6 s, not 4)."""
    torch = sys.modules.get("torch")  # imported by unpickling the policy, if it uses torch
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _add_stats(total: CollectStats, part: CollectStats) -> None:
    total.agent_steps += part.agent_steps
    total.kept_steps += part.kept_steps
    total.rounds += part.rounds
    total.retries += part.retries
    total.errors += part.errors


def _kill_leftover_world(pid: int, file_name: str | None) -> None:
    """Kill a world our worker started if it is still running (checked by its command line)."""
    if file_name is None:
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().decode(errors="replace")
    except OSError:
        return  # gone (or not Linux)
    if os.path.basename(file_name) in cmdline:
        logger.warning("world pid %d outlived its worker; killing it", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
