"""`avatar_meta.v1.AdaptationService`: Adapt, Subscribe and Stats over gRPC.

Back-pressure, not queues: at most `max_workers + max_queue` adaptations are admitted at once
(computing in `max_workers` batch workers or waiting for one); anything beyond is refused at
once with RESOURCE_EXHAUSTED so a burst can never pile up unbounded memory or latency, and so
is a client over its rate limit (`RateLimiter`). Concurrent requests are adapted together
in micro-batches (`serve.batching.Batcher`). Waiting honours the caller's deadline.
Subscribers get a small bounded queue each; a slow subscriber loses its *oldest* pending
versions (it only ever needs the newest policy), it never blocks a publisher.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric import rsa

from avatar_meta.export import signing
from avatar_meta.export.onnx_export import OnnxTemplate
from avatar_meta.proto_gen.v1 import adaptation_service_pb2 as svc
from avatar_meta.proto_gen.v1 import adaptation_service_pb2_grpc as svc_grpc
from avatar_meta.proto_gen.v1 import policy_weights_pb2 as pw
from avatar_meta.serve.adapter import Adapter, InvalidRequest
from avatar_meta.serve.batching import Batcher, Job, RateLimiter, client_key
from avatar_meta.serve.wire import WireError, decode_adapt_request

logger = logging.getLogger("avatar_meta.serve")
SERVICE_NAME = "avatar_meta.v1.AdaptationService"
LATENCY_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


@dataclass(frozen=True)
class Capacity:
    """Concurrency bounds of one server."""

    max_workers: int = 2
    """Threads computing (batched) adaptations at once (about the number of cores)."""
    max_queue: int = 64
    """Adaptations allowed to wait for a worker; beyond that RESOURCE_EXHAUSTED."""
    max_subscribers: int = 64
    subscriber_queue: int = 8
    max_batch: int = 8
    """Adapt requests adapted together in one vmapped step, at most."""
    batch_window_ms: float = 2.0
    """How long a batch waits for requests still being parsed (never when none are)."""
    rate_limit: float = 100.0
    """Adapt requests per second per client (peer host + bearer token); 0 = no limit."""
    rate_burst: float | None = None
    """Bucket size (default: one second's worth, at least 1)."""


class Metrics:
    """Counters and latency histograms behind the Stats RPC (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self._hist: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        self.started = time.monotonic()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def observe(self, rpc: str, code: grpc.StatusCode, ms: float) -> None:
        with self._lock:
            self.counters[f"requests.{rpc}"] += 1
            self.counters[f"codes.{rpc}.{code.name}"] += 1
            if code != grpc.StatusCode.OK:
                self.counters[f"errors.{code.name}"] += 1
            hist = self._hist.setdefault(rpc, [0] * (len(LATENCY_BOUNDS_MS) + 1))
            hist[bisect.bisect_left(LATENCY_BOUNDS_MS, ms)] += 1
            self._sums[rpc] = self._sums.get(rpc, 0.0) + ms

    def snapshot(self, gauges: dict[str, int]) -> svc.StatsResponse:
        with self._lock:
            out = svc.StatsResponse(uptime_ms=int((time.monotonic() - self.started) * 1000))
            for k, v in {**self.counters, **gauges}.items():
                out.counters[k] = int(v)
            for rpc, counts in sorted(self._hist.items()):
                out.latency.add(
                    name=rpc,
                    upper_bounds_ms=[float(b) for b in LATENCY_BOUNDS_MS],
                    counts=counts,
                    count=sum(counts),
                    sum_ms=self._sums[rpc],
                )
            return out


class _Subscriber:
    def __init__(self, behavior: str, task_id: str, size: int) -> None:
        self.behavior, self.task_id = behavior, task_id
        self.queue: queue.Queue[pw.PolicyWeightsEnvelope | None] = queue.Queue(maxsize=size)

    def offer(self, item: pw.PolicyWeightsEnvelope | None) -> None:
        """Enqueue without ever blocking: drop the oldest pending version when full."""
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self.queue.get_nowait()


class Hub:
    """Who listens to which (behaviour, task), and the latest version of each."""

    def __init__(self, capacity: Capacity) -> None:
        self._lock = threading.Lock()
        self._subs: set[_Subscriber] = set()
        self._latest: dict[tuple[str, str], tuple[int, pw.PolicyWeightsEnvelope]] = {}
        self.capacity = capacity

    def __len__(self) -> int:
        with self._lock:
            return len(self._subs)

    def add(self, behavior: str, task_id: str, after: int) -> _Subscriber | None:
        """A new subscriber primed with the latest matching versions newer than `after`;
        None when the subscriber limit is reached."""
        sub = _Subscriber(behavior, task_id, self.capacity.subscriber_queue)
        with self._lock:
            if len(self._subs) >= self.capacity.max_subscribers:
                return None
            for (b, t), (version, env) in sorted(self._latest.items(), key=lambda kv: kv[1][0]):
                if b == behavior and task_id in ("", t) and version > after:
                    sub.offer(env)
            self._subs.add(sub)
        return sub

    def remove(self, sub: _Subscriber) -> None:
        with self._lock:
            self._subs.discard(sub)
        sub.offer(None)  # wake the streaming thread so it returns promptly

    def publish(
        self, behavior: str, task_id: str, version: int, env: pw.PolicyWeightsEnvelope
    ) -> int:
        """Deliver to every matching subscriber; returns how many."""
        with self._lock:
            self._latest[(behavior, task_id)] = (version, env)
            targets = [
                s for s in self._subs if s.behavior == behavior and s.task_id in ("", task_id)
            ]
        for s in targets:
            s.offer(env)
        return len(targets)

    def close(self) -> None:
        with self._lock:
            subs = list(self._subs)
        for s in subs:
            s.offer(None)


class AdaptationServicer(svc_grpc.AdaptationServiceServicer):
    """The RPC handlers. Every error is a gRPC status; nothing a client sends can raise out
    of a handler (the catch-all answers INTERNAL and logs the traceback)."""

    def __init__(
        self,
        adapter: Adapter,
        sign_key: rsa.RSAPrivateKey,
        capacity: Capacity = Capacity(),
        onnx: OnnxTemplate | None = None,
    ) -> None:
        self.adapter = adapter
        self.sign_key = sign_key
        self.capacity = capacity
        self.metrics = Metrics()
        self.hub = Hub(capacity)
        self.onnx = onnx or OnnxTemplate()
        self._versions = itertools.count(1)
        self._version_lock = threading.Lock()
        self._admit_lock = threading.Lock()
        self._admitted = 0
        self._parsing_now = 0
        self.rate_limiter = RateLimiter(capacity.rate_limit, capacity.rate_burst)
        self.batcher = Batcher(
            adapter,
            workers=capacity.max_workers,
            max_batch=capacity.max_batch,
            window_s=capacity.batch_window_ms / 1000.0,
            max_pending=capacity.max_workers + capacity.max_queue,
            expecting=self._expecting,
        )
        self.stopping = threading.Event()

    # ----------------------------------------------------------------------------- helpers
    def gauges(self) -> dict[str, int]:
        with self._admit_lock:
            inflight = self._admitted
        return {"subscribers": len(self.hub), "inflight": inflight, **self.batcher.stats()}

    @contextlib.contextmanager
    def _parsing(self) -> Iterator[None]:
        """Marks an admitted request that is not queued yet (the batcher may wait for it)."""
        with self._admit_lock:
            self._parsing_now += 1
        try:
            yield
        finally:
            with self._admit_lock:
                self._parsing_now -= 1

    def _expecting(self) -> bool:
        with self._admit_lock:
            return self._parsing_now > 0

    def _admit(self) -> bool:
        with self._admit_lock:
            if self._admitted >= self.capacity.max_workers + self.capacity.max_queue:
                return False
            self._admitted += 1
            return True

    def _release(self) -> None:
        with self._admit_lock:
            self._admitted -= 1

    def _next_version(self) -> int:
        with self._version_lock:
            return next(self._versions)

    def _finish(
        self, rpc: str, t0: float, code: grpc.StatusCode, context: Any, **extra: Any
    ) -> None:
        ms = (time.perf_counter() - t0) * 1000
        self.metrics.observe(rpc, code, ms)
        logger.info(
            json.dumps(
                {"rpc": rpc, "code": code.name, "ms": round(ms, 3), "peer": context.peer(), **extra}
            )
        )

    # ----------------------------------------------------------------------------- RPCs
    def Adapt(self, request: bytes | svc.AdaptRequest, context: Any) -> svc.AdaptResponse:
        t0 = time.perf_counter()
        code, message = grpc.StatusCode.OK, ""
        response = svc.AdaptResponse()
        try:
            response = self._adapt(request, context, t0)
        except _Abort as err:
            code, message = err.code, err.message
        except Exception:  # a bug must not take the server down; the client gets INTERNAL
            logger.exception("Adapt failed")
            code, message = grpc.StatusCode.INTERNAL, "internal error (see the server log)"
        self._finish("Adapt", t0, code, context, message=message)
        if code != grpc.StatusCode.OK:
            context.abort(code, message)
        return response

    def _adapt(self, raw: bytes | svc.AdaptRequest, context: Any, t0: float) -> svc.AdaptResponse:
        if self.stopping.is_set():
            raise _Abort(grpc.StatusCode.UNAVAILABLE, "server is shutting down")
        # Rate limit, then admission: a refused request costs no parsing at all.
        if self.rate_limiter.enabled:
            allowed, wait_s = self.rate_limiter.allow(client_key(context))
            if not allowed:
                self.metrics.add("rate_limited")
                raise _Abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"rate limit of {self.rate_limiter.describe()} exceeded; "
                    f"retry in {wait_s:.3f} s",
                )
        if not self._admit():
            raise _Abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too many adaptations in flight; retry with backoff",
            )
        try:
            with self._parsing():
                try:
                    request = (
                        raw if isinstance(raw, svc.AdaptRequest) else decode_adapt_request(raw)
                    )
                    self.adapter.validate(request)
                except (InvalidRequest, WireError) as err:
                    raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from None
                remaining = context.time_remaining()
                deadline = None if remaining is None else time.monotonic() + max(remaining, 0.0)
                job = Job(request, deadline, context.is_active)
                # Admission bounds the queue; only jobs of callers that gave up, not yet
                # discarded by a worker, can make it overflow.
                if not self.batcher.submit(job):
                    raise _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "adaptation queue full")
            self._await(job, deadline, context)
        finally:
            self._release()
        if job.error is not None:
            raise job.error
        adapted = job.result
        assert adapted is not None
        version = self._next_version()
        task_id = request.task_hint
        envelope = signing.sign(
            self.adapter.pack(adapted, version=version, task_id=task_id), self.sign_key
        )
        onnx = b""
        if request.want_onnx:
            onnx = self.onnx.bytes_for(self.adapter.spec, adapted, self.adapter.buffers)
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise _Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed while adapting")
        self.hub.publish(self.adapter.behavior, task_id, version, envelope)
        return svc.AdaptResponse(
            weights=envelope, onnx=onnx, adapt_ms=(time.perf_counter() - t0) * 1000
        )

    @staticmethod
    def _await(job: Job, deadline: float | None, context: Any) -> None:
        """Wait for a job's batch, in short slices so that a caller without a deadline still
        notices when its client goes away (and a shutdown never leaves a thread blocked)."""
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if job.wait(0.25 if left is None else min(max(left, 0.0), 0.25)):
                return
            if not context.is_active():
                job.abandon()
                raise _Abort(grpc.StatusCode.CANCELLED, "client went away")
            if job.dropped or (deadline is not None and time.monotonic() >= deadline):
                job.abandon()
                raise _Abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed while queued or adapting"
                )

    def Subscribe(
        self, request: svc.SubscribeRequest, context: Any
    ) -> Iterator[pw.PolicyWeightsEnvelope]:
        t0 = time.perf_counter()
        if request.behavior_name != self.adapter.behavior:
            self._finish("Subscribe", t0, grpc.StatusCode.INVALID_ARGUMENT, context)
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"behavior_name: unknown behaviour {request.behavior_name!r}",
            )
        sub = self.hub.add(request.behavior_name, request.task_id, request.after_version)
        if sub is None:
            self._finish("Subscribe", t0, grpc.StatusCode.RESOURCE_EXHAUSTED, context)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many subscribers")
        assert sub is not None
        # Called when the RPC ends for any reason, including a client that vanished.
        context.add_callback(lambda: self.hub.remove(sub))
        code = grpc.StatusCode.OK
        try:
            while context.is_active() and not self.stopping.is_set():
                try:
                    item = sub.queue.get(timeout=0.5)
                except queue.Empty:
                    continue
                if item is None:
                    break
                yield item
        finally:
            self.hub.remove(sub)
            if self.stopping.is_set():
                code = grpc.StatusCode.UNAVAILABLE
            self._finish("Subscribe", t0, code, context)

    def Stats(self, request: svc.StatsRequest, context: Any) -> svc.StatsResponse:
        return self.metrics.snapshot(self.gauges())

    def handler(self) -> grpc.GenericRpcHandler:
        """Like the generated `add_AdaptationServiceServicer_to_server`, except that Adapt
        receives raw bytes (parsed by `wire`, after admission control)."""
        methods = {
            "Adapt": grpc.unary_unary_rpc_method_handler(
                self.Adapt, response_serializer=svc.AdaptResponse.SerializeToString
            ),
            "Subscribe": grpc.unary_stream_rpc_method_handler(
                self.Subscribe,
                request_deserializer=svc.SubscribeRequest.FromString,
                response_serializer=pw.PolicyWeightsEnvelope.SerializeToString,
            ),
            "Stats": grpc.unary_unary_rpc_method_handler(
                self.Stats,
                request_deserializer=svc.StatsRequest.FromString,
                response_serializer=svc.StatsResponse.SerializeToString,
            ),
        }
        return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message
