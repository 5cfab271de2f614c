"""Baselines of the held-out evaluation: random, oracle, PPO from scratch, multi-task PPO with
fine-tuning; and the normalised score they define.

`run_all(config, env_factory, heldout_tasks, train_tasks)` returns records in the shared
format of `training/records.py`:

    {"task": task.to_dict(), "task_id", "family", "method",
     "return_by_step": [r0, r1, r2, r3], "env_steps": int, "wall_s": float}

`return_by_step[s]` is the mean episode return on the task after `s` adaptation (fine-tuning)
steps of `finetune.episodes_per_step` episodes each. Methods that do not adapt repeat one
number: `random`, `oracle` (the normalisation reference: the PPO oracle, or
max(PPO oracle, scripted) on families where the oracle failed validation), `oracle_ppo` (the
PPO oracle itself) and `scripted` (the controller that reads the hidden parameters).
`run_baselines` also returns the per-family oracle validation and the pretraining curves
(whose last point carries the pretraining env steps and wall time).

Fairness (design section 6): every PPO run has an entropy bonus and the policy's log-std
floor; multi-task fine-tuning resets the log-std before fine-tuning; both PPO baselines pick
their fine-tuning step size on validation tasks (never on held-out ones); the oracle is
checked per family against the scripted controller and replaced by max(oracle, scripted)
where it falls short.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from avatar_meta.envs.rollouts import RandomPolicy, TaskEnv, collect
from avatar_meta.rl import PolicySpec
from avatar_meta.tasks import Task
from avatar_meta.training.oracle_check import (
    FALLBACK_REFERENCE,
    ORACLE_REFERENCE,
    oracle_references,
    scripted_returns,
    validate_oracle,
)
from avatar_meta.training.ppo_baseline import (
    ENCODING_SIZE,
    ObsTransform,
    PPOAgent,
    PPOSettings,
    encoded_obs,
    evaluate_shared,
    expert_rows,
    mean_returns,
    per_task_policy_fn,
    plain_obs,
    rollouts_to_batch,
    shared_policy_fn,
)
from avatar_meta.training.records import HeldoutRecord, make_record

logger = logging.getLogger("avatar_meta.training.baselines")
__all__ = [
    "FALLBACK_REFERENCE",
    "ORACLE_REFERENCE",
    "BaselineConfig",
    "BaselineResults",
    "FineTuneConfig",
    "PretrainConfig",
    "normalised_score",
    "oracle_references",
    "run_all",
    "run_baselines",
    "scripted_returns",
    "validate_oracle",
]
EnvFactory = Callable[[], TaskEnv]
BASELINE_METHODS = ("random", "oracle", "ppo_scratch", "multitask_finetune")


@dataclass(frozen=True)
class FineTuneConfig:
    """Per-task PPO fine-tuning, the same budget as the meta-learner's adaptation."""

    episodes_per_step: int = 20
    """K: episodes per task per adaptation step (the meta-learner's support size)."""
    steps: int = 3
    """Adaptation steps; return_by_step has steps + 1 entries."""
    lr_candidates: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3)
    """Step sizes tried on the validation tasks; the best is used on the held-out tasks."""
    ppo: PPOSettings = PPOSettings(update_obs_stats=False)
    """PPO settings of one fine-tuning step (lr is replaced by the search)."""


@dataclass(frozen=True)
class PretrainConfig:
    """Multi-task PPO on the training tasks (stratified over families)."""

    env_steps: int = 2_000_000
    """Env-step budget of the whole pretraining (keep it in the meta-training budget class)."""
    tasks_per_iter: int = 24
    """Training tasks per PPO iteration (stratified over families)."""
    episodes_per_task: int = 2
    """Episodes per task per iteration."""
    patience: int = 0
    """Stop after this many iterations without a new best smoothed return (0 = use the whole
    budget). The oracle uses it to train "to convergence" within the budget."""
    ppo: PPOSettings = PPOSettings(lr=3e-4, epochs=8, minibatches=32)
    """PPO settings of pretraining."""
    loss: str = "ppo"
    """"ppo", "imitation" (fit the scripted expert's actions on the visited states: DAgger
    with `world.observed_expert` labels) or "ppo+imitation" (both, see
    `rl.losses.guided_loss`): `multitask_finetune` pretrains with the meta-learners'
    `meta.outer_loss` (imitation when strategy search runs), so both see the same expert
    labels (`training.run.multitask_loss`)."""
    imitation_weight: float = 1.0
    """loss ppo+imitation: weight of the imitation term."""


