"""The world's message codecs: what goes into and comes out of each Exchange after the handshake.

Two interchangeable codecs produce the world's per-step UnityMessageProto bytes and read the
trainer's answers; `make_codec()` picks one from AVATAR_META_PROTOCOL:

- `StockCodec` (`stock`): the reference. `AgentInfoWriter` fills mlagents' generated protobuf
  messages, one AgentInfoProto per agent; `decode_actions` reads parsed AgentActionProtos.
- `FastCodec` (`fast`, default): `world.fast_encode` writes/reads the same messages as bytes.
  The stock messages parse both to the same values (tests/test_fast_protocol.py), so any
  trainer, stock `UnityEnvironment` and `mlagents-learn` included, works with either.

Bad actions are repaired identically by both: wrong count, wrong sizes, NaN, gesture out of
range -> "stand still, no gesture" for the agents concerned, with a rate-limited log line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from mlagents_envs.communicator_objects.agent_action_pb2 import AgentActionProto
from mlagents_envs.communicator_objects.brain_parameters_pb2 import (
    ActionSpecProto,
    BrainParametersProto,
)
from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
from mlagents_envs.communicator_objects.unity_rl_input_pb2 import UnityRLInputProto
from mlagents_envs.communicator_objects.unity_rl_output_pb2 import UnityRLOutputProto

from avatar_meta import contract
from avatar_meta.wire import WireError, protocol_mode
from avatar_meta.world import fast_encode
from avatar_meta.world.side_channels import ProblemLog
from avatar_meta.world.types import StepResult

logger = logging.getLogger("avatar_meta.world.unity_client")

BEHAVIOR_KEY = f"{contract.BEHAVIOR_NAME}?team=0"
"""Fully qualified behaviour name as Unity reports it (team id 0)."""
DIMENSION_PROPERTY_NONE = 1
"""`DimensionProperty.None`: what a Unity vector sensor reports for its single dimension."""


def brain_parameters_proto() -> BrainParametersProto:
    """Actions v1 as Unity's `ActionSpec.ToBrainParametersProto` writes them for a trainer with
    hybrid actions: no deprecated fields, one discrete branch per gesture set."""
    return BrainParametersProto(
        brain_name=BEHAVIOR_KEY,
        is_training=True,
        action_spec=ActionSpecProto(
            num_continuous_actions=contract.NUM_CONTINUOUS_ACTIONS,
            num_discrete_actions=len(contract.DISCRETE_BRANCHES),
            discrete_branch_sizes=list(contract.DISCRETE_BRANCHES),
        ),
    )


class AgentInfoWriter:
    """Writes AgentInfoProtos for the plaza's avatars into an outgoing UnityRLOutputProto.

    One ObservationProto per agent, as a Unity VectorSensor produces it: shape [size],
    uncompressed float_data, dimension_properties [None], observation_type Default (0, left
    unset), name `contract.SENSOR_NAME`. Action masks are flattened over the branches with
    True = masked, the protocol's convention.
    """

    def __init__(self) -> None:
        self.shape = [contract.OBSERVATION_SIZE]

    def add(
        self,
        rl_output: UnityRLOutputProto,
        agent_id: int,
        obs: list[float],
        reward: float,
        mask: list[bool] | None,
        done: bool = False,
        interrupted: bool = False,
    ) -> None:
        info = rl_output.agentInfos[BEHAVIOR_KEY].value.add()
        info.id = agent_id
        info.reward = reward
        if done:
            info.done = True
            info.max_step_reached = interrupted
        if mask is not None:
            info.action_mask.extend(mask)
        observation = info.observations.add()
        observation.shape.extend(self.shape)
        observation.dimension_properties.append(DIMENSION_PROPERTY_NONE)
        observation.name = contract.SENSOR_NAME
        observation.float_data.data.extend(obs)

    def write_reset(self, rl_output: UnityRLOutputProto, obs: np.ndarray, mask: np.ndarray) -> None:
        """Every agent requests its first decision of a fresh episode (reward 0)."""
        rows, masks = obs.tolist(), mask.tolist()
        for i in range(len(rows)):
            self.add(rl_output, i, rows[i], 0.0, masks[i])

    def write_step(self, rl_output: UnityRLOutputProto, result: StepResult) -> None:
        """Terminal infos for agents whose episode ended, then a decision request from every agent.

        An agent that ended appears twice, as Unity sends it: done=True with its last observation
        and the reward of its last action, then (after its reset) a decision request with the
        first observation of the new episode and reward 0.
        """
        rewards = result.reward.tolist()
        ended = np.flatnonzero(result.done).tolist()
        for i in ended:
            self.add(
                rl_output,
                i,
                result.terminal_obs[i].tolist(),
                rewards[i],
                None,
                done=True,
                interrupted=bool(result.interrupted[i]),
            )
        for i in ended:
            rewards[i] = 0.0
        rows, masks = result.obs.tolist(), result.mask.tolist()
        for i in range(len(rows)):
            self.add(rl_output, i, rows[i], rewards[i], masks[i])


def decode_actions(
    rl_input: UnityRLInputProto, n_agents: int, problems: ProblemLog
) -> tuple[np.ndarray, np.ndarray]:
    """Actions for the `n_agents` that requested decisions, in request order.

    Anything unusable (missing behaviour, wrong count, wrong size, NaN, gesture out of range)
    falls back to "stand still, no gesture" for the agents concerned, with a log line.
    """
    if BEHAVIOR_KEY not in rl_input.agent_actions:
        return _missing_actions(n_agents, problems)
    return actions_from_protos(rl_input.agent_actions[BEHAVIOR_KEY].value, n_agents, problems)


def _missing_actions(n_agents: int, problems: ProblemLog) -> tuple[np.ndarray, np.ndarray]:
    if n_agents:
        problems.warn("actions-missing", f"no actions for {BEHAVIOR_KEY}; agents stand still")
    continuous = np.zeros((n_agents, contract.NUM_CONTINUOUS_ACTIONS), dtype=np.float32)
    return continuous, np.zeros(n_agents, dtype=np.int64)


def _check_count(n_actions: int, n_agents: int, problems: ProblemLog) -> None:
    if n_actions != n_agents:
        problems.warn(
            "actions-count",
            f"{n_actions} actions for {n_agents} agents; missing ones stand still",
        )


def actions_from_protos(
    actions: Sequence[AgentActionProto], n_agents: int, problems: ProblemLog
) -> tuple[np.ndarray, np.ndarray]:
    """`decode_actions` for the AgentActionProtos of our behaviour (also the fast path's
    fallback for layouts `fast_encode.decode_action_list` does not take)."""
    continuous = np.zeros((n_agents, contract.NUM_CONTINUOUS_ACTIONS), dtype=np.float32)
    gesture = np.zeros(n_agents, dtype=np.int64)
    _check_count(len(actions), n_agents, problems)
    n_cont = contract.NUM_CONTINUOUS_ACTIONS
    for i, action in enumerate(actions[:n_agents]):
        if len(action.continuous_actions) == n_cont:
            continuous[i] = action.continuous_actions
        else:
            problems.warn(
                "actions-continuous",
                f"agent {i}: {len(action.continuous_actions)} continuous actions, expected {n_cont}",
            )
        if len(action.discrete_actions) == 1:
            gesture[i] = action.discrete_actions[0]
        else:
            problems.warn(
                "actions-discrete",
                f"agent {i}: {len(action.discrete_actions)} discrete actions, expected 1",
            )
    return _repair(continuous, gesture, problems)


def _repair(
    continuous: np.ndarray, gesture: np.ndarray, problems: ProblemLog
) -> tuple[np.ndarray, np.ndarray]:
    finite = np.isfinite(continuous)
    if not finite.all():
        problems.warn("actions-nan", "non-finite continuous actions replaced by 0")
        continuous[~finite] = 0.0
    bad_gesture = (gesture < 0) | (gesture >= contract.DISCRETE_BRANCHES[0])
    if bad_gesture.any():
        problems.warn("actions-gesture", f"gesture out of range {gesture[bad_gesture].tolist()}")
        gesture[bad_gesture] = 0
    return continuous, gesture


def decode_actions_fast(
    parsed: fast_encode.ParsedInput, n_agents: int, problems: ProblemLog
) -> tuple[np.ndarray, np.ndarray]:
    """`decode_actions` on raw bytes: same results and log lines, numpy for uniform layouts."""
    if not parsed.has_behavior:
        return _missing_actions(n_agents, problems)
    decoded = fast_encode.decode_action_list(parsed.actions)
    n_cont = contract.NUM_CONTINUOUS_ACTIONS
    if decoded is None or decoded[0].shape[1] != n_cont or decoded[1].shape[1] != 1:
        return actions_from_protos(fast_encode.action_protos(parsed.actions), n_agents, problems)
    rows_c, rows_d = decoded
    _check_count(len(rows_c), n_agents, problems)
    k = min(len(rows_c), n_agents)
    continuous = np.zeros((n_agents, n_cont), dtype=np.float32)
    gesture = np.zeros(n_agents, dtype=np.int64)
    continuous[:k] = rows_c[:k]
    gesture[:k] = rows_d[:k, 0]
    return _repair(continuous, gesture, problems)


class StockCodec:
    """Reference path (AVATAR_META_PROTOCOL=stock): mlagents' protobuf objects both ways."""

    def __init__(self) -> None:
        self._writer = AgentInfoWriter()

    def parse(self, raw: bytes) -> tuple[int, int, bytes, Any]:
        """(status, command, side channel, state for `actions`)."""
        message = UnityMessageProto.FromString(raw)
        rl_input = message.unity_input.rl_input
        return message.header.status, rl_input.command, rl_input.side_channel, rl_input

    def actions(self, state: Any, n_agents: int, problems: ProblemLog) -> tuple[Any, Any]:
        return decode_actions(state, n_agents, problems)

    def _message(self, side_channel: bytes, with_brain: bool) -> UnityMessageProto:
        message = UnityMessageProto()
        message.header.status = 200
        if with_brain:
            brains = message.unity_output.rl_initialization_output.brain_parameters
            brains.add().CopyFrom(brain_parameters_proto())
        message.unity_output.rl_output.side_channel = side_channel
        return message

    def reset_message(
        self, obs: np.ndarray, mask: np.ndarray, side_channel: bytes, with_brain: bool
    ) -> bytes:
        message = self._message(side_channel, with_brain)
        self._writer.write_reset(message.unity_output.rl_output, obs, mask)
        return message.SerializeToString()

    def step_message(self, result: StepResult, side_channel: bytes, with_brain: bool) -> bytes:
        message = self._message(side_channel, with_brain)
        self._writer.write_step(message.unity_output.rl_output, result)
        return message.SerializeToString()


