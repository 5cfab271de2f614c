"""PolicyChannel, world side: reassemble, verify and (in `inference` areas) run streamed policies.

The trainer's `envs.policy_channel.PolicyChannel` sends signed PolicyWeights envelopes in CHUNK
records (layout in that module and docs/exports.md). Here every complete transfer is checked:
the signature must verify against the public key the world was given (`--policy-public-key PATH`
or `AVATAR_META_PUBLIC_KEY`; without a key every policy is refused), the payload must describe a
network the reference evaluator can run and whose observation size is the contract's. A verified
policy becomes the latest policy of its area(s); the world answers each transfer with an ACK
record and Stats (`Avatar/Policy/Version`, most recent; `Avatar/Policy/Rejected`, sum).

Inference mode: for areas in `--inference-areas` (or pushed with the inference flag), once a
verified policy is there, the world itself acts for that area's avatars with the numpy reference
evaluator (deterministic actions), ignoring the trainer's actions for them. This is how tests
prove that what arrived acts exactly like the trainer's policy, and how a headless build keeps
running a policy without a trainer's decisions.

Like the rest of the world, nothing here raises on bad input: bad records are logged and dropped.
"""

from __future__ import annotations

import argparse
import logging
import os
import struct
import uuid
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from avatar_meta import contract
from avatar_meta.export import signing
from avatar_meta.export.reference_eval import ReferencePolicy

logger = logging.getLogger("avatar_meta.world.policy_receiver")

POLICY_CHANNEL = uuid.UUID(contract.POLICY_CHANNEL_ID)
_STATS_CHANNEL = uuid.UUID(contract.STATS_CHANNEL_ID)
INFERENCE_AREAS_ENV = "AVATAR_META_INFERENCE_AREAS"
KIND_CHUNK, KIND_ACK = 1, 2
CHUNK_HEADER = struct.Struct("<iiiiiii")
ACK_HEADER = struct.Struct("<iiiiq")
FLAG_INFERENCE = 1
MAX_POLICY_BYTES = 64 * 1024 * 1024
"""Transfers announcing more are refused before any memory is set aside for them."""
MAX_OPEN_TRANSFERS = 8
"""Unfinished transfers kept at once; the oldest is dropped beyond that."""
_MOST_RECENT, _SUM = 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The world's command-line flags for policies (the launcher calls this)."""
    parser.add_argument(
        "--policy-public-key",
        default=None,
        help=f"PEM public key that streamed policies must be signed for (or {signing.PUBLIC_KEY_ENV})",
    )
    parser.add_argument(
        "--inference-areas",
        default=None,
        help="areas the world acts for with streamed policies: 'all' or e.g. '0,2' "
        f"(or {INFERENCE_AREAS_ENV})",
    )


def apply_arguments(args: argparse.Namespace) -> None:
    """Flags win over the environment: copy them into it for `PolicyReceiver.from_environment`."""
    if getattr(args, "policy_public_key", None):
        os.environ[signing.PUBLIC_KEY_ENV] = args.policy_public_key
    if getattr(args, "inference_areas", None):
        os.environ[INFERENCE_AREAS_ENV] = args.inference_areas


def parse_areas(text: str, num_areas: int) -> set[int]:
    """'all' or a comma-separated list of area indices; ValueError on anything else."""
    text = text.strip()
    if not text:
        return set()
    if text == "all":
        return set(range(num_areas))
    return {int(part) for part in text.split(",") if part.strip()}


def _stat(key: str, value: float, aggregation: int) -> bytes:
    raw = key.encode("ascii")
    payload = struct.pack("<i", len(raw)) + raw + struct.pack("<fi", value, aggregation)
    return _STATS_CHANNEL.bytes_le + struct.pack("<i", len(payload)) + payload


@dataclass
class _Transfer:
    area: int
    count: int
    total: int
    flags: int
    chunks: dict[int, bytes] = field(default_factory=dict)


