"""PPO pieces the baselines share: rollouts -> RLBatch, a PPO agent, per-task dispatch, and
the oracle's task encoding.

Everything runs through `envs.rollouts.collect` on whatever `TaskEnv` the caller passes, so
the same code serves the in-process plaza (tests) and the protocol path (the demo). Policies
are the standard `rl.Policy` (a log-std floor is part of the architecture) and every update
keeps an entropy bonus: PPO without either collapses its log-std (design section 6).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avatar_meta import contract
from avatar_meta.envs.rollouts import ActionBatch, TaskEnv, TaskRollout, collect
from avatar_meta.rl import (
    Buffers,
    Params,
    Policy,
    PolicySpec,
    PPOConfig,
    RLBatch,
    gae,
    init_params,
    make_batch,
    ppo_terms,
    update_obs_stats,
)
from avatar_meta.rl.losses import GuidedBatch, guided_loss
from avatar_meta.tasks import Task
from avatar_meta.training import common


@dataclass(frozen=True)
class PPOSettings:
    """One PPO update on freshly collected episodes."""

    lr: float = 3e-4
    """Adam learning rate (the "step size" the validation search picks for fine-tuning)."""
    epochs: int = 8
    """Passes over the batch per update."""
    minibatches: int = 16
    """Minibatches per pass. With 4 x 4 the policy barely moved per update (approx-KL ~0.001)
    and PPO reached a quarter of the scripted return on reach_landmark; 8 x 16 matched it in
    ~130k env steps."""
    gamma: float = 0.99
    """Discount."""
    lam: float = 0.95
    """GAE lambda."""
    clip: float = 0.2
    """PPO ratio clip."""
    ent_coef: float = 0.01
    """Entropy bonus (> 0 keeps the log-std from collapsing; the policy also has a floor)."""
    vf_coef: float = 0.5
    """Value-loss weight."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    update_obs_stats: bool = True
    """Fold each update's observations into the normalisation statistics (after the update)."""
    per_task_advantages: bool = True
    """Normalise advantages per task before mixing tasks in one batch. Families' reward scales
    differ by ~100x; without this the large-scale families own the gradient."""

    def ppo_config(self) -> PPOConfig:
        return PPOConfig(clip=self.clip, vf_coef=self.vf_coef, ent_coef=self.ent_coef)


# ---------------------------------------------------------------------------------------------
# oracle task encoding
# ---------------------------------------------------------------------------------------------
def _param_width(p: contract.ParamSpec) -> int:
    return int(p.high - p.low) + 1 if p.integer else 1


ENCODING_SIZE = (
    len(contract.FAMILIES)
    + sum(_param_width(p) for f in contract.FAMILIES for p in f.params)
    + len(contract.BODY_PARAMS)
)
"""Length of `task_encoding`: family one-hot, one block per family's parameters (integer
choices one-hot, continuous values scaled to -1..1), then the body scaled to -1..1."""


def task_encoding(task: Task) -> np.ndarray:
    """[ENCODING_SIZE] float32: what the oracle sees in addition to the observation."""
    out = np.zeros(ENCODING_SIZE, dtype=np.float32)
    out[task.family_index] = 1.0
    at = len(contract.FAMILIES)
    for fam in contract.FAMILIES:
        for i, p in enumerate(fam.params):
            width = _param_width(p)
            if fam.name == task.family:
                value = task.params[i]
                if p.integer:
                    out[at + int(round(value - p.low))] = 1.0
                else:
                    out[at] = _scaled(value, p)
            at += width
    for p, value in zip(contract.BODY_PARAMS, task.body, strict=True):
        out[at] = _scaled(value, p)
        at += 1
    return out


def _scaled(value: float, p: contract.ParamSpec) -> float:
    return 2.0 * (value - p.low) / max(p.high - p.low, 1e-9) - 1.0


