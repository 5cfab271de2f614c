"""The Unity side of the ML-Agents gRPC protocol, played by the headless world around a Plaza.

In ML-Agents the trainer is the gRPC *server* (`UnityToExternalProto.Exchange`) and Unity the
*client*. This module is that client, message for message as Unity's `RpcCommunicator` does it,
so stock `UnityEnvironment` and `mlagents-learn --env` drive the world unchanged:

1. Handshake. Unity sends `rl_initialization_output` (name, communication version 1.5.0, package
   version 3.0.0, capabilities) and receives `rl_initialization_input` (seed, num_areas, ...).
   Unity then sends an empty message; the trainer's answer to it is the first RESET, which only
   arrives when the trainer calls `reset()`.
2. Lockstep. Every answer carries a command and side-channel bytes. The side channels are
   applied first, then the command: RESET resets every area, STEP applies the actions (in the
   order of the agents that requested decisions in our previous message) and advances the plaza
   one decision. Each of our messages carries the AgentInfos of behaviour `AvatarAgent?team=0`
   and the world's outgoing side-channel records (Stats).
3. BrainParameters travel in `rl_initialization_output.brain_parameters` of the first message
   that has AgentInfos for the behaviour (the first RESET's answer), exactly once, as Unity's
   `m_SentBrainKeys` bookkeeping does; mlagents-envs builds its BehaviorSpec from that message.
4. End. A header status other than 200 (the trainer's close() sends 400), a QUIT command or any
   gRPC failure ends the run cleanly.

Agent ids: agent `i` (area `i // agents_per_area`) keeps id `i` for the whole run. Unity uses a
fresh episode id per episode instead; both are valid for mlagents-envs and mlagents-learn (an id
may end in TerminalSteps and start again in DecisionSteps of the same message), but trainers that
must also run against Unity builds should not rely on ids being stable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc
import numpy as np
from mlagents_envs.communicator_objects.capabilities_pb2 import UnityRLCapabilitiesProto
from mlagents_envs.communicator_objects.command_pb2 import QUIT, RESET
from mlagents_envs.communicator_objects.unity_input_pb2 import UnityInputProto
from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto

from avatar_meta.world.codec import (  # re-exported: the codecs used to live here
    BEHAVIOR_KEY,
    DIMENSION_PROPERTY_NONE,
    AgentInfoWriter,
    FastCodec,
    StockCodec,
    actions_from_protos,
    brain_parameters_proto,
    decode_actions,
    decode_actions_fast,
    make_codec,
)
from avatar_meta.world.side_channels import ProblemLog, WorldSideChannels
from avatar_meta.world.types import StepResult, TaskSpec

__all__ = [
    "BEHAVIOR_KEY",
    "DIMENSION_PROPERTY_NONE",
    "AgentInfoWriter",
    "FastCodec",
    "StockCodec",
    "UnityClient",
    "WorldSettings",
    "actions_from_protos",
    "brain_parameters_proto",
    "decode_actions",
    "decode_actions_fast",
    "make_codec",
]

logger = logging.getLogger("avatar_meta.world.unity_client")

COMMUNICATION_VERSION = "1.5.0"
"""ML-Agents communication API; the trainer accepts any 1.x."""
PACKAGE_VERSION = "3.0.0"
"""The com.unity.ml-agents version the world stands in for (ML-Agents Release 22)."""
WORLD_NAME = "AvatarMetaWorld"


EXCHANGE_METHOD = "/communicator_objects.UnityToExternalProto/Exchange"
"""The one RPC of ML-Agents' gRPC service (package communicator_objects)."""
RawExchange = Callable[[bytes], bytes]


class PlazaLike(Protocol):
    """The simulation interface the protocol needs (implemented by `world.plaza.Plaza`)."""

    num_areas: int
    agents_per_area: int
    n_agents: int

    def assign_task(self, area: int, task: TaskSpec | None) -> None: ...

    def set_defaults(self, values: dict[str, float]) -> list[str]: ...

    def reset(self) -> tuple[np.ndarray, np.ndarray]: ...

    def step(self, continuous: np.ndarray, gesture: np.ndarray) -> StepResult: ...


