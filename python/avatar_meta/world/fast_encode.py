"""The world's fast protocol path: UnityMessageProto bytes written and read by hand.

`AgentInfoWriter` (unity_client.py) builds one AgentInfoProto object per agent and serialises
the message in pure-Python protobuf: ~3 ms per 32-agent step. Here the same message is written
straight as bytes (~0.1 ms), and the trainer's actions are read with numpy. The stock generated
messages parse these bytes to exactly the values of the reference encoding; that is the contract
(tests/test_fast_protocol.py checks it on random messages), not byte identity.

Layout written for one step (field numbers from mlagents' .proto files; see `avatar_meta.wire`):

    UnityMessageProto
      1 header             {1 status: 200}                      constant bytes
      2 unity_output
        1 rl_output
          2 agentInfos     map entry {1 key: "AvatarAgent?team=0", 2 value: ListAgentInfoProto}
              1 value      AgentInfoProto, repeated, one per info:
                  7 reward            fixed32 float
                  8 done, 9 max_step_reached   varint 1 (only when set)
                  10 id               varint
                  11 action_mask      packed bools (decision requests only)
                  13 observations     ObservationProto, same bytes for every agent but the floats:
                       1 shape [size] packed, 4 float_data {1 data: packed floats},
                       6 dimension_properties [None] packed, 8 name
          3 side_channel   bytes (omitted when empty)
        2 rl_initialization_output {brain_parameters}   first message only, encoded by protobuf

Everything around the floats of an observation is precomputed once (`_OBS_PREFIX`/`_OBS_SUFFIX`);
floats are `astype('<f4').tobytes()` of the whole batch, sliced per agent.

Actions (the trainer's answer), `UnityRLInputProto.ListAgentActionProto`: stock mlagents-envs and
our fast trainer each write every agent's AgentActionProto with the same layout (same tags and
lengths, only the values differ). `decode_action_list` parses the first one, checks with numpy
that every row has the same structure bytes, and then reads all continuous actions as one float32
view and the gestures as bytes. Anything else (ragged rows, gestures >= 128, missing fields) goes
through the stock parser and `unity_client.actions_from_protos`, which log and repair bad input.
"""

from __future__ import annotations

import numpy as np
from mlagents_envs.communicator_objects.unity_rl_initialization_output_pb2 import (
    UnityRLInitializationOutputProto,
)
from mlagents_envs.communicator_objects.unity_rl_input_pb2 import UnityRLInputProto

from avatar_meta import contract
from avatar_meta.wire import (
    WT_FIXED32,
    WT_LEN,
    WT_VARINT,
    WireError,
    as_int32,
    fields,
    len_field,
    read_varint,
    tag,
    varint,
    varint_field,
)
from avatar_meta.world.types import StepResult

_HEADER_200 = len_field(1, varint_field(1, 200))
_REWARD_TAG = tag(7, WT_FIXED32)
_DONE = varint_field(8, 1)
_DONE_INTERRUPTED = varint_field(8, 1) + varint_field(9, 1)
_ID_TAG = tag(10, WT_VARINT)
_ENTRY_TAG = tag(1, WT_LEN)


def _observation_parts(size: int, name: str) -> tuple[bytes, bytes]:
    """(prefix, suffix) of AgentInfo field 13 around `size` packed floats (DIMENSION_NONE=1)."""
    float_bytes = 4 * size
    float_data_len = len(tag(1, WT_LEN) + varint(float_bytes)) + float_bytes
    head = len_field(1, varint(size)) + tag(4, WT_LEN) + varint(float_data_len)
    head += tag(1, WT_LEN) + varint(float_bytes)
    tail = len_field(6, varint(1)) + len_field(8, name.encode())
    body_len = len(head) + float_bytes + len(tail)
    return tag(13, WT_LEN) + varint(body_len) + head, tail


