"""Protobuf wire-format primitives shared by the world's and the trainer's fast protocol paths.

Why by hand: mlagents-envs pins protobuf 3.20, which on Python 3.11 runs pure Python. Building and
parsing one message object per agent costs tens of microseconds, so a 32-agent exchange spent
~5 ms in protobuf alone. The fast paths (`world.fast_encode`, `envs.fast_env`) write and read the
same bytes directly; the stock generated messages stay the reference and must parse them to the
same values (tests/test_fast_protocol.py).

Wire format in one paragraph: a message is a sequence of fields, each `tag` then value, where
`tag = field_number << 3 | wire_type` is a varint. Wire types used by ML-Agents: 0 = varint
(int32, bool, enum; negative int32 take 10 bytes), 2 = length-delimited (varint length then the
bytes: sub-messages, strings, bytes and *packed* repeated scalars), 5 = fixed32 (float,
little-endian). Field order is free and a parser must accept both packed and unpacked repeated
scalars; proto3 omits fields that hold their default value. A map<string, M> field is a repeated
sub-message {1: key, 2: value}.

`AVATAR_META_PROTOCOL` selects the path: `fast` (default) or `stock` (the protobuf objects of
mlagents-envs on both sides, the reference). The world reads it from its environment, our
trainer (`MLAgentsTaskEnv`) from its own; each side is independent because the bytes on the wire
are valid ML-Agents messages either way.
"""

from __future__ import annotations

import os

PROTOCOL_ENV = "AVATAR_META_PROTOCOL"
MODES = ("fast", "stock")

WT_VARINT, WT_FIXED64, WT_LEN, WT_FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """Bytes the fast decoder does not understand (the caller falls back to stock protobuf)."""


def protocol_mode() -> str:
    """`fast` or `stock` from AVATAR_META_PROTOCOL (unset = fast; anything else = error)."""
    mode = os.environ.get(PROTOCOL_ENV, "fast").strip().lower() or "fast"
    if mode not in MODES:
        raise ValueError(f"{PROTOCOL_ENV}={mode!r}: expected one of {', '.join(MODES)}")
    return mode


# -- writing -------------------------------------------------------------------------------------
def varint(value: int) -> bytes:
    """Base-128 varint, low groups first; negative int32/int64 as 64-bit two's complement."""
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def len_field(field: int, payload: bytes) -> bytes:
    """A length-delimited field: sub-message, string, bytes or packed repeated scalars."""
    return tag(field, WT_LEN) + varint(len(payload)) + payload


def varint_field(field: int, value: int) -> bytes:
    return tag(field, WT_VARINT) + varint(value)


# -- reading -------------------------------------------------------------------------------------
def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, next position); raises WireError on truncation."""
    result = shift = 0
    try:
        while True:
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos
            shift += 7
            if shift > 63:
                raise WireError("varint longer than 10 bytes")
    except IndexError:
        raise WireError("truncated varint") from None


def as_int32(value: int) -> int:
    """Interpret a decoded varint as a signed int32 (as protobuf does)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def skip_field(buf: bytes, pos: int, wire_type: int) -> int:
    """Position after a field value of `wire_type` starting at `pos` (unknown fields)."""
    if wire_type == WT_VARINT:
        return read_varint(buf, pos)[1]
    if wire_type == WT_LEN:
        size, pos = read_varint(buf, pos)
        return pos + size
    if wire_type == WT_FIXED32:
        return pos + 4
    if wire_type == WT_FIXED64:
        return pos + 8
    raise WireError(f"unsupported wire type {wire_type}")


def fields(buf: bytes, pos: int = 0, end: int | None = None) -> list[tuple[int, int, int, int]]:
    """Top-level fields of one message as (field, wire_type, a, b).

    Varint: a = value. Length-delimited: a..b = payload slice. Fixed32/64: a = start of value.
    Used for the outer envelopes (a handful of fields); per-agent loops are written inline.
    """
    end = len(buf) if end is None else end
    out = []
    while pos < end:
        key, pos = read_varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == WT_VARINT:
            value, pos = read_varint(buf, pos)
            out.append((field, wire_type, value, pos))
        elif wire_type == WT_LEN:
            size, pos = read_varint(buf, pos)
            if pos + size > end:
                raise WireError("length-delimited field runs past its message")
            out.append((field, wire_type, pos, pos + size))
            pos += size
        else:
            start = pos
            pos = skip_field(buf, pos, wire_type)
            out.append((field, wire_type, start, pos))
    if pos != end:
        raise WireError("message ends inside a field")
    return out
