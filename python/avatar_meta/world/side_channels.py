"""Side channels as the Unity side of ML-Agents sees them, for the headless world.

Side-channel bytes ride inside every exchange (`UnityRLInputProto.side_channel` from the trainer,
`UnityRLOutputProto.side_channel` back). The blob is a sequence of records:

    [16-byte channel GUID, System.Guid.ToByteArray() order == uuid.bytes_le]
    [int32 little-endian payload length]
    [payload]

Payload values are little-endian: int32, float32, strings as int32 length + ASCII bytes, float
lists as int32 count + float32s. This module decodes what a trainer sends (EngineConfiguration,
EnvironmentParameters, TaskChannel, training analytics) and encodes what the world sends back
(Stats). Unlike mlagents' `IncomingMessage`, which returns defaults past the end of a buffer,
the reader here treats a short payload as an error: a truncated task must be rejected, not
silently turned into area 0.

The world must never crash on what a trainer sends, so every decoder here logs one clear line
and drops the bad record instead of raising.
"""

from __future__ import annotations

import logging
import math
import struct
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

import numpy as np

from avatar_meta import contract
from avatar_meta.world.policy_receiver import POLICY_CHANNEL, PolicyReceiver  # PolicyChannel
from avatar_meta.world.types import EpisodeStats, TaskSpec

logger = logging.getLogger("avatar_meta.world.side_channels")

TASK_CHANNEL = uuid.UUID(contract.TASK_CHANNEL_ID)
STATS_CHANNEL = uuid.UUID(contract.STATS_CHANNEL_ID)
ENV_PARAMS_CHANNEL = uuid.UUID(contract.ENV_PARAMS_CHANNEL_ID)
ENGINE_CONFIG_CHANNEL = uuid.UUID(contract.ENGINE_CONFIG_CHANNEL_ID)
TRAINING_ANALYTICS_CHANNEL = uuid.UUID("b664a4a9-d86f-5a5f-95cb-e8353a7e8356")
"""mlagents sends TrainingEnvironmentInitialized / TrainingBehaviorInitialized here; Unity only
forwards them to its analytics, so the world accepts and ignores them."""

ALL_AREAS = -1
"""TaskChannel area index meaning "every area of this world"."""
MAX_FAMILY_NAME = 64
"""Longer TaskChannel family strings are rejected before they reach a log line."""


class ProblemLog:
    """Logs bad input without flooding the log: the first few of each kind, then every 1000th.

    A trainer that sends one malformed action per step for hours must not fill the disk, but the
    first occurrence must be visible with a message that says what was wrong.
    """

    def __init__(self, log: logging.Logger, first: int = 3, every: int = 1000) -> None:
        self._log = log
        self._first = first
        self._every = every
        self._counts: dict[str, int] = {}

    def warn(self, kind: str, message: str) -> None:
        count = self._counts.get(kind, 0) + 1
        self._counts[kind] = count
        if count <= self._first:
            self._log.warning(message)
        elif count % self._every == 0:
            self._log.warning("%s (seen %d times)", message, count)


# ---------------------------------------------------------------------------------------------
# Record framing and payload primitives
# ---------------------------------------------------------------------------------------------
class PayloadError(ValueError):
    """A side-channel payload is shorter than its own fields say, or holds non-ASCII text."""


def split_records(data: bytes, problems: ProblemLog) -> Iterator[tuple[uuid.UUID, bytes]]:
    """Yield `(channel, payload)` for every complete record in `data`.

    A truncated record (fewer than 20 header bytes left, a negative length, or a length past the
    end) ends the blob: nothing after it can be framed reliably, so the rest is dropped with one
    log line.
    """
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        if len(view) - offset < 20:
            problems.warn(
                "record-header",
                f"side channel: truncated record header ({len(view) - offset} bytes left); "
                "dropping the rest of this message",
            )
            return
        channel = uuid.UUID(bytes_le=bytes(view[offset : offset + 16]))
        (length,) = struct.unpack_from("<i", view, offset + 16)
        start = offset + 20
        if length < 0 or start + length > len(view):
            problems.warn(
                "record-length",
                f"side channel {channel}: record says {length} bytes but "
                f"{len(view) - start} remain; dropping the rest of this message",
            )
            return
        yield channel, bytes(view[start : start + length])
        offset = start + length


