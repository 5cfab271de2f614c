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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avatar_meta import contract
from avatar_meta.config import RunConfig, config_from_dict
from avatar_meta.export import policy_weights
from avatar_meta.export.checkpoint import load_payload
from avatar_meta.meta.core import inner_grad, select_keys, sgd_step
from avatar_meta.meta.encoder import encoder_adapt, init_encoder
from avatar_meta.proto_gen.v1 import adaptation_service_pb2 as svc
from avatar_meta.proto_gen.v1 import policy_weights_pb2 as pw
from avatar_meta.rl import Buffers, Params, Policy, PolicySpec, RLBatch, make_batch
from avatar_meta.rl.losses import stack_batches
from avatar_meta.serve.fast import actor_pg_loss, gae_padded
from avatar_meta.serve.wire import AdaptRequestView, EpisodeView
from avatar_meta.training.common import adapt_prefix

VMAP_ROWS = 4096
"""Largest padded rows (requests x steps) adapted in one vmap call (see `adapt_many`)."""

Request = svc.AdaptRequest | AdaptRequestView
"""The generated message or the fast codec's view (same attribute names)."""
StepFn = Callable[[Params, RLBatch], Params]
"""(meta-params, one task's batch) -> adapted params."""


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
    metasgd,reptile,encoder,search}.pt that exists. FileNotFoundError naming what was looked for."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"--checkpoint {path} does not exist")
        return path
    if not run_id:
        raise FileNotFoundError("pass --run-id ID (or --checkpoint PATH)")
    folder = Path(results_dir) / run_id / "checkpoints"
    for name in ("maml", "fomaml", "metasgd", "reptile", "encoder", "search"):
        if (folder / f"{name}.pt").is_file():
            return folder / f"{name}.pt"
    raise FileNotFoundError(f"no checkpoint in {folder} (train the run first)")


def select_family(ck: dict[str, Any], family: str | None, where: str | Path) -> str | None:
    """Which meta-policy of a checkpoint to serve. Per-family runs (`meta.per_family`) hold
    one per scenario family and need `--family`; shared ones hold one and take none."""
    keys = [k for k in (ck.get("policy_keys") or []) if k != "all"]
    if not keys:
        if family is not None:
            raise ValueError(f"{where} holds one shared meta-policy; drop --family {family}")
        return None
    if family is None:
        raise ValueError(
            f"{where} holds one meta-policy per scenario family ({', '.join(keys)}); "
            "pass --family NAME to choose the one this service adapts"
        )
    if family not in keys:
        raise ValueError(f"--family {family}: not in {where}; choose one of {', '.join(keys)}")
    return family