ObsTransform = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(task_index [B], obs [B, OBS]) -> the observation the network sees."""


def encoded_obs(tasks: Sequence[Task]) -> ObsTransform:
    """An ObsTransform appending each row's task encoding (the oracle's input)."""
    table = np.stack([task_encoding(t) for t in tasks]) if tasks else np.zeros((0, ENCODING_SIZE))

    def transform(task_index: np.ndarray, obs: np.ndarray) -> np.ndarray:
        return np.concatenate([obs, table[task_index]], axis=1).astype(np.float32)

    return transform


def plain_obs(task_index: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """The task-agnostic ObsTransform: the observation as it is."""
    return obs


# ---------------------------------------------------------------------------------------------
# agent
# ---------------------------------------------------------------------------------------------
class PPOAgent:
    """One policy's parameters, normalisation buffers and Adam state."""

    def __init__(
        self,
        spec: PolicySpec,
        settings: PPOSettings,
        seed: int = 0,
        params: Params | None = None,
        buffers: Buffers | None = None,
    ) -> None:
        self.policy = Policy(spec)
        fresh_params, fresh_buffers = self.policy.init(seed)
        source = fresh_params if params is None else params
        self.params: Params = {
            k: v.detach().clone().requires_grad_(True) for k, v in source.items()
        }
        self.buffers: Buffers = dict(fresh_buffers if buffers is None else buffers)
        self.settings = settings
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=settings.lr, eps=1e-5)
        self.generator = torch.Generator().manual_seed(seed)

    def copy(self, settings: PPOSettings | None = None, seed: int = 0) -> PPOAgent:
        """A fresh agent (new optimiser) starting from these weights and buffers."""
        return PPOAgent(
            self.policy.spec, settings or self.settings, seed, self.params, self.buffers
        )

    def reset_exploration(self) -> None:
        """Put the log-std back to its initial value (before fine-tuning)."""
        with torch.no_grad():
            self.params["actor.log_std"].copy_(init_params(self.policy.spec)["actor.log_std"])

    @torch.no_grad()
    def act(self, obs: np.ndarray, mask: np.ndarray, deterministic: bool = False) -> ActionBatch:
        out = self.policy.act(
            self.params,
            self.buffers,
            torch.from_numpy(obs),
            torch.from_numpy(mask),
            deterministic=deterministic,
            generator=self.generator,
        )
        return ActionBatch(
            out.cont_action.numpy(),
            out.gesture.reshape(-1).numpy(),
            out.log_prob.numpy(),
            out.value.numpy(),
        )

    def update(self, batch: RLBatch) -> dict[str, float]:
        """PPO epochs over `batch`; returns the last minibatch's loss terms."""
        cfg = self.settings.ppo_config()
        last: list[Any] = []

        def loss(idx: Tensor) -> Tensor:
            sub = RLBatch(*(x[idx] for x in batch))
            terms = ppo_terms(self.params, sub, policy=self.policy, buffers=self.buffers, cfg=cfg)
            last[:] = [terms]
            return terms.loss

        self._minibatch_epochs(batch, loss)
        return {k: float(v.detach()) for k, v in last[0]._asdict().items()} if last else {}

    def imitate(
        self,
        batch: RLBatch,
        expert_cont: Tensor,
        expert_gesture: Tensor,
        with_ppo: bool = False,
        imitation_weight: float = 1.0,
    ) -> None:
        """Like `update`, with `rl.losses.guided_loss`: the expert's actions at the rows of
        `batch` (plus the value loss), and PPO-clip too when `with_ppo`."""
        ppo = self.settings.ppo_config() if with_ppo else None

        def loss(idx: Tensor) -> Tensor:
            sub = GuidedBatch(
                RLBatch(*(x[idx] for x in batch)),
                expert_cont[idx],
                expert_gesture[idx],
                expert_cont.new_zeros(len(idx), 0),  # no task inference to supervise
            )
            return guided_loss(
                self.params,
                sub,
                policy=self.policy,
                buffers=self.buffers,
                ppo=ppo,
                imitation_weight=imitation_weight,
                vf_coef=self.settings.vf_coef,
            )

        self._minibatch_epochs(batch, loss)

    def _minibatch_epochs(self, batch: RLBatch, loss: Callable[[Tensor], Tensor]) -> None:
        """`epochs` passes of Adam steps over shuffled minibatches of `batch`'s rows (`loss`
        maps row indices to a scalar), then the observation statistics if configured."""
        s = self.settings
        n = int(batch.obs.shape[0])
        size = max(1, n // max(1, s.minibatches))
        for _ in range(s.epochs):
            perm = torch.randperm(n, generator=self.generator)
            for start in range(0, n - size + 1, size):
                self.optimizer.zero_grad()
                loss(perm[start : start + size]).backward()
                torch.nn.utils.clip_grad_norm_(list(self.params.values()), s.max_grad_norm)
                self.optimizer.step()
        if s.update_obs_stats:
            self.buffers = update_obs_stats(self.buffers, batch.obs)

    def set_lr(self, lr: float) -> None:
        self.settings = replace(self.settings, lr=lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr


def rollouts_to_batch(
    rollouts: Sequence[TaskRollout],
    transform: ObsTransform,
    gamma: float,
    lam: float,
    per_task_advantages: bool = True,
) -> RLBatch:
    """GAE over each task's episodes, valid steps flattened into one RLBatch (advantages
    normalised per task when `per_task_advantages`)."""
    parts: list[RLBatch] = []
    for r in rollouts:
        t = {k: torch.from_numpy(getattr(r, k)) for k in ("reward", "value", "done", "interrupted")}
        adv, ret = gae(
            t["reward"],
            t["value"],
            t["done"],
            torch.zeros(r.num_episodes),
            t["interrupted"],
            torch.from_numpy(r.terminal_value),
            gamma=gamma,
            lam=lam,
        )
        valid = torch.from_numpy(r.valid)
        task_adv = adv[valid]
        if per_task_advantages and task_adv.numel() > 1:
            task_adv = (task_adv - task_adv.mean()) / (task_adv.std() + 1e-8)
        obs = transform(np.full(int(r.valid.sum()), r.task_index), r.obs[r.valid])
        parts.append(
            make_batch(
                torch.from_numpy(obs),
                torch.from_numpy(r.mask[r.valid]),
                torch.from_numpy(r.cont_action[r.valid]),
                torch.from_numpy(r.gesture[r.valid]),
                task_adv,
                ret[valid],
                torch.from_numpy(r.log_prob[r.valid]),
                t["value"][valid],
            )
        )
    return RLBatch(*(torch.cat(xs) for xs in zip(*parts, strict=True)))


# ---------------------------------------------------------------------------------------------
# acting through collect()
# ---------------------------------------------------------------------------------------------
def expert_rows(rollouts: Sequence[TaskRollout]) -> tuple[Tensor, Tensor]:
    """The scripted expert's actions at the valid rows of `rollouts`, in `rollouts_to_batch`
    row order: continuous [M, 2] and gesture [M, 1]."""
    rows = [common.expert_rows(r) for r in rollouts]
    return torch.cat([c for c, _ in rows]), torch.cat([g for _, g in rows])


def shared_policy_fn(
    agent: PPOAgent, transform: ObsTransform = plain_obs, deterministic: bool = False
) -> Callable[[np.ndarray, np.ndarray, np.ndarray], ActionBatch]:
    """A PolicyFn running one agent on every row."""

    def fn(task_index: np.ndarray, obs: np.ndarray, mask: np.ndarray) -> ActionBatch:
        return agent.act(transform(task_index, obs), mask, deterministic)

    return fn


def per_task_policy_fn(
    agents: Sequence[PPOAgent], transform: ObsTransform = plain_obs, deterministic: bool = False
) -> Callable[[np.ndarray, np.ndarray, np.ndarray], ActionBatch]:
    """A PolicyFn running `agents[task_index]` on each row (grouped, one call per task)."""

    def fn(task_index: np.ndarray, obs: np.ndarray, mask: np.ndarray) -> ActionBatch:
        x = transform(task_index, obs)
        b = len(task_index)
        out = ActionBatch(
            np.zeros((b, contract.NUM_CONTINUOUS_ACTIONS), np.float32),
            np.zeros(b, np.int64),
            np.zeros(b, np.float32),
            np.zeros(b, np.float32),
        )
        for k in np.unique(task_index).tolist():
            rows = task_index == k
            part = agents[k].act(x[rows], mask[rows], deterministic)
            out.cont[rows], out.gesture[rows] = part.cont, part.gesture
            out.log_prob[rows], out.value[rows] = part.log_prob, part.value
        return out

    return fn


def mean_returns(rollouts: Sequence[TaskRollout]) -> list[float]:
    return [float(r.episode_return.mean()) for r in rollouts]


def evaluate_shared(
    env: TaskEnv,
    agent: PPOAgent,
    tasks: Sequence[Task],
    episodes: int,
    transform: ObsTransform = plain_obs,
    deterministic: bool = True,
) -> tuple[list[float], int]:
    """Mean return per task of one agent, and the env steps it took."""
    rollouts = collect(env, shared_policy_fn(agent, transform, deterministic), tasks, episodes)
    return mean_returns(rollouts), sum(r.env_steps for r in rollouts)
