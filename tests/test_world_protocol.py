"""The headless world speaks the ML-Agents protocol the way a Unity build does.

Most tests launch the real world executable with stock `UnityEnvironment(file_name=...)` on
loopback (no mocks of the protocol); a few check the byte codecs and the launcher in-process.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlagents_envs import env_utils
from mlagents_envs.base_env import ActionTuple, DimensionProperty, ObservationType
from mlagents_envs.side_channel import OutgoingMessage, SideChannel
from mlagents_envs.side_channel.environment_parameters_channel import (
    EnvironmentParametersChannel,
)
from mlagents_envs.side_channel.side_channel_manager import SideChannelManager
from mlagents_envs.side_channel.stats_side_channel import StatsSideChannel

from avatar_meta import contract
from avatar_meta.envs import TaskChannel
from avatar_meta.world import launcher
from avatar_meta.world import side_channels as sc
from avatar_meta.world.types import EpisodeStats, TaskSpec
from avatar_meta.world.unity_client import BEHAVIOR_KEY, decode_actions

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["fast", "stock"], autouse=True)
def protocol_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test on both protocol paths (issue 7): AVATAR_META_PROTOCOL is inherited by
    the world process and read by MLAgentsTaskEnv (stock `UnityEnvironment` stays stock)."""
    monkeypatch.setenv("AVATAR_META_PROTOCOL", request.param)
    return str(request.param)


OpenWorld = Callable[..., Any]
V = contract.OBS["own_velocity"]
VIS, DIST = contract.OBS["visitor_position"], contract.OBS["visitor_distance"]


class RawChannel(SideChannel):
    """Sends arbitrary payloads under any GUID (to feed the world malformed records)."""

    def send(self, payload: bytes) -> None:
        msg = OutgoingMessage()
        msg.set_raw_bytes(bytearray(payload))
        self.queue_message_to_send(msg)

    def on_message_received(self, msg: Any) -> None:
        pass


class FakeSink:
    """Records what the side channels ask of the plaza."""

    def __init__(self, num_areas: int = 4) -> None:
        self.num_areas = num_areas
        self.tasks: dict[int, TaskSpec | None] = {}
        self.defaults: list[dict[str, float]] = []

    def assign_task(self, area: int, task: TaskSpec | None) -> None:
        self.tasks[area] = task

    def set_defaults(self, values: dict[str, float]) -> list[str]:
        self.defaults.append(dict(values))
        return [k for k in values if k == "unknown_key"]


def _problems() -> sc.ProblemLog:
    return sc.ProblemLog(sc.logger)


# ---------------------------------------------------------------------------------------------
# Codecs, in-process
# ---------------------------------------------------------------------------------------------
def test_trainer_task_channel_bytes_decode_in_the_world() -> None:
    channel = TaskChannel()
    channel.assign(3, "greet_visitor", [2, 1.5], [2.5, 3.0, 0.125])
    framed = SideChannelManager([channel]).generate_side_channel_messages()
    [(guid, payload)] = list(sc.split_records(bytes(framed), _problems()))
    assert guid == uuid.UUID(contract.TASK_CHANNEL_ID)
    message = sc.decode_task(payload)
    assert message == sc.TaskMessage(3, "greet_visitor", (2.0, 1.5), (2.5, 3.0, 0.125))
    assert payload == sc.encode_task(3, "greet_visitor", [2, 1.5], [2.5, 3.0, 0.125])


def test_truncated_records_end_the_blob_without_raising() -> None:
    good = sc.encode_record(sc.TASK_CHANNEL, b"abc")
    assert list(sc.split_records(good + good[:10], _problems())) == [(sc.TASK_CHANNEL, b"abc")]
    too_long = sc.TASK_CHANNEL.bytes_le + (1000).to_bytes(4, "little") + b"xy"
    assert list(sc.split_records(too_long, _problems())) == []