@dataclass(frozen=True)
class BaselineConfig:
    """Which baselines to run and how big they are."""

    methods: tuple[str, ...] = BASELINE_METHODS
    """Subset of random, oracle, ppo_scratch, multitask_finetune (random and oracle are needed
    for normalised scores)."""
    seed: int = 0
    """Seed of the policies and samplers."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden widths of every baseline policy (the meta-policy's architecture)."""
    eval_episodes: int = 8
    """Episodes per held-out task for random, oracle and scripted returns."""
    n_validation: int = 6
    """Validation tasks for the step-size search when none are given (drawn from training)."""
    finetune: FineTuneConfig = FineTuneConfig()
    """Fine-tuning of ppo_scratch and multitask_finetune."""
    scratch_ppo: PPOSettings = PPOSettings(update_obs_stats=True)
    """PPO settings of ppo_scratch (a fresh policy learns its normalisation as it goes)."""
    multitask: PretrainConfig = PretrainConfig()
    """Multi-task pretraining budget."""
    per_family: bool = False
    """Pretrain one multi-task policy per family (the budget split evenly) and fine-tune each
    held-out task from its family's: the fair match for per-family meta-policies."""
    oracle: PretrainConfig = PretrainConfig(env_steps=4_000_000, patience=30)
    """Oracle training budget ("to convergence": patience stops it early)."""
    oracle_deterministic: bool = True
    """Evaluate the oracle with its mean action (its best behaviour) rather than sampling."""
    oracle_min_ratio: float = 0.98
    """Per family the oracle must reach this fraction of the scripted controller's gain over
    random; below it the normalisation reference is max(oracle, scripted)."""

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(BASELINE_METHODS)
        if unknown:
            raise ValueError(
                f"BaselineConfig.methods: unknown {sorted(unknown)}; use {BASELINE_METHODS}"
            )


@dataclass
class PretrainResult:
    """A pretrained agent and its training curve."""

    agent: PPOAgent
    curve: list[dict[str, float]]
    """[{iteration, env_steps, pre_return, post_return, wall_s}] per PPO iteration."""
    env_steps: int
    wall_s: float


