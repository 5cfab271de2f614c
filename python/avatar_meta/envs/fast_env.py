"""`FastUnityEnvironment`: stock `UnityEnvironment` with a bytes-level exchange for our trainer.

What the stock trainer side costs per exchange, and what replaces it here:

- `RpcCommunicator` parses every incoming message into protobuf objects in the gRPC thread, then
  sends it to the caller through a `multiprocessing.Pipe`, which pickles it: the pure-Python
  message is serialised and parsed *again*; the answer takes the same trip the other way.
  `FastCommunicator` registers a generic gRPC handler for `UnityToExternalProto/Exchange` with
  identity (de)serialisers and hands raw `bytes` between the gRPC thread and the caller through
  two `queue.SimpleQueue`s: no parse, no pickle.
- `steps_from_proto` walks one parsed AgentInfoProto per agent; `fast_decode.decode_agent_infos`
  reads the bytes with a short scan plus numpy, producing the same DecisionSteps/TerminalSteps.
- `_generate_step_input` builds one AgentActionProto per agent; `fast_decode.encode_input` fills a
  byte matrix with numpy.

Rare messages keep the stock code: the handshake (`initialize`), any message that carries
BrainParameters (the first answer to reset, parsed by `UnityMessageProto` and then handled by
the inherited `_update_behavior_specs`/`_update_state`) and any layout the fast decoder does not
take (visual observations, ...). Side channels are processed by the stock SideChannelManager.

Everything public (`reset`, `step`, `get_steps`, `set_actions`, `behavior_specs`, `close`,
side channels, timeouts and the process watchdog) is inherited, so it is a drop-in replacement.
Selected by `AVATAR_META_PROTOCOL` (default fast) in `MLAgentsTaskEnv`; see
`make_unity_environment`.
"""

from __future__ import annotations

import logging
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from mlagents_envs.base_env import DecisionSteps, TerminalSteps
from mlagents_envs.communicator import PollCallback
from mlagents_envs.communicator_objects.command_pb2 import RESET, STEP
from mlagents_envs.communicator_objects.unity_input_pb2 import UnityInputProto
from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
from mlagents_envs.communicator_objects.unity_output_pb2 import UnityOutputProto
from mlagents_envs.environment import UnityEnvironment
from mlagents_envs.exception import (
    UnityCommunicatorStoppedException,
    UnityEnvironmentException,
    UnityTimeOutException,
    UnityWorkerInUseException,
)
from mlagents_envs.rpc_communicator import RpcCommunicator
from mlagents_envs.timers import hierarchical_timer, timed

from avatar_meta.envs.fast_decode import decode_agent_infos, encode_input
from avatar_meta.wire import WT_LEN, WT_VARINT, WireError, as_int32, fields, protocol_mode

logger = logging.getLogger("avatar_meta.envs.fast_env")

SERVICE = "communicator_objects.UnityToExternalProto"
_CLOSE = UnityMessageProto(header={"status": 400}).SerializeToString()


class FastCommunicator(RpcCommunicator):
    """`RpcCommunicator` whose Exchange handler passes raw bytes through in-process queues."""

    def create_server(self) -> None:
        self.check_port(self.port)
        self._from_world: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._to_world: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        try:
            self.server = grpc.server(
                thread_pool=ThreadPoolExecutor(max_workers=4),
                options=(("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", -1)),
            )
            handler = grpc.unary_unary_rpc_method_handler(self._handle_exchange)
            self.server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(SERVICE, {"Exchange": handler}),)
            )
            self.server.add_insecure_port("[::]:" + str(self.port))
            self.server.start()
            self.is_open = True
        except Exception:
            raise UnityWorkerInUseException(self.worker_id) from None

    def _handle_exchange(self, request: bytes, context: Any) -> bytes:
        """gRPC thread: hand the world's message over, wait for the trainer's answer."""
        self._from_world.put(request)
        while True:
            try:
                return self._to_world.get(timeout=1.0)
            except queue.Empty:
                if not self.is_open:
                    return _CLOSE

    def _receive(self, poll_callback: PollCallback | None) -> bytes:
        """The world's next message; polls the process like stock `poll_for_timeout`."""
        deadline = time.monotonic() + self.timeout_wait
        slice_s = max(self.timeout_wait / 10, 0.1)
        while True:
            try:
                return self._from_world.get(timeout=slice_s)
            except queue.Empty:
                if poll_callback:
                    poll_callback()
                if time.monotonic() >= deadline:
                    raise UnityTimeOutException(
                        "The Unity environment took too long to respond."
                    ) from None

    def exchange_raw(self, payload: bytes, poll_callback: PollCallback | None = None) -> bytes:
        """Send a serialised UnityMessageProto (answering the pending request), return the
        world's next message as bytes."""
        self._to_world.put(payload)
        return self._receive(poll_callback)

    # -- the stock interface, for anything that still calls it ------------------------------
    def initialize(
        self, inputs: UnityInputProto, poll_callback: PollCallback | None = None
    ) -> UnityOutputProto:
        hello = UnityMessageProto.FromString(self._receive(poll_callback))
        answer = UnityMessageProto()
        answer.header.status = 200
        answer.unity_input.CopyFrom(inputs)
        self.exchange_raw(answer.SerializeToString(), poll_callback)  # the empty message
        return hello.unity_output

    def exchange(
        self, inputs: UnityInputProto, poll_callback: PollCallback | None = None
    ) -> UnityOutputProto | None:
        message = UnityMessageProto()
        message.header.status = 200
        message.unity_input.CopyFrom(inputs)
        output = UnityMessageProto.FromString(
            self.exchange_raw(message.SerializeToString(), poll_callback)
        )
        return output.unity_output if output.header.status == 200 else None

    def close(self) -> None:
        if self.is_open:
            self._to_world.put(_CLOSE)
            self.is_open = False
            if self.server is not None:
                self.server.stop(False)