def encode_record(channel: uuid.UUID, payload: bytes) -> bytes:
    """Frame one payload for `channel` (the inverse of `split_records`)."""
    return channel.bytes_le + struct.pack("<i", len(payload)) + payload


class Reader:
    """Sequential little-endian reader over one payload; raises PayloadError when short."""

    def __init__(self, payload: bytes) -> None:
        self._data = payload
        self._offset = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._offset

    def _take(self, size: int, what: str) -> bytes:
        if size < 0 or self.remaining < size:
            raise PayloadError(f"{what} needs {size} bytes, {self.remaining} left")
        chunk = self._data[self._offset : self._offset + size]
        self._offset += size
        return chunk

    def int32(self, what: str = "int32") -> int:
        return int(struct.unpack("<i", self._take(4, what))[0])

    def float32(self, what: str = "float32") -> float:
        return float(struct.unpack("<f", self._take(4, what))[0])

    def float_list(self, what: str = "float list") -> list[float]:
        count = self.int32(f"{what} length")
        if count < 0 or count > self.remaining // 4:
            raise PayloadError(f"{what} claims {count} floats, {self.remaining // 4} fit")
        return [float(v) for v in struct.unpack(f"<{count}f", self._take(4 * count, what))]

    def string(self, what: str = "string") -> str:
        size = self.int32(f"{what} length")
        raw = self._take(size, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as err:
            raise PayloadError(f"{what} is not ASCII") from err


def pack_string(value: str) -> bytes:
    """int32 length + ASCII bytes (what mlagents' OutgoingMessage.write_string produces)."""
    raw = value.encode("ascii")
    return struct.pack("<i", len(raw)) + raw


def pack_floats(values: Sequence[float]) -> bytes:
    """int32 count + float32 values (OutgoingMessage.write_float32_list)."""
    return struct.pack(f"<i{len(values)}f", len(values), *values)


# ---------------------------------------------------------------------------------------------
# TaskChannel: which scenario each area runs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskMessage:
    """One decoded TaskChannel record, before validation against the contract."""

    area: int
    family: str
    params: tuple[float, ...]
    body: tuple[float, ...]


def encode_task(area: int, family: str, params: Sequence[float], body: Sequence[float]) -> bytes:
    """TaskChannel payload: int32 area, string family, float list params, float list body.

    `area` = ALL_AREAS (-1) addresses every area; an empty `family` clears the assignment (the
    area goes back to the EnvironmentParameters defaults); an empty `body` means the default body.
    """
    return struct.pack("<i", area) + pack_string(family) + pack_floats(params) + pack_floats(body)


def decode_task(payload: bytes) -> TaskMessage:
    """Parse a TaskChannel payload; raises PayloadError if it is truncated.

    A payload that ends right after the params list is accepted with an empty body, so a trainer
    that never varies the body may omit it.
    """
    reader = Reader(payload)
    area = reader.int32("area")
    family = reader.string("family")
    params = tuple(reader.float_list("params"))
    body = tuple(reader.float_list("body")) if reader.remaining else ()
    if reader.remaining:
        raise PayloadError(f"{reader.remaining} unexpected trailing bytes")
    return TaskMessage(area, family, params, body)


def task_from_message(message: TaskMessage) -> TaskSpec | None:
    """Validate against the contract: None clears the area; ValueError names what is wrong.

    Non-finite values are rejected here (the contract's clip would pass NaN through); finite
    values outside a parameter's range are clipped by `TaskSpec.make`.
    """
    if message.family == "":
        return None
    if len(message.family) > MAX_FAMILY_NAME:
        raise ValueError(f"family name of {len(message.family)} characters is not a family")
    values = message.params + message.body
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"task for family {message.family!r} has non-finite values {values}")
    return TaskSpec.make(message.family, message.params, message.body or None)


