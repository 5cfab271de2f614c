"""Micro-batching of concurrent Adapt requests, and per-client rate limits.

`Batcher`: admitted, validated requests wait in a bounded queue; `workers` threads take them
in batches. The worker that is collecting takes the first waiting request, then everything
else already waiting, and, while more admitted requests are still being parsed, waits up to
`window_s` for them (never when nobody else is coming, so a lone request pays no window), up
to `max_batch` requests. The batch is adapted in one call (`Adapter.to_batches` +
`Adapter.adapt_many`: one GAE pass, and the critic and the `torch.func.vmap`-ed inner step
over groups of zero-weight-padded requests of at most `adapter.vmap_rows` rows); each caller
then packs and signs its own answer.
Only one worker collects at a time, so batches form while the other worker computes.

Deadlines: a request whose deadline passes (or whose client goes away) before a worker
claims it is dropped from the batch, never computed; its caller answers DEADLINE_EXCEEDED
(or CANCELLED) at its deadline, not after the batch.

`RateLimiter`: a token bucket per client (`client_key`: the peer's address without its port,
plus the bearer token when there is one): `rate` requests/s sustained, bursts of `burst`.
Bounded: at most `max_clients` buckets are kept (least recently used evicted).
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from avatar_meta.rl import Params
from avatar_meta.serve.adapter import Adapter, Request

PENDING, RUNNING, DONE, DROPPED = range(4)


@dataclass(eq=False)
class Job:
    """One admitted request waiting for (or going through) a batched adaptation."""

    request: Request
    deadline: float | None
    """time.monotonic() after which the caller no longer wants the answer."""
    is_active: Callable[[], bool] = lambda: True
    result: Params | None = None
    error: BaseException | None = None
    batch_size: int = 0
    _state: int = PENDING
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _done: threading.Event = field(default_factory=threading.Event)

    def claim(self, now: float) -> bool:
        """Worker side: PENDING -> RUNNING unless dropped, expired or abandoned."""
        with self._lock:
            if self._state != PENDING:
                return False
            if (self.deadline is not None and now >= self.deadline) or not self.is_active():
                self._state = DROPPED
                self._done.set()
                return False
            self._state = RUNNING
            return True

    def finish(self, result: Params | None, error: BaseException | None, size: int) -> None:
        with self._lock:
            self.result, self.error, self.batch_size = result, error, size
            self._state = DONE
        self._done.set()

    def wait(self, timeout: float | None) -> bool:
        """Caller side: True when the result (or an error) is there."""
        return self._done.wait(timeout) and self._state == DONE

    @property
    def dropped(self) -> bool:
        return self._state == DROPPED

    def abandon(self) -> None:
        """Caller side, giving up: a job no worker has claimed yet is never computed."""
        with self._lock:
            if self._state == PENDING:
                self._state = DROPPED
                self._done.set()


class Batcher:
    """Worker threads adapting queued jobs in micro-batches (see the module docstring)."""

    def __init__(
        self,
        adapter: Adapter,
        *,
        workers: int = 2,
        max_batch: int = 8,
        window_s: float = 0.002,
        max_pending: int = 66,
        expecting: Callable[[], bool] = lambda: False,
    ) -> None:
        if workers < 1 or max_batch < 1 or window_s < 0:
            raise ValueError("workers and max_batch must be >= 1, window >= 0")
        self.adapter = adapter
        self.max_batch, self.window_s = max_batch, window_s
        self._expecting = expecting
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_pending)
        self._collect = threading.Lock()
        self._lock = threading.Lock()
        self.batches = 0
        self.batched_requests = 0
        self.largest_batch = 0
        self._threads = [
            threading.Thread(target=self._run, name=f"adapt-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def submit(self, job: Job) -> bool:
        """Queue a job; False when the queue is full (the caller answers RESOURCE_EXHAUSTED)."""
        try:
            self._queue.put_nowait(job)
            return True
        except queue.Full:
            return False

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=30)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "batches": self.batches,
                "batched_requests": self.batched_requests,
                "largest_batch": self.largest_batch,
            }

    # ------------------------------------------------------------------------------ workers
    def _gather(self) -> tuple[list[Job], bool]:
        """(claimed jobs of the next batch, whether the batcher is closing). Jobs that expired
        or were abandoned while queued are dropped here and take no place in the batch."""
        jobs: list[Job] = []
        end = 0.0
        with self._collect:
            while len(jobs) < self.max_batch:
                if not jobs:  # block for the first live job; the window starts with it
                    item = self._queue.get()
                    end = time.monotonic() + self.window_s
                else:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        left = end - time.monotonic()
                        if left <= 0 or not self._expecting():
                            break
                        try:
                            item = self._queue.get(timeout=min(left, 0.0005))
                        except queue.Empty:
                            continue
                if item is None:
                    return jobs, True
                if item.claim(time.monotonic()):
                    jobs.append(item)
        return jobs, False

    def _run(self) -> None:
        while True:
            jobs, closing = self._gather()
            if jobs:
                self._adapt(jobs)
            if closing:
                return

    def _adapt(self, jobs: list[Job]) -> None:
        try:
            batches = self.adapter.to_batches([j.request for j in jobs], check=False)
            results = self.adapter.adapt_many(batches)
        except BaseException as err:  # noqa: BLE001 - handed to every caller of the batch
            for j in jobs:
                j.finish(None, err, len(jobs))
            return
        with self._lock:
            self.batches += 1
            self.batched_requests += len(jobs)
            self.largest_batch = max(self.largest_batch, len(jobs))
        for j, params in zip(jobs, results, strict=True):
            j.finish(params, None, len(jobs))


class RateLimiter:
    """Token buckets keyed by client; `rate <= 0` disables the limit."""

    def __init__(self, rate: float, burst: float | None = None, max_clients: int = 4096) -> None:
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self.max_clients = max_clients
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def describe(self) -> str:
        return f"{self.rate:g} requests/s per client (burst {self.burst:g})"

    def allow(self, key: str, now: float | None = None) -> tuple[bool, float]:
        """(allowed, seconds until one token is available)."""
        if not self.enabled:
            return True, 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return allowed, 0.0 if allowed else (1.0 - tokens) / self.rate


def client_key(context: Any) -> str:
    """The rate-limit key of a call: the peer's host (address without the port, so new
    connections do not get new buckets), with a digest of the bearer token when there is one
    (so a token shared by a game build still gives each machine its own bucket, and clients
    with different tokens behind one address do not share one)."""
    peer: str = context.peer() or ""
    host = peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            raw = value.encode() if isinstance(value, str) else bytes(value)
            return f"token:{hashlib.sha256(raw).hexdigest()[:32]}@{host}"
    return "peer:" + host
