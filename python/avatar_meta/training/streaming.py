"""Stream adapted policies into the running world (play mode, design section 1).

After the held-out evaluation the training job signs each task's adapted policy as a
PolicyWeights envelope and pushes it over the PolicyChannel to the area running that task,
with the `inference` flag: from its next episode on, the area's avatar acts with the streamed
weights inside the world (the built-in world's evaluator; in Unity, `StreamedPolicy`), while
the trainer only watches. One episode per area then shows what the streamed policies earn.

The in-process plaza has no PolicyChannel, so `--inprocess` runs skip this step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avatar_meta import contract
from avatar_meta.envs.rollouts import ActionBatch, TaskEnv, collect
from avatar_meta.export import policy_weights, signing
from avatar_meta.meta.core import task_slice
from avatar_meta.rl import Buffers, Params, PolicySpec
from avatar_meta.tasks import Task

logger = logging.getLogger("avatar_meta.training")
MAX_WAIT_EXCHANGES = 100
"""Exchanges to wait for the world's acknowledgements before giving up."""


def _idle_policy(task_index: np.ndarray, obs: np.ndarray, mask: np.ndarray) -> ActionBatch:
    """Zero actions: the world ignores them for areas its streamed policy drives."""
    n = len(task_index)
    zeros = np.zeros(n, np.float32)
    return ActionBatch(np.zeros((n, 2), np.float32), np.zeros(n, np.int64), zeros, zeros)


def stream_adapted_policies(
    env: TaskEnv,
    spec: PolicySpec,
    buffers: Buffers,
    tasks: Sequence[Task],
    adapted: Params,
    sign_key: str | Path,
    version: int,
) -> dict[str, Any]:
    """Push task i's adapted params (`adapted`, stacked [K, ...]) to area i in inference mode,
    wait for the world's acknowledgements, then run one episode per area with the world
    acting. Returns what happened (for metrics.json `streaming`)."""
    push = getattr(env, "push_policy", None)
    if push is None:
        return {"skipped": "this environment has no PolicyChannel (in-process plaza)"}
    n = min(len(tasks), env.num_areas)
    key = signing.load_private_key(sign_key)
    start = time.perf_counter()
    sent = 0
    transfers: set[tuple[int, int]] = set()  # (area, transfer id) of this call's pushes
    for i in range(n):
        packed = policy_weights.pack(
            spec,
            task_slice(adapted, i),
            buffers,
            version=version,
            task_id=tasks[i].task_id,
            behavior_name=contract.BEHAVIOR_NAME,
            has_critic=False,
        )
        envelope = signing.sign(packed, key).SerializeToString()
        transfers.add((i, int(push(i, envelope, True))))
        sent += len(envelope)
    # The chunks leave with the next exchanges; the world acknowledges every transfer.
    env.set_tasks([*tasks[:n], *([None] * (env.num_areas - n))])
    env.reset()
    slots = env.num_slots

    def answers() -> list[Any]:
        acks = env.policy_acks()  # type: ignore[attr-defined]
        return [a for a in acks if (a.area, a.transfer_id) in transfers]

    for _ in range(MAX_WAIT_EXCHANGES):
        if len(answers()) >= len(transfers):
            break
        env.step(np.zeros((slots, 2), np.float32), np.zeros(slots, np.int64))
    mine = answers()
    accepted = sorted({a.area for a in mine if a.accepted})
    refused = [a.reason for a in mine if not a.accepted]
    delivered_s = time.perf_counter() - start
    # From the next episode on, the world drives those areas with the streamed weights.
    returns = [float(r.episode_return.mean()) for r in collect(env, _idle_policy, tasks[:n], 1)]
    logger.info(
        "streamed %d adapted policies (%.1f KiB) into the world in %.2f s: %d accepted",
        n,
        sent / 1024,
        delivered_s,
        len(accepted),
    )
    return {
        "policies": n,
        "bytes": sent,
        "accepted": len(accepted),
        "refused": refused,
        "unanswered": len(transfers) - len(mine),
        "delivery_s": round(delivered_s, 3),
        "policy_version": version,
        "world_returns": dict(zip([t.task_id for t in tasks[:n]], returns, strict=True)),
    }