def _out_of_range(task: TaskSpec, message: TaskMessage) -> list[str]:
    """Names of the values that `TaskSpec.make` had to clip (for one informative log line)."""
    spec = contract.FAMILY_BY_NAME[task.family]
    names = [p.name for p in spec.params] + [p.name for p in contract.BODY_PARAMS]
    sent = list(message.params) + (list(message.body) or list(task.body))
    kept = list(task.params) + list(task.body)
    return [
        f"{n}={s:g}->{k:g}"
        for n, s, k in zip(names, sent, kept, strict=False)
        if abs(s - k) > 1e-6 * max(1.0, abs(s))
    ]


# ---------------------------------------------------------------------------------------------
# EnvironmentParameters: floats and samplers
# ---------------------------------------------------------------------------------------------
class EnvParamType(IntEnum):
    FLOAT = 0
    SAMPLER = 1


class SamplerType(IntEnum):
    UNIFORM = 0
    GAUSSIAN = 1
    MULTIRANGE_UNIFORM = 2


class Sampler:
    """A parameter that is re-drawn on every read, as Unity's SamplerFactory functions are.

    Unity seeds each sampler only with the seed in the message. Here the generator is seeded with
    (world seed, message seed), so a run is reproducible from its seeds while two worlds started
    with different seeds (one per env worker) do not draw identical sequences.
    """

    def __init__(self, kind: SamplerType, args: Sequence[float], seed: int, world_seed: int):
        self.kind = kind
        self.args = tuple(args)
        self._rng = np.random.default_rng([world_seed % 2**32, seed % 2**32])
        if kind == SamplerType.MULTIRANGE_UNIFORM:
            lows, highs = np.array(self.args[0::2]), np.array(self.args[1::2])
            self._lows, self._sizes = lows, highs - lows
            self._weights = self._sizes / self._sizes.sum()

    def sample(self) -> float:
        if self.kind == SamplerType.UNIFORM:
            low, high = self.args
            return float(low + self._rng.random() * (high - low))
        if self.kind == SamplerType.GAUSSIAN:
            mean, std = self.args
            return float(self._rng.normal(mean, std))
        index = int(self._rng.choice(len(self._sizes), p=self._weights))
        return float(self._lows[index] + self._rng.random() * self._sizes[index])


def decode_env_parameter(payload: bytes, world_seed: int) -> tuple[str, float | Sampler]:
    """Parse one EnvironmentParameters record into (key, value or sampler); ValueError if bad."""
    reader = Reader(payload)
    key = reader.string("key")
    kind = reader.int32("data type")
    if kind == EnvParamType.FLOAT:
        value = reader.float32("value")
        if not math.isfinite(value):
            raise ValueError(f"parameter {key!r} is not finite ({value})")
        return key, value
    if kind != EnvParamType.SAMPLER:
        raise ValueError(f"parameter {key!r}: unknown data type {kind}")
    seed = reader.int32("sampler seed")
    sampler_type = reader.int32("sampler type")
    if sampler_type in (SamplerType.UNIFORM, SamplerType.GAUSSIAN):
        args: list[float] = [reader.float32("sampler arg 1"), reader.float32("sampler arg 2")]
        if sampler_type == SamplerType.GAUSSIAN and args[1] < 0:
            raise ValueError(f"parameter {key!r}: negative standard deviation {args[1]}")
    elif sampler_type == SamplerType.MULTIRANGE_UNIFORM:
        args = reader.float_list("intervals")
        sizes = [hi - lo for lo, hi in zip(args[0::2], args[1::2], strict=False)]
        if not args or len(args) % 2 or any(s < 0 for s in sizes) or sum(sizes) <= 0:
            raise ValueError(f"parameter {key!r}: bad multi-range intervals {args}")
    else:
        raise ValueError(f"parameter {key!r}: unknown sampler type {sampler_type}")
    if not all(math.isfinite(a) for a in args):
        raise ValueError(f"parameter {key!r}: non-finite sampler arguments {args}")
    return key, Sampler(SamplerType(sampler_type), args, seed, world_seed)


