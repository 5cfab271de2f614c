"""`avatar-meta serve`: the gRPC server around AdaptationServicer (docs/serving.md).

Security by default:
- a bearer token (`--token-file`) is checked by a server interceptor, which sees only the
  method name and metadata: a request from an unauthenticated caller is refused with
  UNAUTHENTICATED before a single byte of it is parsed (constant-time compare);
- with `--tls-cert/--tls-key` the server listens on all interfaces over TLS; without TLS it
  binds 127.0.0.1 only and logs that;
- gRPC itself refuses messages over `--max-message-bytes` with RESOURCE_EXHAUSTED, before
  parsing, and `maximum_concurrent_rpcs` bounds the RPCs the server accepts at all.

The health service (`grpc.health.v1.Health`) answers without a token so load balancers and
probes can use it; it reveals nothing but SERVING / NOT_SERVING.
"""

from __future__ import annotations

import hmac
import logging
import signal
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import torch

from avatar_meta.export import signing
from avatar_meta.proto_gen.v1 import adaptation_service_pb2 as svc
from avatar_meta.serve import health
from avatar_meta.serve.adapter import Adapter, Limits, resolve_checkpoint
from avatar_meta.serve.service import SERVICE_NAME, AdaptationServicer, Capacity

logger = logging.getLogger("avatar_meta.serve")
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass
class ServeOptions:
    run_id: str | None = None
    results_dir: str = "results"
    checkpoint: str | None = None
    family: str | None = None
    port: int = 50061
    token_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    sign_key: str | None = None
    max_workers: int = 2
    max_queue: int = 64
    max_subscribers: int = 64
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_steps: int = 20_000
    max_episodes: int = 64
    grace_s: float = 10.0
    max_batch: int = 8
    batch_window_ms: float = 2.0
    rate_limit: float = 100.0
    rate_burst: float | None = None


class TokenAuth(grpc.ServerInterceptor):
    """Refuses calls without `authorization: Bearer <token>` (health checks excepted)."""

    def __init__(self, token: str, on_reject: Callable[[], None] | None = None) -> None:
        self._expected = f"Bearer {token}".encode()
        self._on_reject = on_reject

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        if details.method.startswith(f"/{health.SERVICE}/"):
            return continuation(details)
        got = dict(details.invocation_metadata or ()).get("authorization", "")
        got_bytes = got.encode() if isinstance(got, str) else bytes(got)
        if hmac.compare_digest(got_bytes, self._expected):
            return continuation(details)
        if self._on_reject is not None:
            self._on_reject()
        # No deserializer: the raw request bytes are never parsed.
        if details.method.endswith("/Subscribe") or details.method.endswith("/Watch"):
            return grpc.unary_stream_rpc_method_handler(_refuse_stream)
        return grpc.unary_unary_rpc_method_handler(_refuse)


def _refuse(request: bytes, context: Any) -> None:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")


def _refuse_stream(request: bytes, context: Any) -> Any:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
    yield b""  # pragma: no cover - makes this a generator


def read_token(path: str | Path) -> str:
    token = Path(path).read_text().strip()
    if len(token) < 16:
        raise ValueError(
            f"{path}: token shorter than 16 characters; use e.g. `openssl rand -hex 32`"
        )
    return token


class Running:
    """A started server: its port, servicer and health, and how to stop it."""

    def __init__(
        self,
        server: grpc.Server,
        port: int,
        servicer: AdaptationServicer,
        health_service: health.HealthService,
        address: str,
    ) -> None:
        self.server, self.port, self.servicer = server, port, servicer
        self.health, self.address = health_service, address

    def stop(self, grace: float) -> None:
        """Stop accepting, tell probes NOT_SERVING, end streams, drain in-flight Adapts."""
        self.health.set("", health.NOT_SERVING)
        self.health.set(SERVICE_NAME, health.NOT_SERVING)
        self.servicer.stopping.set()
        self.servicer.hub.close()
        self.server.stop(grace).wait()
        self.servicer.batcher.close()