class FastCodec:
    """Default path: bytes written and read by hand (`world.fast_encode`), same values."""

    def __init__(self) -> None:
        brain = brain_parameters_proto().SerializeToString()
        self._encoder = fast_encode.FastAgentInfoEncoder(BEHAVIOR_KEY, brain)
        self.reset_message = self._encoder.reset_message
        self.step_message = self._encoder.step_message

    def parse(self, raw: bytes) -> tuple[int, int, bytes, Any]:
        try:
            parsed = fast_encode.parse_input(raw, BEHAVIOR_KEY)
        except WireError:
            logger.warning("could not read a trainer message by hand; parsing it with protobuf")
            return StockCodec.parse(StockCodec(), raw)
        return parsed.status, parsed.command, parsed.side_channel, parsed

    def actions(self, state: Any, n_agents: int, problems: ProblemLog) -> tuple[Any, Any]:
        if isinstance(state, UnityRLInputProto):
            return decode_actions(state, n_agents, problems)
        return decode_actions_fast(state, n_agents, problems)


Codec = StockCodec | FastCodec


def make_codec(mode: str | None = None) -> Codec:
    """The codec for `mode` (default: AVATAR_META_PROTOCOL, unset = fast)."""
    return StockCodec() if (mode or protocol_mode()) == "stock" else FastCodec()