PlazaFactory = Callable[[int, int, int], PlazaLike]
"""(num_areas, agents_per_area, seed) -> plaza."""


def default_plaza_factory(num_areas: int, agents_per_area: int, seed: int) -> PlazaLike:
    from avatar_meta.world.plaza import Plaza

    return Plaza(num_areas=num_areas, agents_per_area=agents_per_area, seed=seed)


@dataclass
class WorldSettings:
    """How one world process runs; filled from the command line by the launcher."""

    port: int = 5004
    num_areas: int = 8
    """Areas when the handshake does not ask for more than 1 (UnityEnvironment sends 1 unless
    told otherwise, which for a Unity build means "as built"; our build has 8)."""
    agents_per_area: int = 1
    seed: int = 0
    """Used when the handshake seed is 0 (the proto3 default, i.e. possibly unset)."""
    connect_timeout: float = 30.0
    """Seconds to wait for the trainer's server to accept a connection at startup."""
    send_stats: bool = True
    """Send per-family episode stats on the Stats channel. A UnityEnvironment without a
    StatsSideChannel logs a warning for each record it cannot route (so does Unity's)."""


class TrainerGone(Exception):
    """The trainer ended the session (status 400, QUIT) or the connection failed."""


# ---------------------------------------------------------------------------------------------
# Handshake (the per-step messages are in world/codec.py)
# ---------------------------------------------------------------------------------------------
def capabilities_proto() -> UnityRLCapabilitiesProto:
    """What a Unity 3.0 player reports: every capability of communication API 1.5.0."""
    return UnityRLCapabilitiesProto(
        baseRLCapabilities=True,
        concatenatedPngObservations=True,
        compressedChannelMapping=True,
        hybridActions=True,
        trainingAnalytics=True,
        variableLengthObservation=True,
        multiAgentGroups=True,
    )


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------
class UnityClient:
    """Connects to a trainer, runs the handshake and then the lockstep loop until it ends."""

    def __init__(self, settings: WorldSettings, plaza_factory: PlazaFactory | None = None):
        self.settings = settings
        self._plaza_factory = plaza_factory or default_plaza_factory
        self._problems = ProblemLog(logger)
        self._codec = make_codec()
        logger.info("protocol path: %s", type(self._codec).__name__)
        self._channel: grpc.Channel | None = None
        self._stop_reason: str | None = None
        self._lock = threading.Lock()

    def stop(self, reason: str) -> None:
        """Thread-safe: end the run (closing the channel cancels a blocked Exchange)."""
        with self._lock:
            self._stop_reason = reason
            if self._channel is not None:
                self._channel.close()

    def run(self) -> int:
        """0 after the trainer ended the session, 1 if it never became reachable."""
        address = f"localhost:{self.settings.port}"
        channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", -1)])
        with self._lock:
            if self._stop_reason is not None:
                channel.close()
                return 0
            self._channel = channel
        if not self._wait_until_ready(channel):
            channel.close()
            if self._stop_reason is not None:
                logger.info("%s before a trainer answered; exiting", self._stop_reason)
                return 0
            logger.error(
                "no trainer listening on %s after %.0f s; exiting",
                address,
                self.settings.connect_timeout,
            )
            return 1
        # Raw bytes both ways (no (de)serialisers): the codec owns the encoding.
        call: RawExchange = channel.unary_unary(EXCHANGE_METHOD)
        try:
            self._serve(call)
        except TrainerGone as gone:
            logger.info("%s; exiting", self._stop_reason or gone)
            return 0
        finally:
            channel.close()
        return 0

    def _wait_until_ready(self, channel: grpc.Channel) -> bool:
        """Wait for the trainer's server, in short slices so that `stop()` is noticed."""
        ready = grpc.channel_ready_future(channel)
        deadline = time.monotonic() + self.settings.connect_timeout
        while self._stop_reason is None and time.monotonic() < deadline:
            try:
                ready.result(timeout=min(0.5, max(deadline - time.monotonic(), 0.01)))
                return True
            except grpc.FutureTimeoutError:
                continue
        ready.cancel()
        return False

    # -- one exchange -----------------------------------------------------------------------
    def _send(self, call: RawExchange, payload: bytes) -> bytes:
        """Send one serialised UnityMessageProto, return the trainer's answer as bytes (no
        deadline: a trainer may update its policy for minutes between two steps). Raises
        TrainerGone when the connection fails."""
        try:
            return call(payload)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else "?"
            raise TrainerGone(f"connection to the trainer ended ({code})") from None

    def _exchange(self, call: RawExchange, message: UnityMessageProto) -> UnityInputProto:
        """One exchange with protobuf objects (handshake only)."""
        reply = UnityMessageProto.FromString(self._send(call, message.SerializeToString()))
        if reply.header.status != 200:
            raise TrainerGone(f"trainer closed the session (status {reply.header.status})")
        return reply.unity_input

    # -- the protocol -----------------------------------------------------------------------
    def _handshake(self, call: RawExchange) -> tuple[int, int]:
        """Returns (seed, num_areas) for the plaza."""
        hello = UnityMessageProto()
        hello.header.status = 200
        init_out = hello.unity_output.rl_initialization_output
        init_out.name = WORLD_NAME
        init_out.communication_version = COMMUNICATION_VERSION
        init_out.package_version = PACKAGE_VERSION
        init_out.capabilities.CopyFrom(capabilities_proto())
        init_in = self._exchange(call, hello).rl_initialization_input

        trainer_version = init_in.communication_version
        if trainer_version.split(".")[0] != COMMUNICATION_VERSION.split(".")[0]:
            logger.warning(
                "trainer speaks communication API %s, the world %s; continuing like Unity does",
                trainer_version,
                COMMUNICATION_VERSION,
            )
        if not init_in.capabilities.hybridActions:
            logger.error("the trainer does not support hybrid actions; actions v1 need them")
        seed = init_in.seed if init_in.seed != 0 else self.settings.seed
        num_areas = init_in.num_areas if init_in.num_areas > 1 else self.settings.num_areas
        logger.info(
            "connected: trainer mlagents-envs %s (API %s), seed %d, %d areas x %d agents",
            init_in.package_version,
            trainer_version,
            seed,
            num_areas,
            self.settings.agents_per_area,
        )
        return seed, num_areas

    def _serve(self, call: RawExchange) -> None:
        seed, num_areas = self._handshake(call)
        # Unity sends its empty second message right after the handshake, before anything else.
        # Keep it that way: mlagents-envs reads this message without a timeout, so a world that
        # failed in between (say, building the plaza) would leave the trainer waiting forever.
        empty = UnityMessageProto()
        empty.header.status = 200
        raw = self._send(call, empty.SerializeToString())  # answered by the first reset()

        codec = self._codec
        plaza = self._plaza_factory(num_areas, self.settings.agents_per_area, seed)
        side = WorldSideChannels(plaza, seed, send_stats=self.settings.send_stats)
        brain_sent = False
        started = False
        while True:
            status, command, side_channel, state = codec.parse(raw)
            if status != 200:
                raise TrainerGone(f"trainer closed the session (status {status})")
            side.receive(side_channel)  # side channels first, then the command
            if command == QUIT:
                raise TrainerGone("trainer sent QUIT")
            if command == RESET or not started:
                obs, mask = plaza.reset()
                payload = codec.reset_message(obs, mask, side.take_outgoing(), not brain_sent)
                started = True
            else:
                continuous, gesture = codec.actions(state, plaza.n_agents, self._problems)
                if side.has_samplers:
                    side.push_defaults()
                # PolicyChannel `inference` areas act with streamed weights (policy_receiver.py).
                continuous, gesture = side.policies.override(
                    obs, mask, continuous, gesture, self.settings.agents_per_area
                )
                result = plaza.step(continuous, gesture)
                obs, mask = result.obs, result.mask
                side.episodes_finished(result.finished)
                payload = codec.step_message(result, side.take_outgoing(), not brain_sent)
            raw = self._send(call, payload)
            brain_sent = True
