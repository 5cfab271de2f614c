"""The fast protocol path (AVATAR_META_PROTOCOL=fast) against the stock protobuf reference.

Property-based (hypothesis, bounded examples) in-process checks of each codec:
- world: `FastCodec` messages parse with the stock `UnityMessageProto` to the same values as the
  reference `StockCodec` (AgentInfoWriter) messages; fast and stock action decoding agree on
  stock-encoded, fast-encoded and malformed actions;
- trainer: `decode_agent_infos` == `steps_from_proto` on random ListAgentInfoProtos; the
  trainer's hand-encoded actions parse to the ActionTuple it was given.
Then one end-to-end run: every combination of trainer and world path sees the same trajectory.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlagents_envs.base_env import (
    ActionSpec,
    ActionTuple,
    BehaviorSpec,
    DimensionProperty,
    ObservationSpec,
    ObservationType,
)
from mlagents_envs.communicator_objects.agent_action_pb2 import AgentActionProto
from mlagents_envs.communicator_objects.agent_info_pb2 import AgentInfoProto
from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
from mlagents_envs.communicator_objects.unity_rl_output_pb2 import UnityRLOutputProto
from mlagents_envs.rpc_utils import steps_from_proto

from avatar_meta import contract
from avatar_meta.envs.fast_decode import decode_agent_infos, encode_input
from avatar_meta.world.side_channels import ProblemLog
from avatar_meta.world.types import StepResult
from avatar_meta.world.unity_client import BEHAVIOR_KEY, FastCodec, StockCodec

EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
SIZE, GESTURES = contract.OBSERVATION_SIZE, contract.DISCRETE_BRANCHES[0]
floats32 = st.floats(-1e6, 1e6, width=32, allow_nan=False)


def _problems() -> ProblemLog:
    return ProblemLog(logging.getLogger("test_fast_protocol"))


# -- world side -------------------------------------------------------------------------------
@st.composite
def step_results(draw: Any) -> StepResult:
    n = draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 1e-30, 1e30]))
    done = rng.random(n) < draw(st.floats(0, 1))
    return StepResult(
        obs=(rng.standard_normal((n, SIZE)) * scale).astype(np.float32),
        reward=(rng.standard_normal(n) * draw(st.sampled_from([0.0, 1.0, 1e5]))).astype(np.float32),
        done=done,
        interrupted=done & (rng.random(n) < 0.5),
        terminal_obs=rng.standard_normal((n, SIZE)).astype(np.float32),
        mask=rng.random((n, GESTURES)) < 0.5,
    )


@EXAMPLES
@given(step_results(), st.binary(max_size=300), st.booleans(), st.booleans())
def test_world_messages_parse_like_the_reference(
    result: StepResult, side: bytes, with_brain: bool, reset: bool
) -> None:
    fast, stock = FastCodec(), StockCodec()
    if reset:
        args: tuple[Any, ...] = (result.obs, result.mask, side, with_brain)
        a, b = fast.reset_message(*args), stock.reset_message(*args)
    else:
        a, b = (
            fast.step_message(result, side, with_brain),
            stock.step_message(result, side, with_brain),
        )
    assert UnityMessageProto.FromString(a) == UnityMessageProto.FromString(b)


def _stock_action_bytes(cont: np.ndarray, disc: np.ndarray, side: bytes) -> bytes:
    """What stock mlagents-envs' `_generate_step_input` writes (deprecated copy included)."""
    message = UnityMessageProto()
    message.header.status = 200
    rl_input = message.unity_input.rl_input
    for c, d in zip(cont.tolist(), disc.tolist(), strict=True):
        action = AgentActionProto()
        action.vector_actions_deprecated.extend(c + d)
        action.continuous_actions.extend(c)
        action.discrete_actions.extend(d)
        rl_input.agent_actions[BEHAVIOR_KEY].value.append(action)
    rl_input.side_channel = side
    return message.SerializeToString()


