"""`avatar-meta bench protocol`: agent-steps/s through the real ML-Agents protocol.

For each size (1, 8, 32, 64 agents) the same run measures:
- `protocol_steps_per_s`: stock `UnityEnvironment` driving the headless world process over
  gRPC on loopback (set_actions + step + get_steps, random actions);
- `inprocess_steps_per_s`: the same plaza stepped in this process (the baseline; the ratio
  `protocol_vs_inprocess` says what the protocol costs);
- `breakdown_ms`: where one protocol step's time goes. Trainer-side parts come from
  mlagents-envs' own hierarchical timers; world-side parts are re-measured in this process on an
  identical plaza with the world's own encoder/decoder; `transport` is the remainder of the
  trainer's `communicator.exchange` time (gRPC, pipes, scheduling between the two processes).
"""

from __future__ import annotations

import logging
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
    """Plaza alone, then the world's encode/decode work for the same sizes (ms per step)."""
    from mlagents_envs.communicator_objects.agent_action_pb2 import AgentActionProto
    from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
    from mlagents_envs.communicator_objects.unity_rl_input_pb2 import UnityRLInputProto

    from avatar_meta.world.plaza import Plaza
    from avatar_meta.world.side_channels import ProblemLog
    from avatar_meta.world.unity_client import BEHAVIOR_KEY, AgentInfoWriter, decode_actions

    rng = np.random.default_rng(0)
    plaza = Plaza(num_areas=n, seed=0)
    plaza.reset()
    actions = [_random_actions(rng, n) for _ in range(steps)]
    start = time.perf_counter()
    results = [plaza.step(c, g) for c, g in actions]
    sim = (time.perf_counter() - start) / steps

    writer = AgentInfoWriter()
    start = time.perf_counter()
    for result in results:
        message = UnityMessageProto()
        message.header.status = 200
        writer.write_step(message.unity_output.rl_output, result)
        message.SerializeToString()
    encode = (time.perf_counter() - start) / steps

    rl_input = UnityRLInputProto()
    for cont, gest in zip(actions[0][0], actions[0][1], strict=True):
        action = AgentActionProto()
        action.continuous_actions.extend(cont.tolist())
        action.discrete_actions.append(int(gest))
        rl_input.agent_actions[BEHAVIOR_KEY].value.append(action)
    wire = UnityMessageProto()
    wire.unity_input.rl_input.CopyFrom(rl_input)
    payload = wire.SerializeToString()
    problems = ProblemLog(logging.getLogger("avatar_meta.bench"))
    start = time.perf_counter()
    for _ in range(steps):
        parsed = UnityMessageProto.FromString(payload)
        decode_actions(parsed.unity_input.rl_input, n, problems)
    decode = (time.perf_counter() - start) / steps
    return {"sim": sim * 1e3, "world_encode": encode * 1e3, "world_decode": decode * 1e3}


def _timer_total(tree: dict[str, Any], name: str) -> float:
    """Sum of `total` seconds of every node named `name` (or `Class.name`) in a timer tree."""
    total = 0.0
    for child_name, child in tree.get("children", {}).items():
        if child_name == name or child_name.endswith("." + name):
            total += child.get("total", 0.0)
        total += _timer_total(child, name)
    return total


def _time_protocol(n: int, steps: int, warmup: int, base_port: int) -> dict[str, float]:
    from mlagents_envs import timers
    from mlagents_envs.base_env import ActionTuple
    from mlagents_envs.environment import UnityEnvironment

    from avatar_meta.world.launcher import world_executable_path

    env = UnityEnvironment(
        file_name=world_executable_path(),
        base_port=base_port,
        seed=0,
        no_graphics=True,
        additional_args=["--num-areas", str(n), "--no-stats"],
        timeout_wait=60,
    )
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
        "trainer_decode": _timer_total(tree, "steps_from_proto") / steps * 1e3,
    }


def run(quick: bool = False, sizes: tuple[int, ...] = SIZES, base_port: int = 6105) -> dict:
    """Measure every size; returns the `results` object of the suite's JSON."""
    warnings.filterwarnings("ignore")
    steps, warmup = (60, 10) if quick else (600, 50)
    results: dict[str, Any] = {}
    for k, n in enumerate(sizes):
        world = _time_inprocess(n, steps)
        proto = _time_protocol(n, steps, warmup, base_port + k)
        transport = max(
            proto["exchange"] - world["sim"] - world["world_encode"] - world["world_decode"], 0.0
        )
        protocol_rate = n / (proto["per_step"] / 1e3)
        inprocess_rate = n / (world["sim"] / 1e3)
        results[f"agents_{n}"] = {
            "agents": n,
            "steps": steps,
            "protocol_steps_per_s": round(protocol_rate, 1),
            "inprocess_steps_per_s": round(inprocess_rate, 1),
            "baseline": "inprocess_steps_per_s",
            "protocol_vs_inprocess": round(protocol_rate / inprocess_rate, 4),
            "breakdown_ms": {
                "world_sim": round(world["sim"], 4),
                "world_encode": round(world["world_encode"], 4),
                "world_decode_actions": round(world["world_decode"], 4),
                "transport": round(transport, 4),
                "trainer_encode_actions": round(proto["trainer_encode"], 4),
                "trainer_decode": round(proto["trainer_decode"], 4),
                "trainer_other": round(
                    max(
                        proto["per_step"]
                        - proto["exchange"]
                        - proto["trainer_encode"]
                        - proto["trainer_decode"],
                        0.0,
                    ),
                    4,
                ),
                "total_per_step": round(proto["per_step"], 4),
            },
        }
        print(
            f"{n:>3} agents: protocol {protocol_rate:9.0f} agent-steps/s, "
            f"in-process {inprocess_rate:9.0f} agent-steps/s"
        )
    return results