def describe_engine_config(payload: bytes) -> str:
    """Human-readable EngineConfiguration record (the world has no renderer; it only logs it)."""
    reader = Reader(payload)
    kind = reader.int32("configuration type")
    if kind == 0:
        return f"screen {reader.int32()}x{reader.int32()}"
    if kind == 1:
        return f"quality level {reader.int32()}"
    if kind == 2:
        return f"time scale {reader.float32():g}"
    if kind == 3:
        return f"target frame rate {reader.int32()}"
    if kind == 4:
        return f"capture frame rate {reader.int32()}"
    raise ValueError(f"unknown engine configuration type {kind}")


# ---------------------------------------------------------------------------------------------
# Stats (world -> trainer)
# ---------------------------------------------------------------------------------------------
class StatsAggregation(IntEnum):
    """Same numbers as mlagents_envs' StatsAggregationMethod."""

    AVERAGE = 0
    MOST_RECENT = 1
    SUM = 2
    HISTOGRAM = 3


def encode_stat(key: str, value: float, aggregation: StatsAggregation) -> bytes:
    """Stats payload: string key, float32 value, int32 aggregation method."""
    return pack_string(key) + struct.pack("<fi", value, int(aggregation))


def episode_stat_records(finished: Sequence[EpisodeStats]) -> bytes:
    """Framed Stats records for finished episodes: per-family return and success.

    AVERAGE lets a trainer summarise many episodes between two reports correctly. Episode length
    is not sent: mlagents-learn already reports it as "Environment/Episode Length".
    """
    out = []
    for ep in finished:
        prefix = f"Avatar/{ep.family}"
        for key, value in (
            (f"{prefix}/Episode Return", ep.episode_return),
            (f"{prefix}/Success Rate", 1.0 if ep.success else 0.0),
        ):
            out.append(
                encode_record(STATS_CHANNEL, encode_stat(key, value, StatsAggregation.AVERAGE))
            )
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# The router the protocol client uses
# ---------------------------------------------------------------------------------------------
class TaskSink(Protocol):
    """The part of the Plaza that side channels drive."""

    num_areas: int

    def assign_task(self, area: int, task: TaskSpec | None) -> None: ...

    def set_defaults(self, values: dict[str, float]) -> list[str]: ...


