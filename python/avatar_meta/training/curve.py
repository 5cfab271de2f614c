"""The meta-loop's record of each iteration: a training-curve entry and its TensorBoard
scalars (scores come from `training.scoring`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from avatar_meta.meta import MetaSGDParams
from avatar_meta.training.checkpoints import SHARED_KEY, MetaState


def curve_entry(
    state: MetaState,
    tasks: list[Any],
    pre: np.ndarray,
    post: np.ndarray | None,
    log: dict[str, float],
) -> dict[str, float]:
    """One point of the training curve (`MetaState.curve`, training_curves.json)."""
    entry = {
        "iteration": float(state.iteration),
        "env_steps": float(state.env_steps),
        "wall_s": state.wall_seconds,
        "env_s": state.env_seconds,
        "learn_s": state.learn_seconds,
        "pre_return": float(pre.mean()),
        **log,
    }
    if post is not None:
        entry["post_return"] = float(post.mean())
    return entry


def log_tensorboard(
    writer: Any,
    algorithm: str,
    state: MetaState,
    entry: dict[str, float],
    tasks: list[Any],
    pre: np.ndarray,
    post: np.ndarray | None,
) -> None:
    """TensorBoard scalars of one meta-iteration: the curve entry, pre/post-adaptation
    return per family and Meta-SGD's mean inner step sizes."""
    if writer is None:
        return
    step = state.iteration
    for key, value in entry.items():
        if key != "iteration":
            writer.add_scalar(f"{algorithm}/{key}", value, step)
    families = sorted({t.family for t in tasks})
    fam = np.array([t.family for t in tasks])
    for f in families:
        writer.add_scalar(f"{algorithm}/pre_return/{f}", float(pre[fam == f].mean()), step)
        if post is not None:
            writer.add_scalar(f"{algorithm}/post_return/{f}", float(post[fam == f].mean()), step)
    for key, params in state.params.items():
        if isinstance(params, MetaSGDParams):
            prefix = f"{algorithm}/inner_lr" + ("" if key == SHARED_KEY else f"/{key}")
            for k, v in params.lrs[0].items():
                writer.add_scalar(f"{prefix}/{k}", float(v.detach().abs().mean()), step)
