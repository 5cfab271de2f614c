"""Agent-steps per second of `collect()` with a random policy, in-process or over the protocol.

    python -m avatar_meta.envs.throughput --mode protocol --num-envs 2 --num-areas 16

Prints one JSON line: mode, num_envs, num_areas (per env), agent-steps/s counting every
stepped slot (`agent_steps_per_s`) and only kept episode steps (`kept_steps_per_s`), and the
wall time. World start-up is excluded; one warm-up collect runs first.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

from avatar_meta.envs.rollouts import CollectStats, RandomPolicy, TaskEnv, collect
from avatar_meta.tasks import TaskDistribution


@dataclass
class ThroughputConfig:
    """One measurement."""

    mode: str = "protocol"
    """"protocol" (MLAgentsTaskEnv / ParallelTaskEnv over the built-in world) or "inprocess"."""
    num_envs: int = 1
    """Worlds; more than 1 uses ParallelTaskEnv (protocol mode only)."""
    num_areas: int = 32
    """Areas per world."""
    rounds: int = 2
    """Rounds of 200-step episodes to time (each area runs one episode per round)."""
    base_port: int = 6005
    """First trainer port (protocol mode)."""
    seed: int = 0


def build_env(cfg: ThroughputConfig) -> TaskEnv:
    if cfg.mode == "inprocess":
        from avatar_meta.envs.inprocess import PlazaEnvConfig, PlazaTaskEnv

        return PlazaTaskEnv(PlazaEnvConfig(num_areas=cfg.num_areas, seed=cfg.seed))
    from avatar_meta.envs.mlagents_env import MLAgentsTaskEnv, WorldConfig

    world = WorldConfig(num_areas=cfg.num_areas, base_port=cfg.base_port, seed=cfg.seed)
    if cfg.num_envs == 1:
        return MLAgentsTaskEnv(world)
    from avatar_meta.envs.workers import ParallelTaskEnv

    return ParallelTaskEnv.spread(world, cfg.num_envs)


def measure(cfg: ThroughputConfig) -> dict[str, float | int | str]:
    env = build_env(cfg)
    try:
        n_areas = env.num_areas
        tasks = TaskDistribution(seed=cfg.seed, n_train=max(n_areas, 6), n_heldout=0)
        batch = tasks.train_tasks()[:n_areas]
        policy = RandomPolicy(cfg.seed)
        collect(env, policy, batch, 1)  # warm-up
        stats = CollectStats()
        start = time.perf_counter()
        collect(env, policy, batch, cfg.rounds, stats=stats)
        seconds = time.perf_counter() - start
    finally:
        env.close()
    return {
        "mode": cfg.mode,
        "num_envs": cfg.num_envs,
        "num_areas": cfg.num_areas,
        "agent_steps": stats.agent_steps,
        "seconds": round(seconds, 3),
        "agent_steps_per_s": round(stats.agent_steps / seconds, 1),
        "kept_steps_per_s": round(stats.kept_steps / seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = ThroughputConfig()
    parser.add_argument("--mode", choices=["protocol", "inprocess"], default=defaults.mode)
    parser.add_argument("--num-envs", type=int, default=defaults.num_envs)
    parser.add_argument("--num-areas", type=int, default=defaults.num_areas)
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--base-port", type=int, default=defaults.base_port)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    print(json.dumps(measure(ThroughputConfig(**vars(args)))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