class WorldSideChannels:
    """Routes incoming records to the plaza and collects the outgoing Stats records.

    Order matters and mirrors Unity: the protocol client calls `receive` with the side-channel
    bytes of an input *before* acting on its command, so a task assigned in the same message as
    a RESET is in force for the episodes that RESET starts.
    """

    def __init__(
        self,
        sink: TaskSink,
        world_seed: int,
        problems: ProblemLog | None = None,
        send_stats: bool = True,
    ) -> None:
        self._sink = sink
        self._send_stats = send_stats
        self._world_seed = world_seed
        # Side-channel messages are rare (per reset or meta-batch): log far more of them.
        self._problems = problems or ProblemLog(logger, first=100)
        self._params: dict[str, float | Sampler] = {}
        self._params_dirty = False
        self._reported_ignored: set[str] = set()
        self._outgoing: list[bytes] = []
        self.policies = PolicyReceiver.from_environment(sink.num_areas)  # PolicyChannel

    # -- incoming ---------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        """Apply every record in one input's side-channel blob; never raises on bad input."""
        for channel, payload in split_records(data, self._problems):
            if channel == TASK_CHANNEL:
                self._on_task(payload)
            elif channel == ENV_PARAMS_CHANNEL:
                self._on_env_parameter(payload)
            elif channel == ENGINE_CONFIG_CHANNEL:
                self._on_engine_config(payload)
            elif channel == POLICY_CHANNEL:
                self.policies.receive(payload)
            elif channel == TRAINING_ANALYTICS_CHANNEL:
                pass  # Unity forwards these to its analytics; a headless world has none.
            else:
                self._problems.warn(
                    "unknown-channel",
                    f"side channel: ignoring {len(payload)} bytes for unknown channel {channel}",
                )
        self.push_defaults(only_if_changed=True)

    def _on_task(self, payload: bytes) -> None:
        try:
            message = decode_task(payload)
        except PayloadError as err:
            self._problems.warn("task-payload", f"TaskChannel: malformed record ({err}); ignored")
            return
        areas = self._areas_for(message.area)
        if areas is None:
            return
        try:
            task = task_from_message(message)
        except ValueError as err:
            self._problems.warn("task-invalid", f"TaskChannel: area {message.area}: {err}; ignored")
            return
        if task is not None:
            clipped = _out_of_range(task, message)
            if clipped:
                self._problems.warn(
                    "task-clipped",
                    f"TaskChannel: area {message.area} {task.family}: clipped {', '.join(clipped)}",
                )
        for area in areas:
            self._sink.assign_task(area, task)
        logger.debug("TaskChannel: area %s <- %s", message.area, task)

    def _areas_for(self, area: int) -> range | None:
        if area == ALL_AREAS:
            return range(self._sink.num_areas)
        if 0 <= area < self._sink.num_areas:
            return range(area, area + 1)
        self._problems.warn(
            "task-area",
            f"TaskChannel: area {area} does not exist (this world has areas 0.."
            f"{self._sink.num_areas - 1}, or -1 for all); ignored",
        )
        return None

    def _on_env_parameter(self, payload: bytes) -> None:
        try:
            key, value = decode_env_parameter(payload, self._world_seed)
        except ValueError as err:  # PayloadError is a ValueError too
            self._problems.warn("env-param", f"EnvironmentParameters: {err}; ignored")
            return
        self._params[key] = value
        self._params_dirty = True

    def _on_engine_config(self, payload: bytes) -> None:
        try:
            logger.debug(
                "EngineConfiguration: %s (no effect headless)", describe_engine_config(payload)
            )
        except ValueError as err:
            self._problems.warn("engine-config", f"EngineConfiguration: {err}; ignored")

    # -- parameters ---------------------------------------------------------------------------
    @property
    def has_samplers(self) -> bool:
        return any(isinstance(v, Sampler) for v in self._params.values())

    def read_parameters(self) -> dict[str, float]:
        """Current parameter values; every sampler draws a new value on each call."""
        return {k: v.sample() if isinstance(v, Sampler) else v for k, v in self._params.items()}

    def push_defaults(self, only_if_changed: bool = False) -> None:
        """Hand the current parameter values to the plaza (re-drawing samplers).

        The protocol client calls this before every step while a sampler is set, so each episode
        that starts sees a fresh draw, like a Unity scene reading the parameter in OnEpisodeBegin
        (areas that start on the same step share one draw).
        """
        if only_if_changed and not self._params_dirty:
            return
        self._params_dirty = False
        ignored = self._sink.set_defaults(self.read_parameters())
        for key in set(ignored) - self._reported_ignored:
            self._reported_ignored.add(key)
            logger.warning("EnvironmentParameters: the world does not use %r; ignored", key)

    # -- outgoing -----------------------------------------------------------------------------
    def episodes_finished(self, finished: Sequence[EpisodeStats]) -> None:
        if finished and self._send_stats:
            self._outgoing.append(episode_stat_records(finished))

    def take_outgoing(self) -> bytes:
        """All queued records for the next output message, framed; clears the queue."""
        data = b"".join(self._outgoing) + self.policies.take_outgoing()
        self._outgoing.clear()
        return data