class FastAgentInfoEncoder:
    """Writes the world's per-step UnityMessageProto as bytes (see the module doc)."""

    def __init__(self, behavior_key: str, brain_parameters: bytes) -> None:
        """`brain_parameters`: a serialised BrainParametersProto, sent with the first message."""
        self.size = contract.OBSERVATION_SIZE
        self._obs_prefix, self._obs_suffix = _observation_parts(self.size, contract.SENSOR_NAME)
        self._map_key = len_field(1, behavior_key.encode())
        init = UnityRLInitializationOutputProto()
        init.brain_parameters.add().MergeFromString(brain_parameters)
        self._init_output = len_field(2, init.SerializeToString())
        self._ids: list[bytes] = []
        self._mask_tag = b""

    def _id_field(self, agent_id: int) -> bytes:
        while agent_id >= len(self._ids):
            self._ids.append(_ID_TAG + varint(len(self._ids)))
        return self._ids[agent_id]

    def _infos(
        self,
        order: list[int],
        obs: np.ndarray,
        reward: np.ndarray,
        mask: np.ndarray | None,
        flags: list[bytes] | None,
    ) -> list[bytes]:
        """Length-prefixed AgentInfoProtos for the agents in `order` (rows of obs/reward/mask)."""
        obs_bytes = np.ascontiguousarray(obs, dtype="<f4").tobytes()
        rew_bytes = np.ascontiguousarray(reward, dtype="<f4").tobytes()
        row = 4 * self.size
        mask_bytes, width = b"", 0
        if mask is not None:
            width = mask.shape[1]
            mask_bytes = np.ascontiguousarray(mask, dtype=np.uint8).tobytes()
            mask_head = tag(11, WT_LEN) + varint(width)
        prefix, suffix = self._obs_prefix, self._obs_suffix
        out: list[bytes] = []
        for k, i in enumerate(order):
            parts = [_REWARD_TAG, rew_bytes[4 * k : 4 * k + 4]]
            if flags is not None:
                parts.append(flags[k])
            parts.append(self._id_field(i))
            if mask is not None:
                parts += [mask_head, mask_bytes[width * k : width * (k + 1)]]
            parts += [prefix, obs_bytes[row * k : row * (k + 1)], suffix]
            body = b"".join(parts)
            out += [_ENTRY_TAG, varint(len(body)), body]
        return out

    def _message(self, infos: list[bytes], side_channel: bytes, with_brain: bool) -> bytes:
        rl_output = b""
        if infos:
            entry = self._map_key + len_field(2, b"".join(infos))
            rl_output = len_field(2, entry)
        if side_channel:
            rl_output += len_field(3, side_channel)
        unity_output = len_field(1, rl_output)
        if with_brain:
            unity_output += self._init_output
        return _HEADER_200 + len_field(2, unity_output)

    def reset_message(
        self, obs: np.ndarray, mask: np.ndarray, side_channel: bytes, with_brain: bool
    ) -> bytes:
        """Every agent requests its first decision of a fresh episode (reward 0)."""
        n = obs.shape[0]
        infos = self._infos(list(range(n)), obs, np.zeros(n, np.float32), mask, None)
        return self._message(infos, side_channel, with_brain)

    def step_message(self, result: StepResult, side_channel: bytes, with_brain: bool) -> bytes:
        """Terminal infos of the agents that ended, then a decision request from every agent
        (same order and values as `AgentInfoWriter.write_step`)."""
        n = result.obs.shape[0]
        ended = np.flatnonzero(result.done)
        infos: list[bytes] = []
        reward = np.asarray(result.reward, dtype=np.float32)
        if len(ended):
            flags = [_DONE_INTERRUPTED if result.interrupted[i] else _DONE for i in ended.tolist()]
            infos = self._infos(
                ended.tolist(), result.terminal_obs[ended], reward[ended], None, flags
            )
            reward = reward.copy()
            reward[ended] = 0.0
        infos += self._infos(list(range(n)), result.obs, reward, result.mask, None)
        return self._message(infos, side_channel, with_brain)