def make_checkpoint(
    path: str | Path, hidden: tuple[int, ...] = (64, 64), seed: int = 0, algorithm: str = "maml"
) -> Path:
    """Write an untrained meta-policy checkpoint in the meta-loop's format (params, buffers,
    config). For benchmarks and tests that need a run without spending minutes training.
    `algorithm` "encoder" adds the task encoder and the 8-number task context it writes."""
    data: dict[str, Any] = {"policy": {"hidden": list(hidden)}, "env": {"seed": seed}}
    if algorithm == "encoder":
        data["policy"]["context_size"] = 8
        data["meta"] = {"algorithms": ["encoder"]}
    config = config_from_dict(data)
    params, buffers = Policy(config.policy_spec()).init(seed=seed)
    if algorithm == "encoder":
        params |= init_encoder(config.policy_spec(), config.meta.encoder_hidden, seed)
    payload = {
        "algorithm": algorithm,
        "contract": contract.CONTRACT_VERSION,
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
        family: str | None = None,
    ) -> None:
        from avatar_meta.training.evaluate import make_adapt_fn

        ck: dict[str, Any] = load_payload(checkpoint)
        self.config: RunConfig = config_from_dict(ck["config"])
        self.algorithm: str = ck["algorithm"]
        if self.algorithm == "search":
            raise ValueError(
                f"{checkpoint} is a strategy-search run: it adapts by running one probe policy "
                "per support episode, which this service does not stream yet; evaluate it with "
                "`avatar-meta evaluate`, or serve a maml, fomaml, metasgd, reptile or encoder run"
            )
        self.spec: PolicySpec = self.config.policy_spec()
        self.policy = Policy(self.spec)
        self.family = select_family(ck, family, checkpoint)
        params = ck["params"] if self.family is None else ck["params_by_key"][self.family]
        metasgd_lrs = ck.get("metasgd_lrs")
        if self.family is not None and ck.get("metasgd_lrs_by_key"):
            metasgd_lrs = ck["metasgd_lrs_by_key"][self.family]
        self.params: Params = {k: v.detach() for k, v in params.items()}
        self.buffers: Buffers = ck["buffers"]
        self.behavior = behavior
        self.limits = limits
        self.gamma = self.config.meta.gamma
        self.lam = self.config.meta.gae_lambda
        self._adapt_fn = make_adapt_fn(
            self.algorithm, self.config, self.policy, self.buffers, metasgd_lrs
        )
        self._step = self._batchable_step(metasgd_lrs)
        self._step_many = (
            None if self._step is None else torch.func.vmap(self._step, in_dims=(None, 0))
        )
        self.vmap_rows = VMAP_ROWS

    def _batchable_step(self, metasgd_lrs: Sequence[Params] | None) -> StepFn | None:
        """The test-time step `adapt_many` vmaps over requests, built once so a request
        rebuilds nothing; None for Reptile, whose minibatches would change with zero-weight
        padding.
        - MAML/FOMAML/Meta-SGD: the step of `make_adapt_fn` at step 0 with the critic-free
          loss (`fast.actor_pg_loss`);
        - the task encoder: its forward pass (`meta.encoder.encoder_adapt`), which ignores
          zero-weight rows."""
        if self.algorithm == "encoder":
            return partial(encoder_adapt, policy=self.policy, buffers=self.buffers)
        lr = _first_step_size(self.algorithm, self.config, metasgd_lrs)
        if lr is None:
            return None
        keys = select_keys(self.params, adapt_prefix(self.config))
        loss = partial(actor_pg_loss, policy=self.policy, buffers=self.buffers)

        def pg_step(p: Params, b: RLBatch) -> Params:
            assert lr is not None
            return sgd_step(p, inner_grad(loss, p, b, keys, first_order=True), lr)

        return pg_step

    # ----------------------------------------------------------------------------- validation
    def validate(self, request: Request) -> None:
        """InvalidRequest naming the first bad field; cheap checks first."""
        if request.behavior_name != self.behavior:
            raise InvalidRequest(
                "behavior_name",
                f"unknown behaviour {request.behavior_name!r}; this service adapts {self.behavior!r}",
            )
        hint = request.task_hint
        if self.family is not None and hint in contract.FAMILY_BY_NAME and hint != self.family:
            raise InvalidRequest(
                "task_hint",
                f"{hint!r} is another scenario family; this service adapts the "
                f"{self.family!r} meta-policy (run one `avatar-meta serve --family {hint}`)",
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
    def to_batch(self, request: Request, check: bool = True) -> RLBatch:
        """Validated episodes -> one RLBatch (see `to_batches`). `check=False` when the
        caller has already called `validate`."""
        return self.to_batches([request], check)[0]

    @torch.no_grad()
    def to_batches(self, requests: Sequence[Request], check: bool = True) -> list[RLBatch]:
        """One RLBatch per request: GAE with the run's gamma/lambda over the critic's values
        under the meta-policy. The critic runs on the valid steps only, in chunks of whole
        requests (`vmap_rows`); GAE runs once over all episodes of all requests, padded to
        [E, T_max]; only valid steps end up in the batches.

        `old_log_prob` is only computed when the run's inner step reads it (Reptile's PPO
        epochs); the vanilla-PG step of MAML/FOMAML/Meta-SGD never does, so it is 0 there.
        """
        if check:
            for request in requests:
                self.validate(request)
        spec = self.spec
        eps = [ep for request in requests for ep in request.episodes]
        e, t_max = len(eps), max(ep.steps for ep in eps)
        nb = len(spec.discrete_branches)
        obs = np.zeros((e, t_max, spec.obs_size), np.float32)
        cont = np.zeros((e, t_max, spec.num_continuous), np.float32)
        gest = np.zeros((e, t_max, nb), np.int64)
        mask = np.zeros((e, t_max, spec.num_discrete), bool)
        rew = np.zeros((e, t_max), np.float32)
        lengths = np.zeros(e, np.int64)
        inter = np.zeros(e, bool)
        for i, ep in enumerate(eps):
            t = ep.steps
            obs[i, :t] = np.asarray(ep.obs, np.float32).reshape(t, spec.obs_size)
            cont[i, :t] = np.asarray(ep.continuous_actions, np.float32).reshape(t, -1)
            gest[i, :t] = np.asarray(ep.discrete_actions, np.float32).reshape(t, nb)
            if ep.mask_size:
                mask[i, :t] = np.asarray(ep.action_masks, np.float32).reshape(t, -1) != 0
            rew[i, :t] = np.asarray(ep.rewards, np.float32)
            lengths[i] = t
            inter[i] = ep.interrupted
        valid = np.arange(t_max)[None, :] < lengths[:, None]
        obs_v = torch.from_numpy(obs[valid])  # [M, obs]: valid steps, episode by episode
        rew_v = torch.from_numpy(rew[valid])
        # An Episode message has no observation after its last action: the task encoder sees
        # "no change" there (training uses the world's terminal observation).
        nxt = np.concatenate([obs[:, 1:], obs[:, -1:]], axis=1)
        nxt[np.arange(e), lengths - 1] = obs[np.arange(e), lengths - 1]
        next_v = torch.from_numpy(nxt[valid])
        mask_v, cont_v = torch.from_numpy(mask[valid]), torch.from_numpy(cont[valid])
        gest_v = torch.from_numpy(gest[valid])
        ends = np.cumsum([len(r.episodes) for r in requests])
        starts = np.concatenate([[0], ends[:-1]])
        rows = [int(lengths[lo:hi].sum()) for lo, hi in zip(starts, ends, strict=True)]
        offsets = np.concatenate([[0], np.cumsum(rows)]).tolist()
        # The critic (and Reptile's log-probs) in chunks of whole requests of at most
        # `vmap_rows` rows: one pass over the rows of 8 large requests is slower than 8
        # passes (its activations fall out of cache), one pass over small ones is faster.
        values_parts, log_prob_parts = [], []
        for group in _groups(rows, self.vmap_rows):
            chunk = slice(offsets[group[0]], offsets[group[-1] + 1])
            values_parts.append(self.policy.value(self.params, self.buffers, obs_v[chunk]))
            if self.algorithm == "reptile":
                out = self.policy.forward(self.params, self.buffers, obs_v[chunk], mask_v[chunk])
                log_prob_parts.append(self.policy.dist_log_prob(out, cont_v[chunk], gest_v[chunk]))
        values_v = torch.cat(values_parts)
        # The PG step and the task encoder never read old_log_prob; only Reptile's PPO epochs do.
        log_prob = torch.cat(log_prob_parts) if log_prob_parts else torch.zeros_like(values_v)
        values = np.zeros((e, t_max), np.float32)
        values[valid] = values_v.numpy()
        adv, ret = gae_padded(rew, values, lengths, inter, self.gamma, self.lam)
        adv_v, ret_v = torch.from_numpy(adv[valid]), torch.from_numpy(ret[valid])
        batches = []
        for i in range(len(requests)):
            rows_i = slice(offsets[i], offsets[i + 1])
            batches.append(
                make_batch(
                    obs_v[rows_i],
                    mask_v[rows_i],
                    cont_v[rows_i],
                    gest_v[rows_i],
                    adv_v[rows_i],
                    ret_v[rows_i],
                    log_prob[rows_i],
                    values_v[rows_i],
                    reward=rew_v[rows_i],
                    next_obs=next_v[rows_i],
                )
            )
        return batches

    # ----------------------------------------------------------------------------- adapting
    def adapt_many(self, batches: Sequence[RLBatch]) -> list[Params]:
        """One test-time adaptation step per batch (one task each), all in one call.

        MAML/FOMAML/Meta-SGD (the run's first-order PG step with `fast.actor_pg_loss`, the
        same loss without the critic) and the task encoder (its forward pass):
        `torch.func.vmap` over groups of consecutive batches, zero-weight padded to a common
        length (`stack_batches`); the meta-params are shared, not copied per task. A group
        holds at most `vmap_rows` padded rows: measured on this CPU, vmap over small
        requests saves 30-60% (per-op overhead amortised), but over more than ~8k rows it is
        slower than one request at a time (the activations of a [K, N, 128] batch fall out
        of cache), so a 4000-step request runs alone.
        Reptile: the trainer's own adapt function, one batch at a time.
        """
        if self._step is None or self._step_many is None:
            return [self.reference_adapt(b) for b in batches]
        out: list[Params] = []
        with torch.no_grad():
            for group in _groups([int(b.obs.shape[0]) for b in batches], self.vmap_rows):
                if len(group) == 1:
                    single = self._step(self.params, batches[group[0]])
                    out.append({n: v.detach() for n, v in single.items()})
                    continue
                many = self._step_many(self.params, stack_batches([batches[i] for i in group]))
                out += [{n: v[i].contiguous() for n, v in many.items()} for i in range(len(group))]
        return out

    def adapt_batch(self, batch: RLBatch) -> Params:
        """One test-time adaptation step of the run's meta-learner on one task's batch."""
        return self.adapt_many([batch])[0]

    def reference_adapt(self, batch: RLBatch) -> Params:
        """The trainer's adaptation (`training.evaluate.make_adapt_fn`, full `pg_loss`) on
        one batch: what `adapt_batch` is tested against."""
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


def _groups(rows: Sequence[int], limit: int) -> list[list[int]]:
    """Consecutive indices grouped so that len(group) * max(rows in group) <= limit (a
    group of one may exceed it)."""
    groups: list[list[int]] = []
    widest = 0
    for i, n in enumerate(rows):
        if groups and (len(groups[-1]) + 1) * max(widest, n) <= limit:
            groups[-1].append(i)
            widest = max(widest, n)
        else:
            groups.append([i])
            widest = n
    return groups


def _first_step_size(
    algorithm: str, config: RunConfig, metasgd_lrs: Sequence[Params] | None
) -> float | Params | None:
    """The inner step size `make_adapt_fn` uses at adaptation step 0, for the algorithms
    whose step is one vanilla-PG step on the actor; None for the others (Reptile, encoder)."""
    if algorithm not in ("maml", "fomaml", "metasgd"):
        return None
    m, ev = config.meta, config.eval
    alpha = ev.inner_lr if ev.inner_lr is not None else m.inner_lr
    decay = m.inner_lr_decay**0
    if algorithm == "metasgd" and metasgd_lrs is not None and ev.inner_lr is None:
        return {k: v.detach() * decay for k, v in metasgd_lrs[0].items()}
    return alpha * decay


def _want(got: int, want: int, field: str, what: str) -> None:
    if got != want:
        raise InvalidRequest(field, f"{got}; this policy's {what} is {want}")
