"""A small client for `avatar-meta serve`: the reference for game-side clients.

What a game must do (C# does the same with Grpc.Core and the generated messages):
1. send `authorization: Bearer <token>` metadata on every call and a deadline;
2. verify the envelope's signature with the trusted public key *before* parsing the payload,
   and refuse unsigned or tampered weights (`signing.verify` does both);
3. on RESOURCE_EXHAUSTED / UNAVAILABLE retry later with backoff; on INVALID_ARGUMENT fix the
   field named in the message (retrying cannot help).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from cryptography.hazmat.primitives.asymmetric import rsa

from avatar_meta import contract
from avatar_meta.export import signing
from avatar_meta.proto_gen.v1 import adaptation_service_pb2 as svc
from avatar_meta.proto_gen.v1 import adaptation_service_pb2_grpc as svc_grpc
from avatar_meta.proto_gen.v1 import policy_weights_pb2 as pw
from avatar_meta.serve import health


def make_episode(
    obs: np.ndarray,
    continuous_actions: np.ndarray,
    discrete_actions: np.ndarray,
    rewards: np.ndarray,
    action_masks: np.ndarray | None = None,
    interrupted: bool = False,
) -> svc.Episode:
    """An Episode message from per-step arrays ([T, ...]; masks 1 = masked)."""
    t = int(obs.shape[0])
    ep = svc.Episode(
        steps=t,
        obs_size=int(obs.shape[1]),
        num_continuous=int(continuous_actions.shape[1]),
        num_branches=int(discrete_actions.reshape(t, -1).shape[1]),
        interrupted=interrupted,
    )
    ep.obs.extend(np.asarray(obs, np.float32).ravel().tolist())
    ep.continuous_actions.extend(np.asarray(continuous_actions, np.float32).ravel().tolist())
    ep.discrete_actions.extend(np.asarray(discrete_actions, np.float32).ravel().tolist())
    ep.rewards.extend(np.asarray(rewards, np.float32).ravel().tolist())
    if action_masks is not None:
        ep.mask_size = int(action_masks.shape[1])
        ep.action_masks.extend(np.asarray(action_masks, np.float32).ravel().tolist())
    dones = np.zeros(t, np.float32)
    dones[-1] = 1
    ep.dones.extend(dones.tolist())
    return ep


class AdaptationClient:
    """Blocking client; one channel, reusable from many threads."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        public_key: rsa.RSAPublicKey | str | Path | None = None,
        root_cert: bytes | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if root_cert is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=root_cert)
            self.channel = grpc.secure_channel(address, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self.stub = svc_grpc.AdaptationServiceStub(self.channel)
        # Adapt with a pre-serialised request (serve.wire.encode_adapt_request): skips the
        # pure-Python protobuf encoder, which is slow for packed floats.
        self._adapt_bytes = self.channel.unary_unary(
            "/avatar_meta.v1.AdaptationService/Adapt",
            request_serializer=None,
            response_deserializer=svc.AdaptResponse.FromString,
        )
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        if public_key is None or isinstance(public_key, rsa.RSAPublicKey):
            self.public_key = public_key
        else:
            self.public_key = signing.load_public_key(public_key)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> AdaptationClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def adapt_raw(self, request: svc.AdaptRequest, timeout: float = 30.0) -> svc.AdaptResponse:
        """The AdaptResponse as received (unverified)."""
        response: svc.AdaptResponse = self.stub.Adapt(
            request, timeout=timeout, metadata=self.metadata
        )
        return response

    def adapt(
        self,
        episodes: Sequence[svc.Episode],
        *,
        behavior: str = contract.BEHAVIOR_NAME,
        task_hint: str = "",
        want_onnx: bool = False,
        seed: int = 0,
        timeout: float = 30.0,
    ) -> tuple[pw.PolicyWeights, svc.AdaptResponse]:
        """(verified PolicyWeights, the raw response). Raises grpc.RpcError on a status, and
        signing.VerificationError if the weights are unsigned or do not match the key."""
        request = svc.AdaptRequest(
            behavior_name=behavior,
            task_hint=task_hint,
            episodes=list(episodes),
            want_onnx=want_onnx,
            seed=seed,
        )
        response = self.adapt_raw(request, timeout)
        return self.verify(response.weights), response

    def adapt_encoded(
        self, request: bytes, timeout: float = 30.0
    ) -> tuple[pw.PolicyWeights, svc.AdaptResponse]:
        """Like `adapt`, for a request already serialised with `serve.wire`."""
        response: svc.AdaptResponse = self._adapt_bytes(
            request, timeout=timeout, metadata=self.metadata
        )
        return self.verify(response.weights), response

    def verify(self, envelope: pw.PolicyWeightsEnvelope) -> pw.PolicyWeights:
        if self.public_key is None:
            raise signing.VerificationError("no public key configured: refusing to trust weights")
        return signing.verify(envelope, self.public_key)

    def subscribe(
        self,
        behavior: str = contract.BEHAVIOR_NAME,
        task_id: str = "",
        after_version: int = 0,
        timeout: float | None = None,
    ) -> Iterator[pw.PolicyWeights]:
        """Verified PolicyWeights as the server publishes them (cancel by closing the
        iterator or the client)."""
        stream = self.stub.Subscribe(
            svc.SubscribeRequest(
                behavior_name=behavior, task_id=task_id, after_version=after_version
            ),
            timeout=timeout,
            metadata=self.metadata,
        )
        try:
            for envelope in stream:
                yield self.verify(envelope)
        finally:
            stream.cancel()

    def stats(self, timeout: float = 5.0) -> svc.StatsResponse:
        response: svc.StatsResponse = self.stub.Stats(
            svc.StatsRequest(), timeout=timeout, metadata=self.metadata
        )
        return response

    def health(self, service: str = "", timeout: float = 5.0) -> int:
        """grpc.health.v1 status (1 = SERVING)."""
        return health.check(self.channel, service, timeout)