class _Output:
    """The parts of a world message the fast path needs, as slices of its bytes."""

    def __init__(self) -> None:
        self.status = 0
        self.has_init = False
        self.infos: dict[str, bytes] = {}
        self.side_channel = b""


def _split_output(raw: bytes) -> _Output:
    """UnityMessageProto {1 header, 2 unity_output {1 rl_output {2 agentInfos map, 3 side_channel},
    2 rl_initialization_output}} -> _Output (no per-agent work)."""
    out = _Output()
    for field, wt, a, b in fields(raw):
        if field == 1 and wt == WT_LEN:
            for f2, wt2, v, _ in fields(raw, a, b):
                if f2 == 1 and wt2 == WT_VARINT:
                    out.status = as_int32(v)
        elif field == 2 and wt == WT_LEN:
            for f2, wt2, a2, b2 in fields(raw, a, b):
                if f2 == 2:
                    out.has_init = True
                elif f2 == 1 and wt2 == WT_LEN:
                    for f3, wt3, a3, b3 in fields(raw, a2, b2):
                        if f3 == 3 and wt3 == WT_LEN:
                            out.side_channel = raw[a3:b3]
                        elif f3 == 2 and wt3 == WT_LEN:
                            key, value = "", b""
                            for f4, wt4, a4, b4 in fields(raw, a3, b3):
                                if f4 == 1 and wt4 == WT_LEN:
                                    key = raw[a4:b4].decode()
                                elif f4 == 2 and wt4 == WT_LEN:
                                    value = raw[a4:b4]
                            out.infos[key] = value  # map semantics: the last entry wins
    return out


class FastUnityEnvironment(UnityEnvironment):
    """Drop-in `UnityEnvironment` using `FastCommunicator` and the bytes codec (module doc)."""

    @staticmethod
    def _get_communicator(worker_id: int, base_port: int, timeout_wait: int) -> FastCommunicator:
        return FastCommunicator(worker_id, base_port, timeout_wait)

    def _exchange_raw(self, payload: bytes) -> bytes:
        communicator: FastCommunicator = self._communicator  # type: ignore[assignment]
        return communicator.exchange_raw(payload, self._poll_process)

    def reset(self) -> None:
        if not self._loaded:
            raise UnityEnvironmentException("No Unity environment is loaded.")
        side = bytes(self._side_channel_manager.generate_side_channel_messages())
        self._apply_output(self._exchange_raw(encode_input(RESET, side, {})))
        self._is_first_message = False
        self._env_actions.clear()

    @timed
    def step(self) -> None:
        if self._is_first_message:
            return self.reset()
        if not self._loaded:
            raise UnityEnvironmentException("No Unity environment is loaded.")
        with hierarchical_timer("_generate_step_input"):
            actions = {}
            for name, spec in self._env_specs.items():
                n_agents = len(self._env_state[name][0]) if name in self._env_state else 0
                action = self._env_actions.get(name)
                if action is None:
                    action = spec.action_spec.empty_action(n_agents)
                actions[name] = (action, n_agents)
            side = bytes(self._side_channel_manager.generate_side_channel_messages())
            payload = encode_input(STEP, side, actions)
        with hierarchical_timer("communicator.exchange"):
            raw = self._exchange_raw(payload)
        self._apply_output(raw)
        self._env_actions.clear()

    @timed
    def fast_steps_from_bytes(self, raw: bytes) -> bool:
        """Update the state from a world message by hand; False when it needs the stock path
        (BrainParameters or a layout the fast decoder does not take)."""
        try:
            out = _split_output(raw)
            if out.has_init:
                return False
            if out.status != 200:
                raise UnityCommunicatorStoppedException("Communicator has exited.")
            state: dict[str, tuple[DecisionSteps, TerminalSteps]] = {}
            for name, spec in self._env_specs.items():
                if name in out.infos:
                    state[name] = decode_agent_infos(out.infos[name], spec)
                else:
                    state[name] = (DecisionSteps.empty(spec), TerminalSteps.empty(spec))
        except (WireError, UnicodeDecodeError) as err:
            logger.debug("stock decoding for this message: %s", err)
            return False
        self._env_state.update(state)
        self._side_channel_manager.process_side_channel_message(out.side_channel)
        return True

    def _apply_output(self, raw: bytes) -> None:
        if self.fast_steps_from_bytes(raw):
            return
        message = UnityMessageProto.FromString(raw)
        if message.header.status != 200:
            raise UnityCommunicatorStoppedException("Communicator has exited.")
        self._update_behavior_specs(message.unity_output)
        self._update_state(message.unity_output.rl_output)


def environment_class(mode: str | None = None) -> type[UnityEnvironment]:
    """`FastUnityEnvironment` or stock `UnityEnvironment` for AVATAR_META_PROTOCOL (or `mode`)."""
    return UnityEnvironment if (mode or protocol_mode()) == "stock" else FastUnityEnvironment


def make_unity_environment(mode: str | None = None, **kwargs: Any) -> UnityEnvironment:
    """Construct the environment class of `mode` with stock UnityEnvironment arguments."""
    return environment_class(mode)(**kwargs)