class PolicyReceiver:
    """Reassembly, verification, per-area latest policy, and inference-mode actions."""

    def __init__(
        self,
        num_areas: int,
        public_key: RSAPublicKey | None,
        inference_areas: set[int] | None = None,
    ) -> None:
        self.num_areas = num_areas
        self._key = public_key
        self.inference_areas: set[int] = set(inference_areas or ())
        self.policies: dict[int, ReferencePolicy] = {}
        self._transfers: dict[tuple[int, int], _Transfer] = {}
        self._outgoing: list[bytes] = []

    @staticmethod
    def from_environment(num_areas: int) -> PolicyReceiver:
        """Configured from AVATAR_META_PUBLIC_KEY and AVATAR_META_INFERENCE_AREAS (see
        `apply_arguments`); a key that cannot be read is logged and means "refuse everything"."""
        key = None
        path = os.environ.get(signing.PUBLIC_KEY_ENV)
        if path:
            try:
                key = signing.load_public_key(path)
                logger.info("PolicyChannel: trusting key %s (%s)", signing.key_id(key), path)
            except (OSError, ValueError) as err:
                logger.error("PolicyChannel: cannot load public key %s: %s", path, err)
        areas: set[int] = set()
        try:
            areas = parse_areas(os.environ.get(INFERENCE_AREAS_ENV, ""), num_areas)
        except ValueError:
            logger.error("PolicyChannel: bad %s; no inference areas", INFERENCE_AREAS_ENV)
        return PolicyReceiver(num_areas, key, areas)

    # -- incoming ---------------------------------------------------------------------------
    def receive(self, payload: bytes) -> None:
        """One CHUNK record; completes, verifies and stores a policy when its last chunk came."""
        if len(payload) < CHUNK_HEADER.size:
            logger.warning("PolicyChannel: record of %d bytes is too short; ignored", len(payload))
            return
        kind, area, tid, index, count, total, flags = CHUNK_HEADER.unpack_from(payload)
        if kind != KIND_CHUNK:
            logger.warning("PolicyChannel: unknown record kind %d; ignored", kind)
            return
        problem = self._check_header(area, index, count, total)
        if problem:
            self._ack(area, tid, False, 0, problem)
            return
        transfer = self._transfers.get((area, tid))
        if transfer is None:
            if len(self._transfers) >= MAX_OPEN_TRANSFERS:
                oldest = next(iter(self._transfers))
                logger.warning("PolicyChannel: dropping unfinished transfer %s", oldest)
                del self._transfers[oldest]
            transfer = self._transfers[(area, tid)] = _Transfer(area, count, total, flags)
        if (transfer.count, transfer.total) != (count, total):
            del self._transfers[(area, tid)]
            self._ack(area, tid, False, 0, "chunk headers of one transfer disagree")
            return
        transfer.chunks[index] = payload[CHUNK_HEADER.size :]
        if len(transfer.chunks) == count:
            del self._transfers[(area, tid)]
            self._complete(tid, transfer)

    def _check_header(self, area: int, index: int, count: int, total: int) -> str:
        if not (area == -1 or 0 <= area < self.num_areas):
            return f"area {area} does not exist (0..{self.num_areas - 1} or -1)"
        if not 0 < count <= 1 + total // 1024 + 1024 or not 0 <= index < count:
            return f"bad chunk index {index} of {count}"
        if not 0 <= total <= MAX_POLICY_BYTES:
            return f"policy of {total} bytes exceeds the {MAX_POLICY_BYTES}-byte limit"
        return ""

    def _complete(self, tid: int, transfer: _Transfer) -> None:
        data = b"".join(transfer.chunks[i] for i in range(transfer.count))
        if len(data) != transfer.total:
            self._ack(transfer.area, tid, False, 0, f"got {len(data)} of {transfer.total} bytes")
            return
        if self._key is None:
            self._ack(transfer.area, tid, False, 0, "no public key configured; refusing policies")
            return
        try:
            weights = signing.verify(data, self._key)
            policy = ReferencePolicy.from_weights(weights)
        except ValueError as err:  # VerificationError is a ValueError
            self._ack(transfer.area, tid, False, 0, str(err))
            return
        if policy.obs_size != contract.OBSERVATION_SIZE:
            reason = f"policy observes {policy.obs_size} values, the contract {contract.OBSERVATION_SIZE}"
            self._ack(transfer.area, tid, False, policy.version, reason)
            return
        areas = range(self.num_areas) if transfer.area == -1 else [transfer.area]
        for area in areas:
            self.policies[area] = policy
            if transfer.flags & FLAG_INFERENCE:
                self.inference_areas.add(area)
        logger.info(
            "PolicyChannel: area %d now has policy version %d (task %r, %d bytes)",
            transfer.area,
            policy.version,
            policy.task_id,
            len(data),
        )
        self._ack(transfer.area, tid, True, policy.version, "")

    def _ack(self, area: int, tid: int, accepted: bool, version: int, reason: str) -> None:
        if not accepted:
            logger.warning("PolicyChannel: refused transfer %d for area %d: %s", tid, area, reason)
        raw = reason.encode("ascii", errors="replace")[:1000]
        payload = ACK_HEADER.pack(KIND_ACK, area, tid, 0 if accepted else 1, version)
        payload += struct.pack("<i", len(raw)) + raw
        self._outgoing.append(POLICY_CHANNEL.bytes_le + struct.pack("<i", len(payload)) + payload)
        if accepted:
            self._outgoing.append(_stat("Avatar/Policy/Version", float(version), _MOST_RECENT))
        else:
            self._outgoing.append(_stat("Avatar/Policy/Rejected", 1.0, _SUM))

    # -- outgoing and acting ----------------------------------------------------------------
    def take_outgoing(self) -> bytes:
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        return data

    def override(
        self,
        obs: np.ndarray,
        mask: np.ndarray,
        continuous: np.ndarray,
        gesture: np.ndarray,
        agents_per_area: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The actions to apply: the trainer's, except for avatars of inference areas that have
        a verified policy, which act with it on this decision's `obs`/`mask` (True = masked)."""
        active = [a for a in sorted(self.inference_areas) if a in self.policies]
        if not active:
            return continuous, gesture
        continuous, gesture = np.array(continuous, np.float32), np.array(gesture, copy=True)
        for area in active:
            rows = slice(area * agents_per_area, (area + 1) * agents_per_area)
            cont, disc = self.policies[area].act(obs[rows], mask[rows])
            continuous[rows] = cont
            gesture[rows] = disc.reshape(gesture[rows].shape).astype(gesture.dtype)
        return continuous, gesture