@dataclass
class BaselineResults:
    """Everything `run_baselines` measured."""

    records: list[HeldoutRecord] = field(default_factory=list)
    oracle_validation: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per family: oracle and scripted gain over random, their ratio, passed, reference."""
    training_curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    """Pretraining curves in the report's format: method -> [{iteration, env_steps,
    pre_return, post_return, wall_s}] (pre = post: pretraining does not adapt)."""
    chosen_lr: dict[str, float] = field(default_factory=dict)
    """Fine-tuning step size picked on validation tasks, per method."""


# ---------------------------------------------------------------------------------------------
# normalised score
# ---------------------------------------------------------------------------------------------
def normalised_score(ret: Any, random_ret: Any, oracle_ret: Any) -> Any:
    """(ret - random) / (oracle - random): 0 = random, 1 = oracle. Works on floats and arrays;
    a reference no better than random gives nan."""
    ret, lo, hi = (np.asarray(x, dtype=np.float64) for x in (ret, random_ret, oracle_ret))
    gap = hi - lo
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(gap > 1e-8, (ret - lo) / np.where(gap > 1e-8, gap, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------
def stratified_sample(tasks: Sequence[Task], rng: np.random.Generator, k: int) -> list[Task]:
    """k tasks, k // F from each family and the remainder from distinct random families."""
    by_family: dict[str, list[Task]] = defaultdict(list)
    for t in tasks:
        by_family[t.family].append(t)
    fams = sorted(by_family)
    counts = np.full(len(fams), k // len(fams))
    counts[rng.choice(len(fams), size=k % len(fams), replace=False)] += 1
    out: list[Task] = []
    for fam, n in zip(fams, counts.tolist(), strict=True):
        pool = by_family[fam]
        out.extend(pool[i] for i in rng.choice(len(pool), size=n, replace=n > len(pool)))
    return out


# ---------------------------------------------------------------------------------------------
# pretraining (multi-task and oracle)
# ---------------------------------------------------------------------------------------------
def pretrain(
    env: TaskEnv,
    train_tasks: Sequence[Task],
    cfg: PretrainConfig,
    spec: PolicySpec,
    seed: int,
    oracle: bool,
    label: str = "pretrain",
) -> PretrainResult:
    """PPO (or, per `cfg.loss`, imitation of the scripted expert) on stratified batches
    of training tasks until the env-step budget (or patience) runs out; `oracle` appends the
    task encoding to the observation."""
    agent = PPOAgent(spec, cfg.ppo, seed)
    rng = np.random.default_rng([seed, 17])
    curve: list[dict[str, float]] = []
    steps, it, start = 0, 0, time.perf_counter()
    best, smoothed, since_best = -np.inf, None, 0
    while steps < cfg.env_steps:
        tasks = stratified_sample(train_tasks, rng, cfg.tasks_per_iter)
        transform = encoded_obs(tasks) if oracle else plain_obs
        rollouts = collect(env, shared_policy_fn(agent, transform), tasks, cfg.episodes_per_task)
        steps += sum(r.env_steps for r in rollouts)
        mean_ret = float(np.mean(mean_returns(rollouts)))
        batch = rollouts_to_batch(
            rollouts, transform, cfg.ppo.gamma, cfg.ppo.lam, cfg.ppo.per_task_advantages
        )
        if cfg.loss != "ppo":
            with_ppo = cfg.loss == "ppo+imitation"
            agent.imitate(batch, *expert_rows(rollouts), with_ppo, cfg.imitation_weight)
        else:
            agent.update(batch)
        curve.append(
            {
                "iteration": it,
                "env_steps": steps,
                "pre_return": mean_ret,
                "post_return": mean_ret,
                "wall_s": time.perf_counter() - start,
            }
        )
        smoothed = mean_ret if smoothed is None else 0.9 * smoothed + 0.1 * mean_ret
        best, since_best = (smoothed, 0) if smoothed > best else (best, since_best + 1)
        if it % 20 == 0:
            logger.info("%s it %d steps %d return %.2f", label, it, steps, mean_ret)
        it += 1
        if cfg.patience and since_best >= cfg.patience:
            break
    return PretrainResult(agent, curve, steps, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# fine-tuning and the step-size search
# ---------------------------------------------------------------------------------------------
AgentMaker = Callable[[int], PPOAgent]
"""task position -> a fresh agent for that task."""


def fine_tune(
    env: TaskEnv,
    make_agent: AgentMaker,
    tasks: Sequence[Task],
    cfg: FineTuneConfig,
    lr: float | Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
    """Fine-tune one agent per task (step size `lr`, or one per task), all tasks batched in
    each collect().

    Returns (returns [tasks, steps + 1], env steps [tasks]). Step s's return is the mean over
    the K episodes the policy after s updates collects (they are also step s+1's training
    data); env steps count every collection, the final evaluation-only one included.
    """
    agents = [make_agent(k) for k in range(len(tasks))]
    lrs = [lr] * len(tasks) if isinstance(lr, (int, float)) else list(lr)
    for a, task_lr in zip(agents, lrs, strict=True):
        a.set_lr(task_lr)
    returns = np.zeros((len(tasks), cfg.steps + 1))
    env_steps = np.zeros(len(tasks), dtype=np.int64)
    for s in range(cfg.steps + 1):
        rollouts = collect(env, per_task_policy_fn(agents), tasks, cfg.episodes_per_step)
        returns[:, s] = mean_returns(rollouts)
        env_steps += [r.env_steps for r in rollouts]
        if s == cfg.steps:
            break
        for agent, r in zip(agents, rollouts, strict=True):
            agent.update(
                rollouts_to_batch([r], plain_obs, agent.settings.gamma, agent.settings.lam)
            )
    return returns, env_steps


def search_lr(
    env: TaskEnv,
    make_agent: AgentMaker,
    validation: Sequence[Task],
    cfg: FineTuneConfig,
) -> tuple[float, dict[float, float]]:
    """Pick the fine-tuning step size on validation tasks: the best mean, over tasks, of the
    per-task min-max-scaled mean return after steps 1..steps (scale-free across families).
    All (candidate, task) pairs fine-tune in one batch."""
    cands = cfg.lr_candidates
    if len(cands) == 1:
        return cands[0], {cands[0]: 1.0}
    n = len(validation)
    returns, _ = fine_tune(
        env,
        lambda k: make_agent(k % n),
        list(validation) * len(cands),
        cfg,
        [lr for lr in cands for _ in range(n)],
    )
    after = returns[:, 1:].mean(axis=1).reshape(len(cands), n)  # [candidates, tasks]
    lo, hi = after.min(axis=0), after.max(axis=0)
    scaled = (after - lo) / np.maximum(hi - lo, 1e-8)
    scores = {lr: float(s) for lr, s in zip(cfg.lr_candidates, scaled.mean(axis=1), strict=True)}
    return max(scores, key=lambda lr: scores[lr]), scores


AgentsFor = Callable[[Sequence[Task]], AgentMaker]
"""A task list -> the agent maker for positions in that list."""


def _finetune_records(
    env: TaskEnv,
    method: str,
    agents_for: AgentsFor,
    heldout: Sequence[Task],
    validation: Sequence[Task],
    cfg: FineTuneConfig,
    results: BaselineResults,
) -> None:
    start = time.perf_counter()
    lr, scores = search_lr(env, agents_for(validation), validation, cfg)
    results.chosen_lr[method] = lr
    logger.info("%s: fine-tuning lr %g (validation scores %s)", method, lr, scores)
    returns, steps = fine_tune(env, agents_for(heldout), heldout, cfg, lr)
    wall = (time.perf_counter() - start) / max(len(heldout), 1)
    for k, task in enumerate(heldout):
        results.records.append(make_record(task, method, returns[k], int(steps[k]), wall))


# ---------------------------------------------------------------------------------------------
# random, oracle, scripted
# ---------------------------------------------------------------------------------------------
def random_returns(
    env: TaskEnv, tasks: Sequence[Task], episodes: int, seed: int
) -> tuple[list[float], list[int]]:
    """Mean return per task of uniform random actions (the normalisation floor), and the env
    steps per task."""
    rollouts = collect(env, RandomPolicy(seed), tasks, episodes)
    return mean_returns(rollouts), [r.env_steps for r in rollouts]


def _oracle_records(
    env: TaskEnv,
    config: BaselineConfig,
    spec: PolicySpec,
    heldout: Sequence[Task],
    train: Sequence[Task],
    random: Sequence[float],
    results: BaselineResults,
    train_env: TaskEnv | None = None,
) -> None:
    oracle_spec = replace(spec, obs_size=spec.obs_size + ENCODING_SIZE)
    trained = pretrain(
        train_env or env, train, config.oracle, oracle_spec, config.seed + 1, True, "oracle"
    )
    results.training_curves["oracle"] = trained.curve
    start = time.perf_counter()
    transform: ObsTransform = encoded_obs(heldout)
    oracle, eval_steps = evaluate_shared(
        env, trained.agent, heldout, config.eval_episodes, transform, config.oracle_deterministic
    )
    script = scripted_returns(heldout, config.eval_episodes, config.seed)
    validation = validate_oracle(heldout, oracle, script, random, config.oracle_min_ratio)
    results.oracle_validation = validation
    refs = oracle_references(heldout, oracle, script, validation)
    wall = (time.perf_counter() - start) / max(len(heldout), 1)
    per_task = eval_steps // max(len(heldout), 1)
    n = config.finetune.steps + 1
    for k, task in enumerate(heldout):
        results.records.append(make_record(task, "oracle", [refs[k]] * n, per_task, wall))
        results.records.append(make_record(task, "oracle_ppo", [oracle[k]] * n, per_task, wall))
        results.records.append(make_record(task, "scripted", [script[k]] * n, 0, 0.0))


# ---------------------------------------------------------------------------------------------
# run_all
# ---------------------------------------------------------------------------------------------
def run_baselines(
    config: BaselineConfig,
    env_factory: EnvFactory,
    heldout_tasks: Sequence[Task],
    train_tasks: Sequence[Task],
    validation_tasks: Sequence[Task] | None = None,
    oracle_env_factory: EnvFactory | None = None,
) -> BaselineResults:
    """Run every baseline in `config.methods` on the held-out tasks; see the module doc.

    `oracle_env_factory` (optional) trains the oracle on another env, e.g. the in-process
    plaza when `env_factory` is the protocol world (the same simulation, ~10x faster); the
    oracle is still evaluated on `env_factory`'s env like every other method.
    """
    torch.manual_seed(config.seed)
    heldout, train = list(heldout_tasks), list(train_tasks)
    validation = (
        list(validation_tasks)
        if validation_tasks
        else stratified_sample(train, np.random.default_rng([config.seed, 29]), config.n_validation)
    )
    spec = PolicySpec(hidden=config.hidden)
    steps = config.finetune.steps
    results = BaselineResults()
    env = env_factory()
    try:
        start = time.perf_counter()
        random, random_steps = random_returns(env, heldout, config.eval_episodes, config.seed)
        wall = (time.perf_counter() - start) / max(len(heldout), 1)
        if "random" in config.methods:
            results.records.extend(
                make_record(t, "random", [r] * (steps + 1), n, wall)
                for t, r, n in zip(heldout, random, random_steps, strict=True)
            )
        if "oracle" in config.methods:
            train_env = oracle_env_factory() if oracle_env_factory else None
            try:
                _oracle_records(env, config, spec, heldout, train, random, results, train_env)
            finally:
                if train_env is not None:
                    train_env.close()
        if "multitask_finetune" in config.methods:
            _multitask(env, config, spec, heldout, train, validation, results)
        if "ppo_scratch" in config.methods:
            scratch = replace(config.finetune, ppo=config.scratch_ppo)

            def fresh(tasks: Sequence[Task]) -> AgentMaker:
                return lambda k: PPOAgent(spec, scratch.ppo, config.seed + 1000 + k)

            _finetune_records(env, "ppo_scratch", fresh, heldout, validation, scratch, results)
    finally:
        env.close()
    return results


def _multitask(
    env: TaskEnv,
    config: BaselineConfig,
    spec: PolicySpec,
    heldout: Sequence[Task],
    train: Sequence[Task],
    validation: Sequence[Task],
    results: BaselineResults,
) -> None:
    """Multi-task PPO pretraining on the training tasks (one policy, or one per family with
    the budget split evenly), then per-task fine-tuning from it."""
    groups = {"all": list(train)}
    if config.per_family:
        groups = {f: [t for t in train if t.family == f] for f in sorted({t.family for t in train})}
    budget = replace(config.multitask, env_steps=config.multitask.env_steps // len(groups))
    pretrained: dict[str, PPOAgent] = {}
    curve: list[dict[str, float]] = []
    for n, (key, tasks) in enumerate(groups.items()):
        trained = pretrain(env, tasks, budget, spec, config.seed + 2, False, f"multitask {key}")
        pretrained[key] = trained.agent
        offset = curve[-1]["env_steps"] if curve else 0.0  # one curve: env steps add up
        curve += [
            {**e, "env_steps": e["env_steps"] + offset, "group": float(n)} for e in trained.curve
        ]
    results.training_curves["multitask_finetune"] = curve
    ft = config.finetune

    def from_pretrained(tasks: Sequence[Task]) -> AgentMaker:
        def make(k: int) -> PPOAgent:
            key = tasks[k].family if config.per_family else "all"
            agent = pretrained[key].copy(ft.ppo, config.seed + 2000 + k)
            agent.reset_exploration()
            return agent

        return make

    _finetune_records(env, "multitask_finetune", from_pretrained, heldout, validation, ft, results)


def run_all(
    config: BaselineConfig,
    env_factory: EnvFactory,
    heldout_tasks: Sequence[Task],
    train_tasks: Sequence[Task],
    validation_tasks: Sequence[Task] | None = None,
    oracle_env_factory: EnvFactory | None = None,
) -> list[HeldoutRecord]:
    """The baseline records only (see `run_baselines` for validation and curves)."""
    return run_baselines(
        config, env_factory, heldout_tasks, train_tasks, validation_tasks, oracle_env_factory
    ).records