@EXAMPLES
@given(
    st.integers(0, 10),
    st.integers(0, 10),
    st.integers(1, 3),
    st.integers(1, 2),
    st.integers(0, 2**32 - 1),
    st.booleans(),
    st.binary(max_size=40),
)
def test_world_reads_actions_like_the_reference(
    n_agents: int,
    n_actions: int,
    n_cont: int,
    n_disc: int,
    seed: int,
    fast_trainer: bool,
    side: bytes,
) -> None:
    rng = np.random.default_rng(seed)
    cont = rng.uniform(-2, 2, (n_actions, n_cont)).astype(np.float32)
    cont[rng.random(cont.shape) < 0.05] = np.nan
    disc = rng.choice([0, 1, 2, 3, 3, 2, 5, -1, 300], size=(n_actions, n_disc)).astype(np.int32)
    if fast_trainer:
        raw = encode_input(0, side, {BEHAVIOR_KEY: (ActionTuple(cont, disc), n_actions)})
    else:
        raw = _stock_action_bytes(cont, disc, side)
    fast, stock = FastCodec(), StockCodec()
    parsed_fast, parsed_stock = fast.parse(raw), stock.parse(raw)
    assert parsed_fast[:3] == parsed_stock[:3]
    got = fast.actions(parsed_fast[3], n_agents, _problems())
    want = stock.actions(parsed_stock[3], n_agents, _problems())
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


# -- trainer side -----------------------------------------------------------------------------
def _spec(obs_sizes: list[int], branches: tuple[int, ...]) -> BehaviorSpec:
    observations = [
        ObservationSpec((s,), (DimensionProperty.NONE,), ObservationType.DEFAULT, f"obs{k}")
        for k, s in enumerate(obs_sizes)
    ]
    return BehaviorSpec(observations, ActionSpec(2, branches))


@st.composite
def agent_info_lists(draw: Any) -> tuple[bytes, BehaviorSpec]:
    obs_sizes = draw(st.lists(st.integers(1, 40), min_size=1, max_size=3))
    branches = tuple(draw(st.lists(st.integers(1, 5), min_size=0, max_size=3)))
    width = sum(branches)
    infos = UnityRLOutputProto.ListAgentInfoProto()
    for _ in range(draw(st.integers(0, 10))):
        info: AgentInfoProto = infos.value.add()
        info.id = draw(st.integers(-(2**31), 2**31 - 1))
        info.reward = draw(floats32)
        info.done = draw(st.booleans())
        info.max_step_reached = draw(st.booleans())
        info.group_id = draw(st.sampled_from([0, 0, 3, -7, 2**20]))
        info.group_reward = draw(st.sampled_from([0.0, 0.5, -3.25]))
        mask_len = draw(st.sampled_from([width, width, 0, width + 1]))
        info.action_mask.extend(draw(st.lists(st.booleans(), min_size=mask_len, max_size=mask_len)))
        for k, size in enumerate(obs_sizes):
            obs = info.observations.add()
            obs.shape.append(size)
            obs.dimension_properties.append(1)
            obs.name = f"obs{k}"
            obs.float_data.data.extend(draw(st.lists(floats32, min_size=size, max_size=size)))
    return infos.SerializeToString(), _spec(obs_sizes, branches)


def _assert_same_steps(got: Any, want: Any) -> None:
    for ours, ref in zip(got, want, strict=True):
        for name in vars(ref):
            if name.startswith("_"):
                continue
            a, b = getattr(ours, name), getattr(ref, name)
            if name in ("obs", "action_mask") and b is not None:
                assert len(a) == len(b), name
                for x, y in zip(a, b, strict=True):
                    assert x.dtype == y.dtype and x.shape == y.shape, name
                    np.testing.assert_array_equal(x, y)
            elif name == "group_id":
                assert list(a) == list(b)
            else:
                assert (a is None) == (b is None), name
                if b is not None:
                    a, b = np.asarray(a), np.asarray(b)
                    assert a.dtype == b.dtype and a.shape == b.shape, name
                    np.testing.assert_array_equal(a, b)


@EXAMPLES
@given(agent_info_lists())
def test_trainer_decoding_matches_steps_from_proto(case: tuple[bytes, BehaviorSpec]) -> None:
    data, spec = case
    want = steps_from_proto(UnityRLOutputProto.ListAgentInfoProto.FromString(data).value, spec)
    _assert_same_steps(decode_agent_infos(data, spec), want)


@EXAMPLES
@given(step_results())
def test_trainer_decodes_the_fast_world(result: StepResult) -> None:
    raw = FastCodec().step_message(result, b"", False)
    infos = UnityMessageProto.FromString(raw).unity_output.rl_output.agentInfos[BEHAVIOR_KEY]
    spec = _spec([SIZE], contract.DISCRETE_BRANCHES)
    want = steps_from_proto(infos.value, spec)
    _assert_same_steps(decode_agent_infos(infos.SerializeToString(), spec), want)


def test_trainer_nan_observations_raise_like_stock() -> None:
    infos = UnityRLOutputProto.ListAgentInfoProto()
    obs = infos.value.add().observations.add()
    obs.shape.append(2)
    obs.float_data.data.extend([1.0, float("nan")])
    spec = _spec([2], ())
    with pytest.raises(RuntimeError, match="NaN"):
        steps_from_proto(infos.value, spec)
    with pytest.raises(RuntimeError, match="NaN"):
        decode_agent_infos(infos.SerializeToString(), spec)


