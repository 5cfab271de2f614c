"""`avatar-meta bench protocol`: agent-steps/s through the real ML-Agents protocol.

For each size (1, 8, 32, 64 agents) the same run measures both protocol paths (issue 7):
- `stock_steps_per_s`: stock `UnityEnvironment` driving a world process started with
  AVATAR_META_PROTOCOL=stock (protobuf objects on both sides: the reference);
- `fast_steps_per_s`: `envs.fast_env.FastUnityEnvironment` (our trainer's default) driving a
  world with the fast bytes codec (`world.fast_encode`);
- `protocol_steps_per_s`: the default path, i.e. the same number as `fast_steps_per_s`;
- `inprocess_steps_per_s`: the same plaza stepped in this process (the baseline);
- `stock_breakdown_ms` / `fast_breakdown_ms` (`breakdown_ms` = the default path's): where one
  step's time goes. Trainer-side parts come from mlagents-envs' hierarchical timers; world-side
  parts are re-measured in this process on an identical plaza with the world's codec of that
  path; `transport` is the remainder of the trainer's `communicator.exchange` time (gRPC, pipes
  or queues, scheduling between the two processes).
- `bare_rpc_round_trip_ms`: a gRPC unary call between two processes on loopback with payloads
  of this size and no work on either side; `lockstep_ceiling_steps_per_s` = agents /
  (in-process simulation + that round trip): what any codec could reach with a world that
  waits for each answer, as the ML-Agents protocol does.
Each agent takes random actions; every step is set_actions + step + get_steps.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import warnings
from typing import Any

import numpy as np

from avatar_meta import contract

SIZES = (1, 8, 32, 64)


def _random_actions(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    cont = rng.uniform(-1, 1, size=(n, contract.NUM_CONTINUOUS_ACTIONS)).astype(np.float32)
    gesture = rng.integers(0, contract.DISCRETE_BRANCHES[0], size=n)
    return cont, gesture


def _time_inprocess(n: int, steps: int) -> dict[str, float]:
    """Plaza alone, then each world codec's encode/decode work for the same sizes (ms/step)."""
    from mlagents_envs.communicator_objects.agent_action_pb2 import AgentActionProto
    from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto

    from avatar_meta.world.plaza import Plaza
    from avatar_meta.world.side_channels import ProblemLog
    from avatar_meta.world.unity_client import BEHAVIOR_KEY, FastCodec, StockCodec

    rng = np.random.default_rng(0)
    plaza = Plaza(num_areas=n, seed=0)
    plaza.reset()
    actions = [_random_actions(rng, n) for _ in range(steps)]
    start = time.perf_counter()
    results = [plaza.step(c, g) for c, g in actions]
    out = {"sim": (time.perf_counter() - start) / steps * 1e3}

    wire = UnityMessageProto()  # the trainer's answer as stock mlagents-envs writes it
    wire.header.status = 200
    for cont, gest in zip(actions[0][0].tolist(), actions[0][1].tolist(), strict=True):
        action = AgentActionProto()
        action.vector_actions_deprecated.extend([*cont, float(gest)])
        action.continuous_actions.extend(cont)
        action.discrete_actions.append(int(gest))
        wire.unity_input.rl_input.agent_actions[BEHAVIOR_KEY].value.append(action)
    payload = wire.SerializeToString()
    problems = ProblemLog(logging.getLogger("avatar_meta.bench"))
    for name, codec in (("stock", StockCodec()), ("fast", FastCodec())):
        start = time.perf_counter()
        for result in results:
            codec.step_message(result, b"", False)
        out[f"{name}_encode"] = (time.perf_counter() - start) / steps * 1e3
        start = time.perf_counter()
        for _ in range(steps):
            state = codec.parse(payload)[3]
            codec.actions(state, n, problems)
        out[f"{name}_decode"] = (time.perf_counter() - start) / steps * 1e3
    return out


def _timer_total(tree: dict[str, Any], name: str) -> float:
    """Sum of `total` seconds of every node named `name` (or `Class.name`) in a timer tree."""
    total = 0.0
    for child_name, child in tree.get("children", {}).items():
        if child_name == name or child_name.endswith("." + name):
            total += child.get("total", 0.0)
        total += _timer_total(child, name)
    return total


def _time_protocol(n: int, steps: int, warmup: int, base_port: int, mode: str) -> dict[str, float]:
    """One world process + trainer, both on path `mode` (the world reads it from its env)."""
    from mlagents_envs import timers
    from mlagents_envs.base_env import ActionTuple

    from avatar_meta.envs.fast_env import environment_class
    from avatar_meta.wire import PROTOCOL_ENV
    from avatar_meta.world.launcher import world_executable_path

    saved = os.environ.get(PROTOCOL_ENV)
    os.environ[PROTOCOL_ENV] = mode  # inherited by the world process
    try:
        env = environment_class(mode)(
            file_name=world_executable_path(),
            base_port=base_port,
            seed=0,
            no_graphics=True,
            additional_args=["--num-areas", str(n), "--no-stats"],
            timeout_wait=60,
        )
    finally:
        if saved is None:
            os.environ.pop(PROTOCOL_ENV, None)
        else:
            os.environ[PROTOCOL_ENV] = saved
    try:
        env.reset()
        behavior = next(iter(env.behavior_specs))
        rng = np.random.default_rng(0)

        def one_step() -> None:
            decisions, _ = env.get_steps(behavior)
            cont, gesture = _random_actions(rng, len(decisions))
            env.set_actions(behavior, ActionTuple(continuous=cont, discrete=gesture[:, None]))
            env.step()

        for _ in range(warmup):
            one_step()
        timers.reset_timers()
        start = time.perf_counter()
        for _ in range(steps):
            one_step()
        elapsed = time.perf_counter() - start
        tree = timers.get_timer_tree()
    finally:
        env.close()
    per_step = elapsed / steps
    return {
        "per_step": per_step * 1e3,
        "exchange": _timer_total(tree, "communicator.exchange") / steps * 1e3,
        "trainer_encode": _timer_total(tree, "_generate_step_input") / steps * 1e3,
        "trainer_decode": (
            _timer_total(tree, "steps_from_proto") + _timer_total(tree, "fast_steps_from_bytes")
        )
        / steps
        * 1e3,
    }