def test_side_channels_route_validate_and_survive_bad_records() -> None:
    sink = FakeSink(num_areas=4)
    router = sc.WorldSideChannels(sink, world_seed=1)
    task = sc.TASK_CHANNEL
    records = [
        (task, sc.encode_task(-1, "patrol", [2], [1.5, 2.0, 0.0])),  # all areas
        (task, sc.encode_task(1, "follow_visitor", [9.0], [])),  # clipped to 4.0
        (task, sc.encode_task(2, "", [], [])),  # clears area 2
        (task, sc.encode_task(7, "patrol", [1], [])),  # no area 7
        (task, sc.encode_task(0, "dragon", [1], [])),  # unknown family
        (task, sc.encode_task(0, "greet_visitor", [1], [])),  # wrong count
        (task, sc.encode_task(0, "follow_visitor", [math.nan], [])),  # NaN
        (task, sc.encode_task(0, "patrol", [1], [])[:9]),  # truncated
        (task, b"\x00\x00\x00\x00\x02\x00\x00\x00\xff\xfe"),  # non-ASCII family
        (uuid.uuid4(), b"whatever"),  # unknown channel
        (sc.ENGINE_CONFIG_CHANNEL, b"\x02\x00\x00\x00\x00\x00\xa0\x41"),  # time scale 20
        (sc.ENGINE_CONFIG_CHANNEL, b"\x09"),  # garbage
        (sc.ENV_PARAMS_CHANNEL, b"\x05\x00"),  # garbage
        (sc.TRAINING_ANALYTICS_CHANNEL, b"\x01\x02"),
    ]
    blob = b"".join(sc.encode_record(g, p) for g, p in records)
    router.receive(blob)
    assert sink.tasks[1] == TaskSpec.make("follow_visitor", (4.0,))
    assert sink.tasks[0] == sink.tasks[3] == TaskSpec.make("patrol", (2,), (1.5, 2.0, 0.0))
    assert sink.tasks[2] is None
    assert set(sink.tasks) == {0, 1, 2, 3}


def test_environment_parameters_floats_and_samplers() -> None:
    channel = EnvironmentParametersChannel()
    channel.set_float_parameter("family", 3.0)
    channel.set_uniform_sampler_parameters("top_speed", 1.0, 3.0, seed=5)
    channel.set_gaussian_sampler_parameters("turn_rate", 2.0, 0.1, seed=6)
    channel.set_multirangeuniform_sampler_parameters("side_gap", [(0.8, 1.0), (1.8, 2.0)], seed=7)
    channel.set_float_parameter("unknown_key", 1.0)
    blob = bytes(SideChannelManager([channel]).generate_side_channel_messages())

    def draws(world_seed: int) -> list[dict[str, float]]:
        sink = FakeSink()
        router = sc.WorldSideChannels(sink, world_seed=world_seed)
        router.receive(blob)
        assert router.has_samplers
        for _ in range(20):
            router.push_defaults()
        return sink.defaults

    values = draws(world_seed=1)
    assert all(v["family"] == 3.0 for v in values)
    speeds = [v["top_speed"] for v in values]
    assert all(1.0 <= s <= 3.0 for s in speeds) and len(set(speeds)) > 10  # redrawn on each read
    assert all(0.8 <= v["side_gap"] <= 1.0 or 1.8 <= v["side_gap"] <= 2.0 for v in values)
    assert draws(world_seed=1) == values  # reproducible from the seeds
    assert draws(world_seed=2) != values


def test_stats_records_read_by_mlagents_stats_channel() -> None:
    finished = [
        EpisodeStats(0, 0, "patrol", 1.5, True, 200),
        EpisodeStats(1, 1, "patrol", 0.5, False, 200),
    ]
    stats = StatsSideChannel()
    SideChannelManager([stats]).process_side_channel_message(sc.episode_stat_records(finished))
    got = stats.get_and_reset_stats()
    assert [v for v, _ in got["Avatar/patrol/Episode Return"]] == [1.5, 0.5]
    assert [v for v, _ in got["Avatar/patrol/Success Rate"]] == [1.0, 0.0]