@EXAMPLES
@given(
    st.integers(0, 9),
    st.lists(st.integers(-5, 400), min_size=0, max_size=3),
    st.integers(0, 3),
    st.binary(max_size=50),
    st.sampled_from([0, 1]),
)
def test_trainer_action_bytes_parse_to_the_actions(
    n: int, disc_pattern: list[int], n_cont: int, side: bytes, command: int
) -> None:
    rng = np.random.default_rng(n)
    cont = rng.standard_normal((n, n_cont)).astype(np.float32)
    disc = np.array([disc_pattern] * n, dtype=np.int32).reshape(n, len(disc_pattern))
    raw = encode_input(command, side, {"B?team=0": (ActionTuple(cont, disc), n)})
    message = UnityMessageProto.FromString(raw)
    rl_input = message.unity_input.rl_input
    assert message.header.status == 200
    assert (rl_input.command, rl_input.side_channel) == (command, side)
    actions = rl_input.agent_actions["B?team=0"].value if n else []
    assert len(actions) == n
    for i, action in enumerate(actions):
        assert list(action.continuous_actions) == cont[i].tolist()
        assert list(action.discrete_actions) == disc[i].tolist()


# -- end to end -------------------------------------------------------------------------------
def _trajectory(trainer: str, world: str, world_path: str, monkeypatch: Any) -> list[Any]:
    from avatar_meta.envs.fast_env import make_unity_environment
    from conftest import allocate_port

    monkeypatch.setenv("AVATAR_META_PROTOCOL", world)  # inherited by the world process
    env = make_unity_environment(
        trainer,
        file_name=world_path,
        base_port=allocate_port(),
        seed=5,
        no_graphics=True,
        additional_args=["--num-areas", "4"],
        timeout_wait=60,
    )
    rng = np.random.default_rng(0)
    seen: list[Any] = []
    try:
        env.reset()
        name = next(iter(env.behavior_specs))
        for _ in range(230):  # past max_step_reached at 200 decisions
            decision, _ = env.get_steps(name)
            n = len(decision)
            cont = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
            env.set_actions(name, ActionTuple(cont, rng.integers(0, GESTURES, (n, 1))))
            env.step()
            decision, terminal = env.get_steps(name)
            seen.append(
                (
                    decision.obs[0].tolist(),
                    decision.reward.tolist(),
                    decision.agent_id.tolist(),
                    decision.action_mask[0].tolist(),
                    terminal.obs[0].tolist(),
                    terminal.reward.tolist(),
                    terminal.interrupted.tolist(),
                    terminal.agent_id.tolist(),
                )
            )
    finally:
        env.close()
    assert any(step[7] for step in seen), "no episode ended"
    return seen


@pytest.mark.timeout(180)
def test_every_path_combination_sees_the_same_trajectory(world_path: str, monkeypatch: Any) -> None:
    reference = _trajectory("stock", "stock", world_path, monkeypatch)
    for trainer, world in (("fast", "fast"), ("fast", "stock"), ("stock", "fast")):
        assert _trajectory(trainer, world, world_path, monkeypatch) == reference, (trainer, world)


@pytest.mark.parametrize("n", [1, 32, 64])
def test_protocol_bench_payload_sizes_match_real_messages(n: int) -> None:
    """The bench's bare-RPC floor uses payloads of the size the fast codecs really write."""
    from avatar_meta.benchmarks.protocol import message_sizes

    rng = np.random.default_rng(n)
    result = StepResult(
        obs=rng.standard_normal((n, SIZE)).astype(np.float32),
        reward=rng.standard_normal(n).astype(np.float32),
        done=np.zeros(n, bool),
        interrupted=np.zeros(n, bool),
        terminal_obs=np.zeros((n, SIZE), np.float32),
        mask=np.zeros((n, GESTURES), bool),
    )
    world = len(FastCodec().step_message(result, b"", False))
    action = ActionTuple(rng.standard_normal((n, 2)).astype(np.float32), np.ones((n, 1), np.int32))
    trainer = len(encode_input(1, b"", {BEHAVIOR_KEY: (action, n)}))
    want_world, want_trainer = message_sizes(n)
    assert 0.7 * world <= want_world <= 1.3 * world + 200, (world, want_world)
    assert 0.7 * trainer <= want_trainer <= 1.3 * trainer + 100, (trainer, want_trainer)