_ECHO_SERVER = """
import sys
from concurrent.futures import ThreadPoolExecutor
import grpc
reply = b"r" * int(sys.argv[1])
server = grpc.server(ThreadPoolExecutor(max_workers=1))
handler = grpc.unary_unary_rpc_method_handler(lambda request, context: reply)
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {"Call": handler}),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
server.wait_for_termination()
"""


def message_sizes(n: int) -> tuple[int, int]:
    """(world message, trainer answer) bytes per exchange for n agents, from the fast codecs'
    layouts: per agent the observation floats plus ~60 bytes of reward, id, mask and framing;
    per action 2 floats, 1 int and framing (both checked against the codecs by a test)."""
    return n * (4 * contract.OBSERVATION_SIZE + 60) + 200, n * 15 + 40


def rpc_round_trip_ms(request_bytes: int, reply_bytes: int, calls: int) -> float:
    """Median ms of a bare gRPC unary call between two processes on loopback: a server that
    answers `reply_bytes` at once, called with `request_bytes` (no parsing on either side).
    The floor of one lockstep exchange, whatever the codecs."""
    import grpc

    server = subprocess.Popen(
        [sys.executable, "-c", _ECHO_SERVER, str(reply_bytes)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/bench.Echo/Call")
            payload = b"q" * request_bytes
            for _ in range(50):
                call(payload)
            times = []
            for _ in range(calls):
                t0 = time.perf_counter()
                call(payload)
                times.append(time.perf_counter() - t0)
    finally:
        server.kill()
        server.wait()
    return float(np.median(times)) * 1e3


def _breakdown(world: dict[str, float], proto: dict[str, float], mode: str) -> dict[str, float]:
    encode, decode = world[f"{mode}_encode"], world[f"{mode}_decode"]
    transport = max(proto["exchange"] - world["sim"] - encode - decode, 0.0)
    other = (
        proto["per_step"] - proto["exchange"] - proto["trainer_encode"] - proto["trainer_decode"]
    )
    parts = {
        "world_sim": world["sim"],
        "world_encode": encode,
        "world_decode_actions": decode,
        "transport": transport,
        "trainer_encode_actions": proto["trainer_encode"],
        "trainer_decode": proto["trainer_decode"],
        "trainer_other": max(other, 0.0),
        "total_per_step": proto["per_step"],
    }
    return {k: round(v, 4) for k, v in parts.items()}


def run(quick: bool = False, sizes: tuple[int, ...] = SIZES, base_port: int = 6105) -> dict:
    """Measure every size on both paths; returns the `results` object of the suite's JSON."""
    warnings.filterwarnings("ignore")
    steps, warmup = (60, 10) if quick else (600, 50)
    results: dict[str, Any] = {}
    for k, n in enumerate(sizes):
        world = _time_inprocess(n, steps)
        stock = _time_protocol(n, steps, warmup, base_port + 2 * k, "stock")
        fast = _time_protocol(n, steps, warmup, base_port + 2 * k + 1, "fast")
        stock_rate = n / (stock["per_step"] / 1e3)
        fast_rate = n / (fast["per_step"] / 1e3)
        inprocess_rate = n / (world["sim"] / 1e3)
        fast_parts = _breakdown(world, fast, "fast")
        rpc_ms = rpc_round_trip_ms(*message_sizes(n), calls=200 if quick else 1000)
        ceiling = n / ((world["sim"] + rpc_ms) / 1e3)
        results[f"agents_{n}"] = {
            "agents": n,
            "steps": steps,
            "protocol_steps_per_s": round(fast_rate, 1),
            "stock_steps_per_s": round(stock_rate, 1),
            "fast_steps_per_s": round(fast_rate, 1),
            "inprocess_steps_per_s": round(inprocess_rate, 1),
            "baseline": "inprocess_steps_per_s",
            "protocol_vs_inprocess": round(fast_rate / inprocess_rate, 4),
            "stock_vs_inprocess": round(stock_rate / inprocess_rate, 4),
            "fast_vs_stock": round(fast_rate / stock_rate, 2),
            "bare_rpc_round_trip_ms": round(rpc_ms, 4),
            "lockstep_ceiling_steps_per_s": round(ceiling, 1),
            "fast_vs_ceiling": round(fast_rate / ceiling, 3),
            "breakdown_ms": fast_parts,
            "fast_breakdown_ms": fast_parts,
            "stock_breakdown_ms": _breakdown(world, stock, "stock"),
        }
        print(
            f"{n:>3} agents: stock {stock_rate:9.0f}, fast {fast_rate:9.0f} "
            f"({fast_rate / stock_rate:.1f}x), in-process {inprocess_rate:9.0f} agent-steps/s"
        )
    return results
