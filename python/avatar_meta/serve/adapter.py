"""The adaptation itself, free of gRPC: validate episodes, build an RLBatch, take the run's
inner step, pack the adapted policy.

Why a separate module: the service, the benchmark's in-process baseline and the tests must
run *the same* code path, so "service == in-process" compares transport, not two
re-implementations. Adaptation reuses the run's own test-time step
(`training.evaluate.make_adapt_fn`: MAML/FOMAML take one vanilla-PG step of size
`meta.inner_lr` on the actor, Meta-SGD uses its learned step sizes, Reptile its inner loop),
so an adapted policy from the service is exactly what held-out evaluation would produce.

Data conventions (proto `Episode`): one message = one episode; its last step always ends the
episode (`interrupted` = ended by a time limit, then the return is bootstrapped with the
critic's value of the last observation, the best we have without the terminal observation).
Log-probs and values are recomputed under the meta-policy, which is the policy that a game
collects few-shot experience with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avatar_meta import contract
from avatar_meta.config import RunConfig, config_from_dict
from avatar_meta.export import policy_weights
from avatar_meta.proto_gen.v1 import adaptation_service_pb2 as svc
from avatar_meta.proto_gen.v1 import policy_weights_pb2 as pw
from avatar_meta.rl import Buffers, Params, Policy, PolicySpec, RLBatch, gae, make_batch
from avatar_meta.rl.losses import stack_batches
from avatar_meta.serve.wire import AdaptRequestView, EpisodeView

Request = svc.AdaptRequest | AdaptRequestView
"""The generated message or the fast codec's view (same attribute names)."""


class InvalidRequest(ValueError):
    """A request the service refuses (INVALID_ARGUMENT); `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Limits:
    """What one Adapt request may hold (bounded work per request)."""

    max_episodes: int = 64
    max_steps: int = 20_000
    """Total steps over all episodes of one request."""


def resolve_checkpoint(
    run_id: str | None, results_dir: str | Path = "results", checkpoint: str | Path | None = None
) -> Path:
    """`--checkpoint PATH` wins; else the first of results/<run-id>/checkpoints/{maml,fomaml,
    metasgd,reptile}.pt that exists. FileNotFoundError naming what was looked for."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"--checkpoint {path} does not exist")
        return path
    if not run_id:
        raise FileNotFoundError("pass --run-id ID (or --checkpoint PATH)")
    folder = Path(results_dir) / run_id / "checkpoints"
    for name in ("maml", "fomaml", "metasgd", "reptile"):
        if (folder / f"{name}.pt").is_file():
            return folder / f"{name}.pt"
    raise FileNotFoundError(f"no checkpoint in {folder} (train the run first)")


