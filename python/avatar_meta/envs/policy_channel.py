"""PolicyChannel, trainer side: stream signed PolicyWeights envelopes to a world while training.

Register it with `UnityEnvironment(side_channels=[PolicyChannel(), ...])` and call
`push(area, envelope_bytes)`. The envelope is cut into chunks (`CHUNK_SIZE`, 256 KiB) and the
chunks leave over the next exchanges, at most `max_bytes_per_exchange` (1 MiB) per exchange, so
one Exchange stays far below gRPC's 4 MiB limit whatever the policy's size. The world reassembles,
verifies the signature and answers with one ACK record per transfer (and Stats keys
`Avatar/Policy/Version` / `Avatar/Policy/Rejected`).

Records (little-endian; see docs/exports.md):
    CHUNK  int32 kind=1, int32 area (-1 = all), int32 transfer_id, int32 chunk_index,
           int32 chunk_count, int32 total_size, int32 flags (bit 0: run it in inference mode),
           then the chunk bytes (the rest of the record)
    ACK    int32 kind=2, int32 area, int32 transfer_id, int32 status (0 accepted, 1 refused),
           int64 policy_version, string reason (int32 length + ASCII)   [world -> trainer]
"""

from __future__ import annotations

import itertools
import logging
import struct
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from mlagents_envs.side_channel import IncomingMessage, SideChannel

from avatar_meta import contract

logger = logging.getLogger("avatar_meta.envs.policy_channel")

KIND_CHUNK = 1
KIND_ACK = 2
CHUNK_HEADER = struct.Struct("<iiiiiii")
ACK_HEADER = struct.Struct("<iiiiq")
CHUNK_SIZE = 256 * 1024 - CHUNK_HEADER.size
"""Envelope bytes per CHUNK record, so that a record (header included) is exactly 256 KiB."""
MAX_BYTES_PER_EXCHANGE = 1024 * 1024
FLAG_INFERENCE = 1
ALL_AREAS = -1
STATUS_ACCEPTED = 0
STATUS_REFUSED = 1


@dataclass(frozen=True)
class PolicyAck:
    """The world's answer to one transfer."""

    area: int
    transfer_id: int
    accepted: bool
    policy_version: int
    reason: str


def chunk_records(
    area: int, transfer_id: int, envelope: bytes, flags: int = 0, chunk_size: int = CHUNK_SIZE
) -> list[bytes]:
    """The CHUNK payloads of one transfer (at least one, even for an empty envelope)."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    pieces = [envelope[i : i + chunk_size] for i in range(0, len(envelope), chunk_size)] or [b""]
    return [
        CHUNK_HEADER.pack(KIND_CHUNK, area, transfer_id, index, len(pieces), len(envelope), flags)
        + piece
        for index, piece in enumerate(pieces)
    ]


def decode_ack(payload: bytes) -> PolicyAck:
    """Parse an ACK record; ValueError when it is malformed."""
    if len(payload) < ACK_HEADER.size + 4:
        raise ValueError(f"ACK record of {len(payload)} bytes is too short")
    kind, area, transfer_id, status, version = ACK_HEADER.unpack_from(payload)
    if kind != KIND_ACK:
        raise ValueError(f"record kind {kind} is not an ACK")
    (size,) = struct.unpack_from("<i", payload, ACK_HEADER.size)
    start = ACK_HEADER.size + 4
    reason = payload[start : start + max(size, 0)].decode("ascii", errors="replace")
    return PolicyAck(area, transfer_id, status == STATUS_ACCEPTED, version, reason)


class PolicyChannel(SideChannel):
    """Chunks envelopes onto the wire at a bounded rate and collects the world's ACKs.

    mlagents' SideChannelManager reads `message_queue` once per exchange and then assigns `[]`
    to it; here `message_queue` is a property that hands out only the next
    `max_bytes_per_exchange` worth of chunks and keeps the rest pending for later exchanges.
    """

    def __init__(
        self,
        chunk_size: int = CHUNK_SIZE,
        max_bytes_per_exchange: int = MAX_BYTES_PER_EXCHANGE,
    ) -> None:
        self._pending: deque[bytearray] = deque()
        self._chunk_size = chunk_size
        self._budget = max_bytes_per_exchange
        self._ids = itertools.count(1)
        self.acks: list[PolicyAck] = []
        super().__init__(uuid.UUID(contract.POLICY_CHANNEL_ID))

    # The SideChannelManager's view of the queue --------------------------------------------
    @property  # type: ignore[override]
    def message_queue(self) -> list[bytearray]:
        batch: list[bytearray] = []
        size = 0
        while self._pending and (not batch or size + len(self._pending[0]) <= self._budget):
            message = self._pending.popleft()
            batch.append(message)
            size += len(message)
        return batch

    @message_queue.setter
    def message_queue(self, value: Iterable[bytearray]) -> None:
        # `[]` after a send (the batch already left the queue); anything else is queued.
        self._pending.extend(bytearray(v) for v in value)

    # API ------------------------------------------------------------------------------------
    def push(self, area: int, envelope: bytes, inference: bool = False) -> int:
        """Queue a signed envelope for `area` (-1 = every area); returns its transfer id.
        `inference=True` asks the world to act for that area with the policy on arrival."""
        transfer_id = next(self._ids)
        flags = FLAG_INFERENCE if inference else 0
        for record in chunk_records(area, transfer_id, envelope, flags, self._chunk_size):
            self._pending.append(bytearray(record))
        logger.debug(
            "PolicyChannel: transfer %d, %d bytes for area %d queued",
            transfer_id,
            len(envelope),
            area,
        )
        return transfer_id

    @property
    def pending_bytes(self) -> int:
        """Bytes still waiting for an exchange."""
        return sum(len(m) for m in self._pending)

    def ack_for(self, transfer_id: int) -> PolicyAck | None:
        return next((a for a in self.acks if a.transfer_id == transfer_id), None)

    def on_message_received(self, msg: IncomingMessage) -> None:
        try:
            ack = decode_ack(bytes(msg.get_raw_bytes()))
        except ValueError as err:
            logger.warning("PolicyChannel: unreadable record from the world (%s); ignored", err)
            return
        self.acks.append(ack)
        if not ack.accepted:
            logger.warning(
                "PolicyChannel: world refused transfer %d for area %d: %s",
                ack.transfer_id,
                ack.area,
                ack.reason,
            )
