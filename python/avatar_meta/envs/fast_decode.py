"""Trainer-side wire codec: AgentInfos -> DecisionSteps/TerminalSteps, actions -> bytes.

`mlagents_envs.rpc_utils.steps_from_proto` reads a parsed ListAgentInfoProto, i.e. after
pure-Python protobuf built one AgentInfoProto, ObservationProto and FloatData object per agent
(~2.5 ms for 32 agents). `decode_agent_infos` reads the same bytes directly: one short Python
loop over each AgentInfo's fields records *offsets* (reward, observation floats, mask), then numpy
gathers all observations of a batch with one fancy index and reinterprets them as float32.

The result is the same as `steps_from_proto` on the stock-parsed message: same arrays, dtypes,
split into decision requests (done = false) and terminal infos (done = true) in message order,
`action_mask` as a list of per-branch [n, size] bool arrays (True = masked, all False for an
agent whose mask has the wrong length, None without decision requests), `group_id` a list of
ints, `interrupted` from `max_step_reached`, and the same RuntimeError on NaN/Inf. Anything
outside the common layout (visual or compressed observations, unpacked repeated fields, an
observation count or size that does not match the spec, malformed bytes) raises `WireError` and
the caller uses the stock parser, which then behaves exactly as stock does, errors included.

AgentInfoProto fields (one-byte tags since all numbers are < 16): 7 reward fixed32 (0x3D),
8 done (0x40), 9 max_step_reached (0x48), 10 id int32 (0x50), 11 action_mask packed bools
(0x5A), 13 observations (0x6A), 14 group_id (0x70), 15 group_reward fixed32 (0x7D).
ObservationProto: 1 shape, 2 compression_type, 3 compressed_data, 4 float_data {1 data packed
floats}, 5 compressed_channel_mapping, 6 dimension_properties, 7 observation_type, 8 name.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from mlagents_envs.base_env import ActionTuple, BehaviorSpec, DecisionSteps, TerminalSteps

from avatar_meta.wire import (
    WT_LEN,
    WireError,
    as_int32,
    len_field,
    read_varint,
    skip_field,
    tag,
    varint,
    varint_field,
)

_ABSENT = -1


def _check_finite(data: np.ndarray, source: str) -> None:
    """The same check and messages as mlagents-envs, which tests `np.mean(data)`: the sum (the
    same float32 pairwise reduction) is NaN/Inf exactly when the mean is."""
    if data.size == 0:
        return
    total = float(data.sum())
    if math.isnan(total):
        raise RuntimeError(f"The {source} provided had NaN values.")
    if math.isinf(total):
        raise RuntimeError(f"The {source} provided had Infinite values.")


def _float_data(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(offset, count) of the packed floats in a FloatData message."""
    found = None
    while pos < end:
        key, pos = read_varint(data, pos)
        if key == 0x0A:
            size, pos = read_varint(data, pos)
            if found is not None or size % 4:
                raise WireError("split or ragged float data")
            found = (pos, size // 4)
            pos += size
        elif key >> 3 == 1:
            raise WireError("unpacked float data")
        else:
            pos = skip_field(data, pos, key & 7)
    return found if found is not None else (0, 0)


def _observation(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(offset, count) of an ObservationProto's uncompressed floats."""
    found = (0, 0)
    while pos < end:
        key, pos = read_varint(data, pos)
        field, wire_type = key >> 3, key & 7
        if field == 4 and wire_type == WT_LEN:
            size, pos = read_varint(data, pos)
            found = _float_data(data, pos, pos + size)
            pos += size
        elif field in (2, 3):
            value_end = skip_field(data, pos, wire_type)
            if field == 3 or read_varint(data, pos)[0] != 0:
                raise WireError("compressed observation")
            pos = value_end
        else:
            pos = skip_field(data, pos, wire_type)
    if pos != end:
        raise WireError("observation ends inside a field")
    return found


class _Infos:
    """Per-info columns collected by the scan (offsets into the message bytes)."""

    def __init__(self, n_obs: int) -> None:
        self.reward: list[int] = []
        self.group_reward: list[int] = []
        self.done: list[bool] = []
        self.max_step: list[bool] = []
        self.ids: list[int] = []
        self.group_ids: list[int] = []
        self.mask: list[tuple[int, int]] = []
        self.obs: list[list[tuple[int, int]]] = [[] for _ in range(n_obs)]


class _ObservationCache:
    """Remembers the last ObservationProto layout: a sensor sends the same shape, name and
    properties every step, so only the floats change. An observation whose bytes equal the
    cached ones outside the float region parses the same way (the float region is a fixed-size
    packed payload), which skips the field walk for all but the first agent."""

    def __init__(self) -> None:
        self.size = -1
        self.head = b""
        self.tail = b""
        self.count = 0

    def lookup(self, data: bytes, pos: int, end: int) -> tuple[int, int]:
        head_len = len(self.head)
        if (
            end - pos == self.size
            and data[pos : pos + head_len] == self.head
            and data[end - len(self.tail) : end] == self.tail
        ):
            return pos + head_len, self.count
        offset, count = _observation(data, pos, end)
        if count:
            self.size, self.count = end - pos, count
            self.head = data[pos:offset]
            self.tail = data[offset + 4 * count : end]
        return offset, count


def _scan(data: bytes, n_obs: int) -> _Infos:
    """One pass over a ListAgentInfoProto; raises WireError outside the supported layout.

    Hot loop: one-byte tags and lengths are read inline, longer ones with `read_varint`."""
    cols = _Infos(n_obs)
    caches = [_ObservationCache() for _ in range(n_obs)]
    pos, end = 0, len(data)
    while pos < end:
        key, pos = read_varint(data, pos)
        if key != 0x0A:  # not ListAgentInfoProto.value: skip unknown fields
            pos = skip_field(data, pos, key & 7)
            continue
        size, pos = read_varint(data, pos)
        stop = pos + size
        if stop > end:
            raise WireError("truncated AgentInfoProto")
        reward = group_reward = _ABSENT
        done = max_step = False
        agent_id = group_id = 0
        mask = (0, -1)
        n_seen = 0
        while pos < stop:
            key = data[pos]
            pos += 1
            if key == 0x3D:
                reward, pos = pos, pos + 4
            elif key == 0x6A:
                size = data[pos]
                if size < 0x80:
                    pos += 1
                else:
                    size, pos = read_varint(data, pos)
                if n_seen < n_obs:
                    cols.obs[n_seen].append(caches[n_seen].lookup(data, pos, pos + size))
                n_seen += 1
                pos += size
            elif key == 0x50:
                value = data[pos]
                if value < 0x80:
                    agent_id, pos = value, pos + 1
                else:
                    value, pos = read_varint(data, pos)
                    agent_id = as_int32(value)
            elif key == 0x5A:
                size, pos = read_varint(data, pos)
                if mask[1] != -1:
                    raise WireError("split action mask")
                mask, pos = (pos, size), pos + size
            elif key == 0x40:
                value, pos = read_varint(data, pos)
                done = value != 0
            elif key == 0x48:
                value, pos = read_varint(data, pos)
                max_step = value != 0
            elif key == 0x70:
                value, pos = read_varint(data, pos)
                group_id = as_int32(value)
            elif key == 0x7D:
                group_reward, pos = pos, pos + 4
            elif key >= 0x80 or (key >> 3) in (7, 8, 9, 10, 11, 13, 14, 15):
                raise WireError(f"unexpected AgentInfoProto key {key:#x}")
            else:
                pos = skip_field(data, pos, key & 7)
        if pos != stop or n_seen != n_obs:
            raise WireError("AgentInfoProto does not match the behaviour's observations")
        cols.reward.append(reward)
        cols.group_reward.append(group_reward)
        cols.done.append(done)
        cols.max_step.append(max_step)
        cols.ids.append(agent_id)
        cols.group_ids.append(group_id)
        cols.mask.append(mask)
    return cols


def _floats_at(buf: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """float32 at byte offsets of `buf` (uint8, with 4 zero bytes at the end for _ABSENT)."""
    offsets = np.where(offsets == _ABSENT, len(buf) - 4, offsets)
    return buf[offsets[:, None] + np.arange(4)].view("<f4").reshape(-1).astype(np.float32)


def decode_agent_infos(data: bytes, spec: BehaviorSpec) -> tuple[DecisionSteps, TerminalSteps]:
    """`steps_from_proto` for a serialised ListAgentInfoProto (see the module doc)."""
    shapes = [tuple(o.shape) for o in spec.observation_specs]
    if any(len(shape) == 3 for shape in shapes):
        raise WireError("visual observations take the stock path")
    cols = _scan(data, len(shapes))
    buf = np.frombuffer(data + bytes(4), dtype=np.uint8)
    done = np.array(cols.done, dtype=bool)
    dec, term = np.flatnonzero(~done), np.flatnonzero(done)
    obs_dec: list[np.ndarray] = []
    obs_term: list[np.ndarray] = []
    for shape, entries in zip(shapes, cols.obs, strict=True):
        size = math.prod(shape)
        where = np.array([off for off, count in entries if count == size], dtype=np.int64)
        if len(where) != len(entries):
            raise WireError("observation size differs from the spec")
        rows = buf[where[:, None] + np.arange(4 * size)] if size else np.zeros((len(where), 0))
        floats = rows.view("<f4").astype(np.float32).reshape((len(where),) + shape)
        for target, index in ((obs_dec, dec), (obs_term, term)):
            part = floats[index]
            _check_finite(part, "observations")
            target.append(part)
    reward = _floats_at(buf, np.array(cols.reward, dtype=np.int64))
    if all(off == _ABSENT for off in cols.group_reward):
        group_reward = np.zeros(len(reward), dtype=np.float32)
    else:
        group_reward = _floats_at(buf, np.array(cols.group_reward, dtype=np.int64))
    for values in (reward[dec], reward[term]):
        _check_finite(values, "rewards")
    for values in (group_reward[dec], group_reward[term]):
        _check_finite(values, "group_rewards")
    ids = np.array(cols.ids, dtype=np.int32)
    group_ids = cols.group_ids
    decision = DecisionSteps(
        obs_dec,
        reward[dec],
        ids[dec],
        _action_mask(buf, cols.mask, dec, spec),
        [group_ids[i] for i in dec.tolist()],
        group_reward[dec],
    )
    terminal = TerminalSteps(
        obs_term,
        reward[term],
        np.array(cols.max_step, dtype=bool)[term],
        ids[term],
        [group_ids[i] for i in term.tolist()],
        group_reward[term],
    )
    return decision, terminal


def _action_mask(
    buf: np.ndarray, masks: list[tuple[int, int]], rows: np.ndarray, spec: BehaviorSpec
) -> list[np.ndarray] | None:
    """Per-branch masks of the decision rows, with mlagents' rule for wrong-length masks."""
    branches = spec.action_spec.discrete_branches
    if spec.action_spec.discrete_size == 0 or len(rows) == 0:
        return None
    width = int(sum(branches))
    matrix = np.zeros((len(rows), width), dtype=bool)
    picked = [masks[i] for i in rows.tolist()]
    good = [k for k, (_, size) in enumerate(picked) if size == width]
    if good and width:
        offsets = np.array([picked[k][0] for k in good], dtype=np.int64)
        values = buf[offsets[:, None] + np.arange(width)]
        if (values > 1).any():
            raise WireError("multi-byte bools in the action mask")
        matrix[good] = values.astype(bool)
    bounds = np.cumsum([0, *branches]).tolist()
    return [matrix[:, a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


# -- actions -------------------------------------------------------------------------------------
def encode_action_list(action: ActionTuple, n_agents: int) -> bytes:
    """ListAgentActionProto: per agent {6 continuous_actions packed, 7 discrete_actions packed}.

    The deprecated `vector_actions_deprecated` copy that stock mlagents-envs also writes is left
    out: worlds and Unity players with the hybrid-actions capability read fields 6 and 7.
    Common case (gestures in 0..127) is one numpy fill of an [n, row] byte matrix."""
    cont = np.zeros((n_agents, 0), np.float32) if action.continuous is None else action.continuous
    disc = np.zeros((n_agents, 0), np.int32) if action.discrete is None else action.discrete
    cont_bytes = np.ascontiguousarray(cont, dtype="<f4").reshape(n_agents, -1).view(np.uint8)
    disc = np.asarray(disc).reshape(n_agents, -1)
    n_cont, n_disc = cont_bytes.shape[1], disc.shape[1]
    if n_disc and ((disc < 0) | (disc > 127)).any():
        return _encode_action_rows(cont, disc)
    cont_head = tag(6, WT_LEN) + varint(n_cont) if n_cont else b""
    disc_head = tag(7, WT_LEN) + varint(n_disc) if n_disc else b""
    body_len = len(cont_head) + n_cont + len(disc_head) + n_disc
    head = tag(1, WT_LEN) + varint(body_len) + cont_head
    row = np.empty((n_agents, len(head) + body_len - len(cont_head)), dtype=np.uint8)
    at = len(head)
    row[:, :at] = np.frombuffer(head, dtype=np.uint8)
    row[:, at : at + n_cont] = cont_bytes
    at += n_cont
    row[:, at : at + len(disc_head)] = np.frombuffer(disc_head, dtype=np.uint8)
    row[:, at + len(disc_head) :] = disc
    return row.tobytes()


def _encode_action_rows(cont: Any, disc: np.ndarray) -> bytes:
    """General per-agent path (negative or large discrete values: multi-byte varints)."""
    out = []
    cont = np.asarray(cont, dtype="<f4").reshape(len(disc), -1)
    for c_row, d_row in zip(cont, disc, strict=True):
        body = len_field(6, c_row.tobytes()) if c_row.size else b""
        if d_row.size:
            body += len_field(7, b"".join(varint(int(v)) for v in d_row.tolist()))
        out.append(len_field(1, body))
    return b"".join(out)


def encode_input(
    command: int, side_channel: bytes, actions: dict[str, tuple[ActionTuple, int]]
) -> bytes:
    """UnityMessageProto {1 header {1 status 200}, 3 unity_input {1 rl_input {1 agent_actions
    map entries, 4 command (omitted when STEP = 0), 5 side_channel}}}."""
    rl_input = b""
    for name, (action, n_agents) in actions.items():
        if n_agents:
            entry = len_field(1, name.encode()) + len_field(2, encode_action_list(action, n_agents))
            rl_input += len_field(1, entry)
    if command:
        rl_input += varint_field(4, command)
    if side_channel:
        rl_input += len_field(5, side_channel)
    header = len_field(1, varint_field(1, 200))
    return header + len_field(3, len_field(1, rl_input))
