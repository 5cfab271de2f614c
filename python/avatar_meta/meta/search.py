"""Strategy search: a policy told the task, and adaptation as a search over task hypotheses.

Yu, Liu & Turk 2019, "Policy Transfer with Strategy Optimization" (SO-CMA): train one
policy conditioned on the task's parameters, then adapt to a new task by searching the
*input* of that policy with returns, instead of changing its weights. Here:

Meta-training (the policy). The task context c is the task's code (`tasks.task_code`: each
integer hidden parameter one-hot, each continuous one scaled to [-1, 1], then the body). The
meta-policy of each family acts on its training tasks with their true c, and learns by
DAgger (Ross, Gordon & Bagnell 2011): the scripted expert (`world.observed_expert`) labels
every state the policy visited and the policy imitates those labels for a few epochs. This
is the loop's outer update with no inner step (`ContextImitation.update`). The
true parameters are used in meta-training only (the world was told them).

Adaptation (rewards only). The hypotheses are the codes of the family's training tasks,
thinned to P probes by a k-centre cover (`cover`, Gonzalez 1985) so that every discrete
choice and the ends of every range are represented. Then, per held-out task (`ProbeSearch`):
  - support episodes (step 0), by successive halving (Karnin, Koren & Somekh 2013): each of
    the P probes (`meta.search_probes`) acts for one episode, so each tests one hypothesis and
    its return confirms or refutes it (what PEARL's posterior sampling does for its support
    episodes; Rakelly et al. 2019); then the F best (`meta.search_finalists`) share the
    step's remaining episodes. One episode per probe alone lets a lucky episode of a probe
    that fails on average (greet_visitor standing too close, say) win now and then, and one
    such pick costs more than the extra hypotheses gain;
  - every step after: act with the best probe so far and add the episodes to its record. The
    best is the highest *shrunk* mean return (sum + m0) / (count + 1), where m0 is the mean
    return of all probes: two lucky episodes of a probe must not outrank a probe measured
    twenty times (empirical Bayes with one pseudo-episode);
  - with `meta.search_refine` R > 0, the steps between the first and the last share their
    episodes between the best probe and R new hypotheses around it (`refinements`: training
    codes with the same discrete choices, between it and its neighbouring probes), so the
    last step can pick a finer value of the continuous parameters than the P probes offer.
The adapted policy is the meta-policy with c set to the chosen probe; exports fold c into
the first layer's bias (`rl.policy.fold_context`), so the engine gets the plain MLP.

Why: a gradient step (MAML) or an encoder fed with episodes that all act on the family's
average guess learns little about discrete parameters (which landmark, which gesture): those
episodes never go anywhere near the right answer. Measured in docs/training.md ("Strategy
search").

Gotchas
- The policy can only be as good as imitation makes it in the budget; the search then picks
  among its behaviours. A held-out task between training tasks gets the nearest probe's
  behaviour: continuous parameters are quantised to the P probes (`meta.search_refine`
  then looks between them).
- Step 0 runs P different policies on one task. The adaptation service does not serve this
  yet (the engine would need the P probe policies; `serve.adapter` refuses search
  checkpoints with that message); `avatar-meta evaluate` and the training run's held-out
  evaluation do it trainer-side (`training.evaluate.evaluate_search`).
- The policy's log-std is not trained by imitation: give it a low `policy.log_std_init`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.utils._pytree as pytree
from torch import Tensor

from avatar_meta import contract
from avatar_meta.meta.core import LossFn, Params, map_tasks
from avatar_meta.rl.losses import GuidedBatch, stack_guided
from avatar_meta.tasks import Task, task_code

CONTEXT = "actor.context"


def task_contexts(tasks: Sequence[Task]) -> Tensor:
    """The true context of each task (its code), [K, TASK_CODE_SIZE] float32."""
    return torch.from_numpy(np.stack([task_code(t) for t in tasks]))


BODY_WEIGHT = 0.25
"""Weight of the body's three numbers in the cover's distance: the probes should span the
family's own parameters (every landmark, every route) before the body's range."""


def _weighted(codes: Tensor) -> Tensor:
    weights = torch.ones(codes.shape[-1])
    weights[-len(contract.BODY_PARAMS) :] = BODY_WEIGHT
    return codes * weights


def with_body(codes: Tensor, body: Tensor) -> Tensor:
    """Task codes [..., C] with their last three numbers (the body's) set to `body`
    (broadcast). A new tensor."""
    out = codes.clone()
    out[..., -len(contract.BODY_PARAMS) :] = body
    return out


def cover(codes: Tensor, n: int, first: int | None = None) -> Tensor:
    """A k-centre cover of task codes [N, TASK_CODE_SIZE]: n of them, each the farthest from
    those chosen before it, starting from `first` (default: the one nearest the mean;
    greedy, deterministic; body dimensions weighted by `BODY_WEIGHT`). [min(n, N), C]"""
    points = _weighted(codes)
    if first is None:
        first = int((points - points.mean(0)).norm(dim=1).argmin())
    chosen = [first]
    distance = (points - points[first]).norm(dim=1)
    while len(chosen) < min(n, len(codes)):
        far = int(distance.argmax())
        chosen.append(far)
        distance = torch.minimum(distance, (points - points[far]).norm(dim=1))
    return codes[chosen]


def choice_dims(family: str) -> list[int]:
    """Positions of the family's discrete choices (the one-hot parts) in a task code."""
    dims: list[int] = []
    i = 0
    for p in contract.FAMILY_BY_NAME[family].params:
        size = int(p.high - p.low) + 1 if p.integer else 1
        if p.integer:
            dims.extend(range(i, i + size))
        i += size
    return dims


def refinements(codes: Tensor, centre: Tensor, n: int, cell: int, fixed: list[int]) -> Tensor:
    """n new hypotheses around `centre` [C], among the training codes [N, C] that make the
    same discrete choices (equal on the dims `fixed`): a k-centre cover, started at the
    centre, of the `cell` such codes nearest to it. With `cell` about the centre's share of
    the pool (N / P), the new ones fall between the centre and its neighbouring probes:
    continuous parameters are quantised to the probes, and this zooms in. [n, C], padded
    with the centre when too few such codes exist."""
    codes = codes[(codes[:, fixed] == centre[fixed]).all(dim=1)]  # no fixed dims: all rows
    points, middle = _weighted(codes), _weighted(centre)
    near = (points - middle).norm(dim=1).argsort()[:cell]
    local = cover(torch.cat([centre[None], codes[near]]), n + 1, first=0)[1:]
    if len(local) < n:
        local = torch.cat([local, centre.expand(n - len(local), -1)])
    return local


@dataclass(frozen=True)
class ContextImitation:
    """The outer update of strategy search: imitation of the expert by the policy told each
    task's true context (the batch's `task_code`). No inner step, so there are no
    second-order terms, and every family's tasks share one vmapped pass (each task with its
    family's weights stacked in), not one pass per family."""

    loss: LossFn
    """Per-task guided loss with imitation only (`rl.losses.make_guided_loss` with ppo None)."""
    use_vmap: bool = True

    def task_losses(self, stacked: Params, batch: GuidedBatch) -> Tensor:
        """[K] the loss of each task's params (stacked [K, ...]) told its own code."""

        def one(p: Params, b: GuidedBatch) -> Tensor:
            # every row carries its task's code; row 0 is always a real transition
            return self.loss({**p, CONTEXT: b.task_code[0]}, b)

        losses: Tensor = map_tasks(one, (0, 0), self.use_vmap)(stacked, batch)
        return losses

    def update(
        self,
        params_by_key: dict[str, Params],
        keys: Sequence[str],
        batch: GuidedBatch,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        epochs: int,
        minibatches: int,
        max_grad_norm: float,
    ) -> dict[str, float]:
        """`epochs` passes of `minibatches` Adam steps over the K tasks of `batch` (task i
        uses the leaf tensors `params_by_key[keys[i]]`), each family's gradient clipped on
        its own. Returns the first and last step's loss and the last gradient norm."""
        names = list(params_by_key[keys[0]])
        losses, grad_norm = [], 0.0
        for _ in range(epochs):
            perm = torch.randperm(len(keys), generator=generator)
            for part in perm.chunk(max(1, min(minibatches, len(keys)))):
                rows = part.tolist()
                stacked = {n: torch.stack([params_by_key[keys[i]][n] for i in rows]) for n in names}
                chosen = pytree.tree_map(lambda x, index=part: x[index], batch)
                loss = self.task_losses(stacked, chosen).mean()
                optimizer.zero_grad()
                loss.backward()
                norms = [
                    torch.nn.utils.clip_grad_norm_(list(params_by_key[k].values()), max_grad_norm)
                    for k in sorted({keys[i] for i in rows})
                ]
                grad_norm = float(max(norms))
                optimizer.step()
                losses.append(float(loss.detach()))
        return {"grad_norm": grad_norm, "meta_loss": losses[-1], "meta_loss_first_epoch": losses[0]}


@dataclass
class LabelledReplay:
    """DAgger's dataset aggregation (Ross et al. 2011), bounded: the expert-labelled tasks of
    past meta-iterations, so each update also revisits states the policy no longer visits.
    `mix` returns this iteration's tasks plus as many stored ones (drawn uniformly without
    replacement), then stores this iteration's, dropping the oldest beyond `capacity`.
    Not checkpointed: a resumed run starts with an empty store."""

    capacity: int
    """Past tasks kept (0 = none: train on this iteration's tasks only)."""
    parts: list[tuple[str, GuidedBatch]] = field(default_factory=list)

    def mix(
        self, parts: Sequence[GuidedBatch], keys: Sequence[str], generator: torch.Generator
    ) -> tuple[GuidedBatch, list[str]]:
        """(stacked batch, policy key of each task) of the current tasks and old ones."""
        take = min(len(parts), len(self.parts))
        # no draw when nothing is stored: capacity 0 leaves the generator as it was
        chosen = (
            torch.randperm(len(self.parts), generator=generator)[:take].tolist() if take else []
        )
        old = [self.parts[i] for i in chosen]
        stored = self.parts + list(zip(keys, parts, strict=True))
        self.parts = stored[-self.capacity :] if self.capacity else []
        batch = stack_guided([*parts, *(p for _, p in old)])
        return batch, [*keys, *(k for k, _ in old)]


@dataclass
class ProbeSearch:
    """The search state of K held-out tasks over P probes each (module docstring)."""

    probes: Tensor
    """[K, P, C] the probe contexts of each task (its family's cover)."""
    total: np.ndarray
    """[K, P] sum of the returns each probe earned."""
    count: np.ndarray
    """[K, P] episodes each probe ran."""

    @staticmethod
    def start(probes: Tensor) -> ProbeSearch:
        k, p = probes.shape[:2]
        return ProbeSearch(probes, np.zeros((k, p)), np.zeros((k, p)))

    def record(self, arms: np.ndarray, returns: np.ndarray) -> None:
        """Task k's probe `arms[k, j]` ran the episodes `returns[k, j]`: [K, n] and [K, n, E]."""
        rows = np.arange(len(arms))[:, None]
        np.add.at(self.total, (rows, arms), returns.sum(2))
        np.add.at(self.count, (rows, arms), returns.shape[2])

    def best(self, n: int = 1) -> np.ndarray:
        """[K, n] each task's n best probes (best first) by shrunk mean return; probes that
        never ran rank last."""
        prior = (self.total.sum(1) / np.maximum(self.count.sum(1), 1))[:, None]
        shrunk = (self.total + prior) / (self.count + 1)
        shrunk = np.where(self.count > 0, shrunk, -np.inf)
        return np.argsort(-shrunk, axis=1, kind="stable")[:, :n]

    def extend(self, probes: Tensor) -> np.ndarray:
        """Add hypotheses [K, R, C] to every task's probes (unrun); returns their arms [K, R]."""
        k, p, r = len(self.probes), self.probes.shape[1], probes.shape[1]
        self.probes = torch.cat([self.probes, probes], dim=1)
        self.total = np.concatenate([self.total, np.zeros((k, r))], axis=1)
        self.count = np.concatenate([self.count, np.zeros((k, r))], axis=1)
        return np.tile(np.arange(p, p + r), (k, 1))

    def set_body(self, bodies: Tensor, which: Tensor) -> None:
        """The hypotheses of each task k with `which[k]` take the body code `bodies[k]`
        ([K, 3], identified from its episodes, `meta.body`); the records are kept."""
        self.probes = torch.where(
            which[:, None, None], with_body(self.probes, bodies[:, None]), self.probes
        )

    def contexts(self, arms: np.ndarray) -> Tensor:
        """[K, n, C] the contexts of the probes `arms` [K, n]."""
        rows = torch.arange(len(arms))[:, None]
        return self.probes[rows, torch.from_numpy(arms)]