def make_checkpoint(
    path: str | Path, hidden: tuple[int, ...] = (64, 64), seed: int = 0, algorithm: str = "maml"
) -> Path:
    """Write an untrained meta-policy checkpoint in the meta-loop's format (params, buffers,
    config). For benchmarks and tests that need a run without spending minutes training."""
    config = config_from_dict({"policy": {"hidden": list(hidden)}, "env": {"seed": seed}})
    params, buffers = Policy(config.policy_spec()).init(seed=seed)
    payload = {
        "algorithm": algorithm,
        "params": params,
        "buffers": buffers,
        "metasgd_lrs": None,
        "config": config.to_dict(),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


class Adapter:
    """The meta-policy of one run and its test-time adaptation step. Thread-safe: everything
    is functional (params are never mutated), so worker threads share one Adapter."""

    def __init__(
        self,
        checkpoint: str | Path,
        behavior: str = contract.BEHAVIOR_NAME,
        limits: Limits = Limits(),
    ) -> None:
        from avatar_meta.training.evaluate import make_adapt_fn

        ck: dict[str, Any] = torch.load(Path(checkpoint), map_location="cpu", weights_only=False)
        self.config: RunConfig = config_from_dict(ck["config"])
        self.algorithm: str = ck["algorithm"]
        self.spec: PolicySpec = self.config.policy_spec()
        self.policy = Policy(self.spec)
        self.params: Params = {k: v.detach() for k, v in ck["params"].items()}
        self.buffers: Buffers = ck["buffers"]
        self.behavior = behavior
        self.limits = limits
        self.gamma = self.config.meta.gamma
        self.lam = self.config.meta.gae_lambda
        self._adapt_fn = make_adapt_fn(
            self.algorithm, self.config, self.policy, self.buffers, ck.get("metasgd_lrs")
        )

    # ----------------------------------------------------------------------------- validation
    def validate(self, request: Request) -> None:
        """InvalidRequest naming the first bad field; cheap checks first."""
        if request.behavior_name != self.behavior:
            raise InvalidRequest(
                "behavior_name",
                f"unknown behaviour {request.behavior_name!r}; this service adapts {self.behavior!r}",
            )
        n = len(request.episodes)
        if n == 0:
            raise InvalidRequest("episodes", "empty; send at least one episode")
        if n > self.limits.max_episodes:
            raise InvalidRequest("episodes", f"{n} episodes; at most {self.limits.max_episodes}")
        total = sum(max(e.steps, 0) for e in request.episodes)
        if total > self.limits.max_steps:
            raise InvalidRequest(
                "episodes.steps", f"{total} steps in total; at most {self.limits.max_steps}"
            )
        for i, ep in enumerate(request.episodes):
            self._validate_episode(f"episodes[{i}]", ep)

    def _validate_episode(self, where: str, ep: svc.Episode | EpisodeView) -> None:
        spec, t = self.spec, ep.steps
        if t <= 0:
            raise InvalidRequest(f"{where}.steps", f"{t}; must be > 0")
        _want(ep.obs_size, spec.obs_size, f"{where}.obs_size", "observation width")
        _want(
            ep.num_continuous, spec.num_continuous, f"{where}.num_continuous", "continuous actions"
        )
        _want(ep.num_branches, len(spec.discrete_branches), f"{where}.num_branches", "branches")
        if ep.mask_size not in (0, spec.num_discrete):
            raise InvalidRequest(
                f"{where}.mask_size", f"{ep.mask_size}; must be 0 (no masks) or {spec.num_discrete}"
            )
        sizes = {
            "obs": t * spec.obs_size,
            "continuous_actions": t * spec.num_continuous,
            "discrete_actions": t * len(spec.discrete_branches),
            "action_masks": t * ep.mask_size,
            "rewards": t,
        }
        for name, size in sizes.items():
            values = np.asarray(getattr(ep, name), dtype=np.float32)
            if values.size != size:
                raise InvalidRequest(f"{where}.{name}", f"{values.size} values; expected {size}")
            if not np.isfinite(values).all():
                raise InvalidRequest(f"{where}.{name}", "contains NaN or infinity")
        if len(ep.dones) not in (0, t):
            raise InvalidRequest(f"{where}.dones", f"{len(ep.dones)} values; expected 0 or {t}")
        if np.any(np.asarray(ep.dones, np.float32)[:-1] != 0):
            raise InvalidRequest(f"{where}.dones", "an episode may only end at its last step")
        gestures = np.asarray(ep.discrete_actions, dtype=np.float32).reshape(t, -1)
        for b, n in enumerate(spec.discrete_branches):
            col = gestures[:, b]
            if ((col < 0) | (col >= n) | (col != np.round(col))).any():
                raise InvalidRequest(
                    f"{where}.discrete_actions", f"branch {b} needs integers in [0, {n})"
                )

    # ----------------------------------------------------------------------------- batching
    @torch.no_grad()
    def to_batch(self, request: Request, check: bool = True) -> RLBatch:
        """Validated episodes -> one RLBatch (GAE with the run's gamma/lambda, episodes padded
        to [E, T_max] so GAE runs once over all of them). `check=False` when the caller has
        already called `validate`."""
        if check:
            self.validate(request)
        spec, eps = self.spec, request.episodes
        e, t_max = len(eps), max(ep.steps for ep in eps)
        nb = len(spec.discrete_branches)
        obs = np.zeros((e, t_max, spec.obs_size), np.float32)
        cont = np.zeros((e, t_max, spec.num_continuous), np.float32)
        gest = np.zeros((e, t_max, nb), np.int64)
        mask = np.zeros((e, t_max, spec.num_discrete), bool)
        rew = np.zeros((e, t_max), np.float32)
        done = np.ones((e, t_max), bool)  # padding counts as "ended": GAE never crosses it
        inter = np.zeros((e, t_max), bool)
        valid = np.zeros((e, t_max), bool)
        for i, ep in enumerate(eps):
            t = ep.steps
            obs[i, :t] = np.asarray(ep.obs, np.float32).reshape(t, spec.obs_size)
            cont[i, :t] = np.asarray(ep.continuous_actions, np.float32).reshape(t, -1)
            gest[i, :t] = np.asarray(ep.discrete_actions, np.float32).reshape(t, nb)
            if ep.mask_size:
                mask[i, :t] = np.asarray(ep.action_masks, np.float32).reshape(t, -1) != 0
            rew[i, :t] = np.asarray(ep.rewards, np.float32)
            done[i, : t - 1] = False
            inter[i, t - 1] = ep.interrupted
            valid[i, :t] = True
        flat_obs = torch.from_numpy(obs.reshape(e * t_max, -1))
        flat_mask = torch.from_numpy(mask.reshape(e * t_max, -1))
        flat_cont = torch.from_numpy(cont.reshape(e * t_max, -1))
        flat_gest = torch.from_numpy(gest.reshape(e * t_max, -1))
        out = self.policy.forward(self.params, self.buffers, flat_obs, flat_mask)
        log_prob = self.policy.dist_log_prob(out, flat_cont, flat_gest)
        values = out.value.reshape(e, t_max)
        adv, ret = gae(
            torch.from_numpy(rew),
            values,
            torch.from_numpy(done),
            torch.zeros(e),
            interrupted=torch.from_numpy(inter),
            terminal_values=values,  # V(last observation) at the interrupted step
            gamma=self.gamma,
            lam=self.lam,
        )
        v = torch.from_numpy(valid.reshape(-1))
        return make_batch(
            flat_obs[v],
            flat_mask[v],
            flat_cont[v],
            flat_gest[v],
            adv.reshape(-1)[v],
            ret.reshape(-1)[v],
            log_prob[v],
            out.value[v],
        )

    # ----------------------------------------------------------------------------- adapting
    def adapt_batch(self, batch: RLBatch) -> Params:
        """One test-time adaptation step of the run's meta-learner on one task's batch."""
        stacked = {k: v.unsqueeze(0) for k, v in self.params.items()}
        adapted = self._adapt_fn(stacked, stack_batches([batch]), 0)
        return {k: v[0].detach().contiguous() for k, v in adapted.items()}

    def adapt(self, request: Request) -> Params:
        """Validate, batch and adapt: the whole in-process path."""
        return self.adapt_batch(self.to_batch(request))

    def pack(self, params: Params, *, version: int, task_id: str) -> pw.PolicyWeights:
        """PolicyWeights of adapted params (actor only: games act, they do not train)."""
        return policy_weights.pack(
            self.spec,
            params,
            self.buffers,
            version=version,
            task_id=task_id,
            behavior_name=self.behavior,
            has_critic=False,
        )


def _want(got: int, want: int, field: str, what: str) -> None:
    if got != want:
        raise InvalidRequest(field, f"{got}; this policy's {what} is {want}")