def test_bad_actions_fall_back_to_standing_still() -> None:
    from mlagents_envs.communicator_objects.unity_rl_input_pb2 import UnityRLInputProto

    rl_in = UnityRLInputProto()
    actions = rl_in.agent_actions[BEHAVIOR_KEY].value
    for cont, disc in (([0.5, -0.5], [2]), ([math.nan, 1.0], [7]), ([1.0], [])):
        action = actions.add()
        action.continuous_actions.extend(cont)
        action.discrete_actions.extend(disc)
    continuous, gesture = decode_actions(rl_in, 4, _problems())  # 3 actions for 4 agents
    assert continuous.tolist() == [[0.5, -0.5], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    assert gesture.tolist() == [2, 0, 0, 0]
    continuous, gesture = decode_actions(UnityRLInputProto(), 2, _problems())
    assert not continuous.any() and not gesture.any()


def test_world_path_is_what_mlagents_launches(tmp_path: Path, monkeypatch: Any) -> None:
    path = launcher.world_executable_path()
    assert env_utils.validate_environment_path(path) == path
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    shim = launcher._write_launcher()  # the fallback: a shell launcher in the cache
    assert shim.startswith(str(tmp_path)) and os.access(shim, os.X_OK)
    assert env_utils.validate_environment_path(shim) == shim
    assert launcher._write_launcher() == shim  # idempotent
    out = subprocess.run([shim, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--mlagents-port" in out.stdout
    assert not launcher._acceptable("/home/me/my.app/bin/avatar-meta-world")


def test_world_without_trainer_gives_up(free_port: int) -> None:
    start = time.monotonic()
    args = ["--mlagents-port", str(free_port), "--connect-timeout", "1", "-logFile", "-"]
    out = subprocess.run(
        [launcher.world_executable_path(), *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1 and "no trainer listening" in out.stdout
    assert time.monotonic() - start < 20


# ---------------------------------------------------------------------------------------------
# Through the protocol, with stock UnityEnvironment
# ---------------------------------------------------------------------------------------------
def _random_actions(rng: np.random.Generator, n: int) -> ActionTuple:
    return ActionTuple(
        continuous=rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        discrete=rng.integers(0, 4, (n, 1)).astype(np.int32),
    )


def _check_masks(obs: np.ndarray, mask: np.ndarray) -> None:
    """Gestures are masked exactly when |forward speed| > half the top speed (contract v1)."""
    speed = np.abs(obs[:, V.start + 1])
    clear = np.abs(speed - contract.GESTURE_MASK_SPEED_FRACTION) > 1e-4
    assert not mask[:, 0].any()
    expected = speed > contract.GESTURE_MASK_SPEED_FRACTION
    assert (mask[clear, 1:] == expected[clear, None]).all()


def test_handshake_spec_and_areas(open_world: OpenWorld) -> None:
    env = open_world()  # UnityEnvironment asks for num_areas=1: the world's default 8 apply
    env.reset()
    assert list(env.behavior_specs) == [BEHAVIOR_KEY]
    spec = env.behavior_specs[BEHAVIOR_KEY]
    [obs_spec] = spec.observation_specs
    assert obs_spec.shape == (contract.OBSERVATION_SIZE,)
    assert obs_spec.name == contract.SENSOR_NAME
    assert obs_spec.dimension_property == (DimensionProperty.NONE,)
    assert obs_spec.observation_type == ObservationType.DEFAULT
    assert spec.action_spec.continuous_size == 2
    assert spec.action_spec.discrete_branches == (4,)
    decision, terminal = env.get_steps(BEHAVIOR_KEY)
    assert decision.agent_id.tolist() == list(range(8)) and len(terminal) == 0
    assert decision.action_mask[0].shape == (8, 4)

    more = open_world(num_areas=3, args=["--agents-per-area", "2"])
    more.reset()
    assert len(more.get_steps(BEHAVIOR_KEY)[0]) == 6


def test_families_tasks_parameters_stats_and_episode_ends(open_world: OpenWorld) -> None:
    tasks, stats, params = TaskChannel(), StatsSideChannel(), EnvironmentParametersChannel()
    env = open_world(side_channels=[tasks, stats, params])
    for area, family in enumerate(contract.FAMILIES):  # areas 0-5: one family each
        tasks.assign(area, family.name, [p.low for p in family.params])
    params.set_float_parameter(contract.ENV_PARAM_FAMILY, 4.0)  # areas 6, 7: pace_match
    env.reset()
    rng = np.random.default_rng(0)
    ends: list[Any] = []
    for _ in range(contract.MAX_EPISODE_STEPS):
        decision, _ = env.get_steps(BEHAVIOR_KEY)
        env.set_actions(BEHAVIOR_KEY, _random_actions(rng, len(decision)))
        env.step()
        decision, terminal = env.get_steps(BEHAVIOR_KEY)
        assert np.isfinite(decision.reward).all() and np.isfinite(decision.obs[0]).all()
        _check_masks(decision.obs[0], decision.action_mask[0])
        if len(terminal):
            ends.append(terminal)
            # An agent that ended is also back in DecisionSteps with its new episode.
            assert set(terminal.agent_id) <= set(decision.agent_id)
    # Every episode started by the reset ends at the step limit, as interrupted (the greet area
    # may have ended earlier by a lucky random greeting).
    last = ends[-1]
    assert set(range(8)) - {2} <= set(last.agent_id.tolist())
    assert last.interrupted[last.agent_id != 2].all() and np.isfinite(last.obs[0]).all()
    returns = stats.get_and_reset_stats()
    counts = Counter(k.split("/")[1] for k in returns if k.endswith("Episode Return"))
    assert set(counts) == {f.name for f in contract.FAMILIES}
    episodes = Counter({k.split("/")[1]: len(v) for k, v in returns.items() if "Return" in k})
    assert episodes["pace_match"] == 3  # area 4 by TaskChannel, areas 6 and 7 by parameter

    # One assignment for all areas (-1), applied by the RESET that travels with it.
    tasks.assign_all("patrol", [3])
    env.reset()
    for _ in range(contract.MAX_EPISODE_STEPS):
        env.set_actions(BEHAVIOR_KEY, _random_actions(rng, 8))
        env.step()
    returns = stats.get_and_reset_stats()
    assert {k: len(v) for k, v in returns.items()} == {
        "Avatar/patrol/Episode Return": 8,
        "Avatar/patrol/Success Rate": 8,
    }


def _greet_actions(obs: np.ndarray, mask: np.ndarray, comfort: float) -> ActionTuple:
    """Walk up to the visitor, stop at the comfort distance and wave (gesture 1)."""
    local = obs[:, VIS] * contract.POSITION_SCALE
    dist = obs[:, DIST.start] * contract.POSITION_SCALE
    bearing = np.arctan2(local[:, 0], local[:, 1])  # positive = visitor to the right
    forward = np.clip(dist - comfort, -1, 1) * (np.abs(bearing) < 0.6)
    ready = (np.abs(dist - comfort) < 0.25) & ~mask[:, 1]
    return ActionTuple(
        continuous=np.stack([forward, np.clip(2 * bearing, -1, 1)], axis=1).astype(np.float32),
        discrete=np.where(ready, 1, 0)[:, None].astype(np.int32),
    )


def test_successful_greeting_ends_episode_without_interruption(open_world: OpenWorld) -> None:
    tasks, stats = TaskChannel(), StatsSideChannel()
    env = open_world(side_channels=[tasks, stats])
    tasks.assign_all("greet_visitor", [1, 1.5], [2.0, 3.0, 0.0])
    env.reset()
    successes = 0
    for _ in range(contract.MAX_EPISODE_STEPS):
        decision, _ = env.get_steps(BEHAVIOR_KEY)
        env.set_actions(BEHAVIOR_KEY, _greet_actions(decision.obs[0], decision.action_mask[0], 1.5))
        env.step()
        terminal = env.get_steps(BEHAVIOR_KEY)[1]
        successes += int((~terminal.interrupted).sum())
        if successes:
            break
    assert successes >= 1
    rates = [v for v, _ in stats.get_and_reset_stats()["Avatar/greet_visitor/Success Rate"]]
    assert 1.0 in rates


def _rollout(env: Any, steps: int) -> tuple[np.ndarray, np.ndarray]:
    env.reset()
    rng = np.random.default_rng(3)
    obs, rewards = [env.get_steps(BEHAVIOR_KEY)[0].obs[0]], []
    for _ in range(steps):
        env.set_actions(BEHAVIOR_KEY, _random_actions(rng, 8))
        env.step()
        decision = env.get_steps(BEHAVIOR_KEY)[0]
        obs.append(decision.obs[0])
        rewards.append(decision.reward)
    return np.stack(obs), np.stack(rewards)


def test_same_seed_same_observations_and_rewards(open_world: OpenWorld) -> None:
    first, second, other = (open_world(seed=s) for s in (7, 7, 8))
    obs_a, rew_a = _rollout(first, 60)
    obs_b, rew_b = _rollout(second, 60)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    assert not np.array_equal(_rollout(other, 1)[0][0], obs_a[0])


def test_bad_input_does_not_crash_the_world(open_world: OpenWorld) -> None:
    from mlagents_envs.communicator_objects.unity_input_pb2 import UnityInputProto

    raw_task = RawChannel(uuid.UUID(contract.TASK_CHANNEL_ID))
    raw_params = RawChannel(uuid.UUID(contract.ENV_PARAMS_CHANNEL_ID))
    unknown = RawChannel(uuid.uuid4())
    env = open_world(side_channels=[raw_task, raw_params, unknown])
    for payload in (
        b"",
        b"\x01\x02",
        sc.encode_task(0, "greet_visitor", [1.0], []),
        sc.encode_task(0, "follow_visitor", [math.inf], []),
        sc.encode_task(-5, "patrol", [1], []),
        b"\x00\x00\x00\x00\xff\xff\xff\x7f",  # a family name of 2 GiB
    ):
        raw_task.send(payload)
    raw_params.send(b"\x03\x00\x00\x00key\x01\x00\x00\x00")  # a sampler with nothing after it
    unknown.send(b"hello")
    env.reset()
    n = len(env.get_steps(BEHAVIOR_KEY)[0])
    env.set_actions(
        BEHAVIOR_KEY,
        ActionTuple(np.full((n, 2), np.nan, np.float32), np.full((n, 1), 9, np.int32)),
    )
    env.step()
    # Below the public API: a wrong number of actions and a truncated side-channel record.
    message = UnityInputProto()
    message.rl_input.agent_actions[BEHAVIOR_KEY].value.add().continuous_actions.extend([1.0, 0.0])
    message.rl_input.side_channel = sc.TASK_CHANNEL.bytes_le + b"\x10\x00"
    output = env._communicator.exchange(message, env._poll_process)
    assert output is not None and len(output.rl_output.agentInfos[BEHAVIOR_KEY].value) == n
    env.step()
    assert np.isfinite(env.get_steps(BEHAVIOR_KEY)[0].obs[0]).all()
    assert env._process.poll() is None


def test_world_exits_after_close(open_world: OpenWorld) -> None:
    env = open_world()
    env.reset()
    process = env._process
    start = time.monotonic()
    env.close()
    assert process.returncode == 0 and time.monotonic() - start < 10


TRAINER = """
import sys, time
from mlagents_envs.environment import UnityEnvironment
env = UnityEnvironment(file_name=sys.argv[1], base_port=int(sys.argv[2]), no_graphics=True)
env.reset()
print(env._process.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_world_exits_when_its_trainer_is_killed(world_path: str, free_port: int) -> None:
    trainer = subprocess.Popen(
        [sys.executable, "-c", TRAINER, world_path, str(free_port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert trainer.stdout is not None
        world_pid = int(trainer.stdout.readline())
        assert _alive(world_pid)
        os.kill(trainer.pid, signal.SIGKILL)
        trainer.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(world_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(world_pid), "the world outlived its trainer"
    finally:
        trainer.kill()


PARENT = """
import subprocess, sys, time
world = subprocess.Popen(sys.argv[1:], start_new_session=True)
print(world.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_world_exits_when_its_parent_dies_before_any_connection(
    world_path: str, free_port: int, tmp_path: Path
) -> None:
    """Nothing listens, so only the parent watchdog can notice that the trainer is gone."""
    log = tmp_path / "world.log"
    world = [
        world_path,
        "--mlagents-port",
        str(free_port),
        "--connect-timeout",
        "120",
        "-logFile",
        str(log),
    ]
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, *world], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        world_pid = int(parent.stdout.readline())
        # Kill the parent once the world is up and trying to connect (its startup can take
        # seconds on a loaded machine); the watchdog must then notice the reparenting.
        deadline = time.monotonic() + 60
        while "connecting to port" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "the world never started"
            time.sleep(0.1)
        assert _alive(world_pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(world_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(world_pid), "the world outlived its parent"
    finally:
        parent.kill()