def start(opts: ServeOptions) -> Running:
    """Load the run, build and start the server (returns at once)."""
    checkpoint = resolve_checkpoint(opts.run_id, opts.results_dir, opts.checkpoint)
    adapter = Adapter(
        checkpoint, limits=Limits(opts.max_episodes, opts.max_steps), family=opts.family
    )
    if opts.sign_key:
        key = signing.load_private_key(opts.sign_key)
    else:
        key = signing.generate_private_key()
        pub = checkpoint.parent.parent / "serve-public.pem"
        pub.write_bytes(signing.public_pem(key.public_key()))
        logger.warning("no --sign-key: signing with a fresh key; clients must trust %s", pub)
    if opts.max_batch < 1 or opts.batch_window_ms < 0 or opts.rate_limit < 0:
        raise ValueError("--max-batch must be >= 1, --batch-window-ms and --rate-limit >= 0")
    capacity = Capacity(
        opts.max_workers,
        opts.max_queue,
        opts.max_subscribers,
        max_batch=opts.max_batch,
        batch_window_ms=opts.batch_window_ms,
        rate_limit=opts.rate_limit,
        rate_burst=opts.rate_burst,
    )
    servicer = AdaptationServicer(adapter, key, capacity)
    servicer.onnx.template(adapter.spec)  # the one graph export, at start rather than mid-request
    interceptors: list[grpc.ServerInterceptor] = []
    if opts.token_file:
        interceptors.append(
            TokenAuth(
                read_token(opts.token_file), lambda: servicer.metrics.add("errors.UNAUTHENTICATED")
            )
        )
    else:
        logger.warning("no --token-file: any local process may call this server")
    if capacity.rate_limit > 0:
        logger.info("rate limit: %s", servicer.rate_limiter.describe())
    # Threads: every computing/queued Adapt and every subscriber holds one; beyond the sum,
    # gRPC itself answers RESOURCE_EXHAUSTED instead of queueing.
    threads = opts.max_workers + opts.max_queue + opts.max_subscribers + 4
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="serve"),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", opts.max_message_bytes),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=threads,
    )
    server.add_generic_rpc_handlers((servicer.handler(),))
    health_service = health.HealthService()
    server.add_generic_rpc_handlers((health_service.handler(),))
    _add_reflection(server)
    if opts.tls_cert or opts.tls_key:
        if not (opts.tls_cert and opts.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        creds = grpc.ssl_server_credentials(
            [(Path(opts.tls_key).read_bytes(), Path(opts.tls_cert).read_bytes())]
        )
        host = "[::]"
        port = server.add_secure_port(f"{host}:{opts.port}", creds)
    else:
        host = "127.0.0.1"
        port = server.add_insecure_port(f"{host}:{opts.port}")
        logger.warning("no TLS: listening on loopback only (pass --tls-cert/--tls-key to expose)")
    if port == 0:
        raise OSError(f"could not bind {host}:{opts.port}")
    server.start()
    health_service.set("", health.SERVING)
    health_service.set(SERVICE_NAME, health.SERVING)
    return Running(server, port, servicer, health_service, f"{host}:{port}")


def _add_reflection(server: grpc.Server) -> None:
    """Standard server reflection (grpcurl, Postman). grpcio-reflection 1.48.2 is pinned: it is
    the last release that runs on protobuf 3.20 (requirements/constraints.txt)."""
    from grpc_reflection.v1alpha import reflection  # type: ignore[import-not-found]

    names = (
        svc.DESCRIPTOR.services_by_name["AdaptationService"].full_name,
        health.SERVICE,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)


def serve(opts: ServeOptions) -> int:
    """Run until SIGTERM/SIGINT, then drain gracefully (`opts.grace_s`)."""
    torch.set_num_threads(1)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    running = start(opts)
    done = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        logger.info("signal %d: draining (grace %.1f s)", signum, opts.grace_s)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"serving {SERVICE_NAME} on {running.address}", flush=True)
    while not done.wait(1.0):
        pass
    running.stop(opts.grace_s)
    logger.info("stopped")
    return 0
