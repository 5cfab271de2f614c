"""The standard `grpc.health.v1.Health` service (Check and Watch), without grpcio-health-checking.

Why hand-written: grpcio-health-checking >= 1.49 pulls protobuf >= 5 (we are pinned to 3.20.3
by mlagents-envs), and the two messages are one field each, so a ten-line wire codec is
simpler than another pinned dependency. The wire format is the official one, so
grpc_health_probe, Kubernetes gRPC probes and grpcurl work unchanged:

    HealthCheckRequest  { string service = 1; }
    HealthCheckResponse { ServingStatus status = 1; }   UNKNOWN 0, SERVING 1, NOT_SERVING 2,
                                                        SERVICE_UNKNOWN 3 (Watch only)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc

from avatar_meta.wire import read_varint

SERVICE = "grpc.health.v1.Health"
UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = 0, 1, 2, 3


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def decode_request(data: bytes) -> str:
    """The `service` field of a HealthCheckRequest (unknown fields skipped)."""
    pos, service = 0, ""
    while pos < len(data):
        key, pos = read_varint(data, pos)
        wire = key & 7
        if wire == 0:
            value, pos = read_varint(data, pos)
        elif wire == 2:
            size, pos = read_varint(data, pos)
            if key >> 3 == 1:
                service = data[pos : pos + size].decode("utf-8")
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return service


def encode_request(service: str) -> bytes:
    raw = service.encode("utf-8")
    return b"\x0a" + _varint(len(raw)) + raw if raw else b""


def encode_response(status: int) -> bytes:
    return b"\x08" + _varint(status) if status else b""


def decode_response(data: bytes) -> int:
    pos, status = 0, UNKNOWN
    while pos < len(data):
        key, pos = read_varint(data, pos)
        if key == 0x08:
            status, pos = read_varint(data, pos)
        else:
            raise ValueError("unexpected field in HealthCheckResponse")
    return status


class HealthService:
    """Statuses per service name ("" = the whole server); Watch streams every change."""

    def __init__(self) -> None:
        self._status: dict[str, int] = {}
        self._changed = threading.Condition()

    def set(self, service: str, status: int) -> None:
        with self._changed:
            self._status[service] = status
            self._changed.notify_all()

    def check(self, service: str, context: Any) -> int:
        with self._changed:
            status = self._status.get(service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {service!r}")
        return int(status or UNKNOWN)

    def watch(self, service: str, context: Any) -> Iterator[int]:
        last = -1
        while context.is_active():
            with self._changed:
                status = self._status.get(service, SERVICE_UNKNOWN)
                if status == last:
                    self._changed.wait(timeout=0.5)
                    continue
            last = status
            yield status

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to pass to `server.add_generic_rpc_handlers`."""
        methods = {
            "Check": grpc.unary_unary_rpc_method_handler(
                self.check, request_deserializer=decode_request, response_serializer=encode_response
            ),
            "Watch": grpc.unary_stream_rpc_method_handler(
                self.watch, request_deserializer=decode_request, response_serializer=encode_response
            ),
        }
        return grpc.method_handlers_generic_handler(SERVICE, methods)


def check(
    channel: grpc.Channel, service: str = "", timeout: float = 5.0, metadata: Any = None
) -> int:
    """Client side: the status of `service` on `channel` (raises grpc.RpcError)."""
    call = channel.unary_unary(
        f"/{SERVICE}/Check",
        request_serializer=encode_request,
        response_deserializer=decode_response,
    )
    return int(call(service, timeout=timeout, metadata=metadata))
