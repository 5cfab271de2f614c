"""Fast AdaptRequest codec: packed floats straight to/from numpy.

Why: protobuf 3.20 runs as pure Python here (mlagents-envs pins it), and it decodes a packed
float field value by value. A request of 20 episodes x 200 steps carries ~170k floats, which
takes the pure-Python parser ~0.3 s, ten times the adaptation itself. This codec reads the
same wire format (proto3 `avatar_meta.v1.AdaptRequest`, see adaptation_service.proto) with
`np.frombuffer`, so parsing costs well under a millisecond. It accepts what any conforming
encoder may send: packed or unpacked repeated floats, fields in any order, unknown fields
(skipped). The result has the attribute names of the generated message, so `Adapter` takes
either. The generated message class remains the reference; tests compare the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

_FLOATS = {
    3: "obs",
    5: "continuous_actions",
    7: "discrete_actions",
    9: "action_masks",
    10: "rewards",
    11: "dones",
}
_INTS = {1: "steps", 2: "obs_size", 4: "num_continuous", 6: "num_branches", 8: "mask_size"}
_EMPTY = np.zeros(0, np.float32)


class WireError(ValueError):
    """The bytes are not a well-formed AdaptRequest."""


@dataclass
class EpisodeView:
    steps: int = 0
    obs_size: int = 0
    obs: np.ndarray = field(default_factory=lambda: _EMPTY)
    num_continuous: int = 0
    continuous_actions: np.ndarray = field(default_factory=lambda: _EMPTY)
    num_branches: int = 0
    discrete_actions: np.ndarray = field(default_factory=lambda: _EMPTY)
    mask_size: int = 0
    action_masks: np.ndarray = field(default_factory=lambda: _EMPTY)
    rewards: np.ndarray = field(default_factory=lambda: _EMPTY)
    dones: np.ndarray = field(default_factory=lambda: _EMPTY)
    interrupted: bool = False


@dataclass
class AdaptRequestView:
    behavior_name: str = ""
    task_hint: str = ""
    episodes: list[EpisodeView] = field(default_factory=list)
    want_onnx: bool = False
    seed: int = 0


def _varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _fields(data: memoryview, pos: int, end: int) -> Any:
    """Yields (field number, wire type, value): an int for varints, (start, stop) otherwise."""
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos, end)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(data, pos, end)
            if pos + size > end:
                raise WireError("length-delimited field runs past the end")
            yield number, wire, (pos, pos + size)
            pos += size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise WireError("fixed-size field runs past the end")
            yield number, wire, (pos, pos + size)
            pos += size
        else:
            raise WireError(f"unsupported wire type {wire}")


def _episode(data: memoryview, start: int, end: int) -> EpisodeView:
    ep = EpisodeView()
    parts: dict[str, list[np.ndarray]] = {}
    for number, wire, value in _fields(data, start, end):
        if number in _FLOATS and wire in (2, 5):
            lo, hi = value
            if (hi - lo) % 4:
                raise WireError(f"{_FLOATS[number]}: packed floats of {hi - lo} bytes")
            parts.setdefault(_FLOATS[number], []).append(np.frombuffer(data[lo:hi], dtype="<f4"))
        elif number in _INTS and wire == 0:
            setattr(ep, _INTS[number], _int32(value))
        elif number == 12 and wire == 0:
            ep.interrupted = bool(value)
    for name, chunks in parts.items():
        setattr(ep, name, chunks[0] if len(chunks) == 1 else np.concatenate(chunks))
    return ep


def decode_adapt_request(raw: bytes) -> AdaptRequestView:
    """Parse AdaptRequest bytes; WireError if malformed."""
    data = memoryview(raw)
    out = AdaptRequestView()
    try:
        for number, wire, value in _fields(data, 0, len(data)):
            if number in (1, 2) and wire == 2:
                text = bytes(data[value[0] : value[1]]).decode("utf-8")
                if number == 1:
                    out.behavior_name = text
                else:
                    out.task_hint = text
            elif number == 3 and wire == 2:
                out.episodes.append(_episode(data, *value))
            elif number == 4 and wire == 0:
                out.want_onnx = bool(value)
            elif number == 5 and wire == 0:
                out.seed = value
    except UnicodeDecodeError as err:
        raise WireError(f"invalid UTF-8: {err}") from None
    return out


# ------------------------------------------------------------------------------------ encoding
def _key(number: int, wire: int) -> bytes:
    return _enc_varint((number << 3) | wire)


def _enc_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _enc_varint(len(payload)) + payload


def encode_episode(
    obs: np.ndarray,
    continuous_actions: np.ndarray,
    discrete_actions: np.ndarray,
    rewards: np.ndarray,
    action_masks: np.ndarray | None = None,
    interrupted: bool = False,
) -> bytes:
    """One serialised Episode (same bytes the generated class would produce for these
    values, up to field order) from [T, ...] arrays; the last step ends the episode."""
    t = int(obs.shape[0])
    dones = np.zeros(t, np.float32)
    dones[-1] = 1
    masks = np.zeros((t, 0), np.float32) if action_masks is None else action_masks
    ints = [
        (1, t),
        (2, obs.shape[1]),
        (4, continuous_actions.shape[1]),
        (6, discrete_actions.reshape(t, -1).shape[1]),
        (8, masks.shape[1]),
    ]
    floats = [
        (3, obs),
        (5, continuous_actions),
        (7, discrete_actions),
        (9, masks),
        (10, rewards),
        (11, dones),
    ]
    parts = []
    for number, value in ints:
        if value:
            parts.append(_key(number, 0) + _enc_varint(int(value)))
    for number, arr in floats:
        flat = np.ascontiguousarray(arr, dtype="<f4").ravel()
        if flat.size:
            parts.append(_len_field(number, flat.tobytes()))
    if interrupted:
        parts.append(_key(12, 0) + b"\x01")
    return b"".join(parts)


def encode_adapt_request(
    behavior_name: str,
    episodes: list[bytes],
    task_hint: str = "",
    want_onnx: bool = False,
    seed: int = 0,
) -> bytes:
    """A serialised AdaptRequest around episodes from `encode_episode`."""
    parts = [_len_field(1, behavior_name.encode())]
    if task_hint:
        parts.append(_len_field(2, task_hint.encode()))
    parts += [_len_field(3, ep) for ep in episodes]
    if want_onnx:
        parts.append(_key(4, 0) + b"\x01")
    if seed:
        parts.append(_key(5, 0) + _enc_varint(seed))
    return b"".join(parts)