# -- the trainer's answer --------------------------------------------------------------------------
class ParsedInput:
    """What the world needs from one trainer message (UnityMessageProto with unity_input)."""

    __slots__ = ("status", "command", "side_channel", "actions", "has_behavior", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.status = 0
        self.command = 0
        self.side_channel = b""
        self.actions = b""
        self.has_behavior = False


def parse_input(raw: bytes, behavior_key: str) -> ParsedInput:
    """Header status, command, side channel and the raw ListAgentActionProto of our behaviour."""
    parsed = ParsedInput(raw)
    key = behavior_key.encode()
    for field, wt, a, b in fields(raw):
        if field == 1 and wt == WT_LEN:
            for f2, wt2, v, _ in fields(raw, a, b):
                if f2 == 1 and wt2 == WT_VARINT:
                    parsed.status = as_int32(v)
        elif field == 3 and wt == WT_LEN:
            for f2, wt2, a2, b2 in fields(raw, a, b):
                if f2 == 1 and wt2 == WT_LEN:  # rl_input
                    _parse_rl_input(raw, a2, b2, key, parsed)
    return parsed


def _parse_rl_input(raw: bytes, start: int, end: int, key: bytes, parsed: ParsedInput) -> None:
    for field, wt, a, b in fields(raw, start, end):
        if field == 4 and wt == WT_VARINT:
            parsed.command = as_int32(a)
        elif field == 5 and wt == WT_LEN:
            parsed.side_channel = raw[a:b]
        elif field == 1 and wt == WT_LEN:  # map entry; the last one for a key wins
            entry_key, value = b"", b""
            for f2, wt2, a2, b2 in fields(raw, a, b):
                if f2 == 1 and wt2 == WT_LEN:
                    entry_key = raw[a2:b2]
                elif f2 == 2 and wt2 == WT_LEN:
                    value = raw[a2:b2]
            if entry_key == key:
                parsed.actions, parsed.has_behavior = value, True


def _action_layout(data: bytes, start: int, end: int) -> tuple[int, int, int, int, list] | None:
    """Layout of the first AgentActionProto, offsets relative to its start:
    (cont_off, n_cont, disc_off, n_disc, data regions), or None when it is not packed as expected.

    Data regions are the value bytes that may differ between rows without changing the layout:
    packed floats (fields 1 and 6), the fixed32 `value` (4) and single-byte gestures (7)."""
    cont = disc = None
    regions: list[tuple[int, int]] = []
    for field, wt, a, b in fields(data, start, end):
        if field in (1, 6) and wt == WT_LEN and (b - a) % 4 == 0:
            regions.append((a - start, b - start))
            if field == 6:
                cont = (a - start, (b - a) // 4)
        elif field == 4 and wt == WT_FIXED32:
            regions.append((a - start, b - start))
        elif field == 7 and wt == WT_LEN:
            if any(x >= 0x80 for x in data[a:b]):
                return None
            regions.append((a - start, b - start))
            disc = (a - start, b - a)
        elif field in (1, 4, 6, 7):
            return None
    if cont is None or disc is None:
        return None
    return cont[0], cont[1], disc[0], disc[1], regions


def decode_action_list(data: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """(continuous [n, C] float32, discrete [n, D] int64) from a ListAgentActionProto whose rows
    all share one layout; None when they do not (the caller falls back to stock parsing).

    Why this is safe: every row starts with the same tag and length, and all bytes outside the
    data regions (tags, lengths) equal those of row 0, so every row parses along the same path."""
    if not data:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.int64)
    try:
        if data[0] != 0x0A:
            return None
        size, body = read_varint(data, 1)
        row = body + size
        if len(data) % row:
            return None
        layout = _action_layout(data, body, row)
    except WireError:
        return None
    if layout is None:
        return None
    cont_off, n_cont, disc_off, n_disc, regions = layout
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, row)
    structure = np.ones(row, dtype=bool)
    for a, b in regions:
        structure[body + a : body + b] = False
    if not (rows[:, structure] == rows[0, structure]).all():
        return None
    c0, d0 = body + cont_off, body + disc_off
    continuous = rows[:, c0 : c0 + 4 * n_cont].copy().view("<f4").astype(np.float32)
    discrete = rows[:, d0 : d0 + n_disc].astype(np.int64)
    if (discrete >= 0x80).any():
        return None
    return continuous.reshape(len(rows), n_cont), discrete


def action_protos(data: bytes) -> list:
    """Stock parse of a ListAgentActionProto (the fallback)."""
    return list(UnityRLInputProto.ListAgentActionProto.FromString(data).value)
