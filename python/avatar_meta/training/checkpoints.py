"""Meta-training state and its checkpoints: what `training.meta_loop` saves every
meta-iteration and what evaluation, export and `--resume` read back.

A checkpoint (`<run>/checkpoints/<algorithm>.pt`) is written atomically (tmp file, fsync,
os.replace), so a run killed at any moment leaves the previous complete one. It holds one
meta-policy per policy key (a family name, or `SHARED_KEY` when `meta.per_family` is off),
Meta-SGD's step sizes, the normalisation buffers, Adam's state, every RNG state, counters and
the training curve: enough to continue exactly at the next meta-iteration.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from avatar_meta import contract
from avatar_meta.config import RunConfig
from avatar_meta.export.checkpoint import load_payload
from avatar_meta.meta import MetaSGDParams
from avatar_meta.rl import Buffers, Params

SHARED_KEY = "all"
"""Policy key of the single shared initialisation (`meta.per_family: false`)."""


def policy_keys(config: RunConfig) -> list[str]:
    """The meta-policies a run trains: one per training family, or one shared."""
    if not config.meta.per_family:
        return [SHARED_KEY]
    return list(config.task_distribution().train_families)


def policy_key(config: RunConfig, family: str) -> str:
    """Which meta-policy a task of `family` starts from."""
    return family if config.meta.per_family else SHARED_KEY


@dataclass
class MetaState:
    """Everything a checkpoint holds. `params` maps a policy key (a family name, or
    `SHARED_KEY`) to that meta-policy's parameters: a Params dict, or MetaSGDParams."""

    algorithm: str
    params: dict[str, Any]
    buffers: Buffers
    optimizer: torch.optim.Optimizer
    np_rng: np.random.Generator
    generator: torch.Generator
    iteration: int = 0
    """Completed meta-iterations."""
    env_steps: int = 0
    env_seconds: float = 0.0
    learn_seconds: float = 0.0
    wall_seconds: float = 0.0
    """Wall-clock seconds of the meta-iterations (less than env + learn seconds when
    `meta.search_collect_ahead` overlaps them)."""
    finished: bool = False
    curve: list[dict[str, float]] = field(default_factory=list)

    def init_params(self, key: str) -> Params:
        """The meta-learned initialisation of one policy key (Meta-SGD: without step sizes)."""
        return init_of(self.params[key])

    def task_init(self, keys: list[str]) -> Params:
        """Per-task initialisations stacked [K, ...] (task i starts from `keys[i]`)."""
        inits = [self.init_params(k) for k in keys]
        return {n: torch.stack([p[n] for p in inits]) for n in inits[0]}


def init_of(params: Any) -> Params:
    """The policy parameters of one meta-policy entry (Meta-SGD: without its step sizes)."""
    p = params.init if isinstance(params, MetaSGDParams) else params
    return {k: v.detach() for k, v in p.items()}


def checkpoint_path(run_dir: Path, algorithm: str) -> Path:
    return run_dir / "checkpoints" / f"{algorithm}.pt"


def best_checkpoint_path(run_dir: Path, algorithm: str) -> Path:
    """The checkpoint that ended the best training window (`report.metrics.is_best_window`),
    kept for the stability check."""
    return run_dir / "checkpoints" / f"{algorithm}.best.pt"


def save_checkpoint(state: MetaState, path: Path, config: RunConfig) -> None:
    """Atomic: write `<path>.tmp`, fsync, then os.replace over the previous checkpoint.

    `params_by_key` / `metasgd_lrs_by_key` hold every meta-policy; `params` / `metasgd_lrs`
    repeat the first one (the run's default export) for readers that take one policy."""
    by_key = {k: init_of(p) for k, p in state.params.items()}
    lrs_by_key = {
        k: [_detach(d) for d in p.lrs]
        for k, p in state.params.items()
        if isinstance(p, MetaSGDParams)
    }
    first = next(iter(state.params))
    payload = {
        "algorithm": state.algorithm,
        "contract": contract.CONTRACT_VERSION,
        "policy_keys": list(state.params),
        "params_by_key": by_key,
        "metasgd_lrs_by_key": lrs_by_key or None,
        "params": by_key[first],
        "metasgd_lrs": lrs_by_key.get(first),
        "buffers": state.buffers,
        "optimizer": state.optimizer.state_dict(),
        "np_rng": state.np_rng.bit_generator.state,
        "torch_generator": state.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "iteration": state.iteration,
        "env_steps": state.env_steps,
        "env_seconds": state.env_seconds,
        "learn_seconds": state.learn_seconds,
        "wall_seconds": state.wall_seconds,
        "finished": state.finished,
        "curve": state.curve,
        "config": config.to_dict(),
    }
    _write_atomic(path, lambda fh: torch.save(payload, fh))


def copy_checkpoint(source: Path, target: Path) -> None:
    """Atomic copy, like `save_checkpoint`."""
    with open(source, "rb") as src:
        _write_atomic(target, lambda fh: shutil.copyfileobj(src, fh))


def _write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`write` into `<path>.tmp`, fsync, then os.replace over `path`: a reader (or a run
    killed mid-write) sees the previous complete file or the new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _detach(params: Params) -> Params:
    return {k: v.detach().clone() for k, v in params.items()}


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A run checkpoint's payload; ValueError if it was trained for another avatar contract."""
    payload: dict[str, Any] = load_payload(path)
    return payload
