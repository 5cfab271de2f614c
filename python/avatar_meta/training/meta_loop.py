"""Meta-training loop for MAML, FOMAML, Meta-SGD, Reptile, the task encoder and strategy
search: one straight flow (CleanRL style).

Per meta-iteration:
  1. sample a stratified meta-batch of K training tasks (`TaskDistribution.sample_train`);
  2. collect `support_episodes` per task with its family's meta-policy (one task per area);
  3. adapt per task: one vanilla-PG step on normalised GAE advantages (vmap over tasks), or
     for the task encoder one forward pass that writes the task context (`meta.encoder`);
  4. collect `query_episodes` per task with the adapted params (not for Reptile);
  5. outer update with Adam: MAML (second order) / FOMAML / Meta-SGD take `outer_epochs`
     PPO-clip epochs through the inner step (Finn et al. 2017; Li et al. 2017); Reptile moves
     towards the parameters k PPO-SGD steps reach (Nichol et al. 2018); strategy search
     skips 3-4: its support episodes act with each task's true code and the policy imitates
     the scripted expert on their states, mixed with labelled tasks of earlier iterations
     (DAgger with `meta.search_replay`, `meta.search`);
  6. fold the iteration's observations into the normalisation statistics;
  7. log (TensorBoard, progress bar) and checkpoint atomically (tmp file + os.replace); the
     checkpoint that ends the best window of the training curve is also kept as
     `<algorithm>.best.pt` for the stability check.

The outer learning rate follows a cosine from `outer_lr` to `outer_lr * outer_lr_final_scale`
over the run (by iterations or by the time budget, whichever is further along).

Per-family meta-policies (`meta.per_family`, the default): the meta-parameters are one
initialisation per scenario family, keyed by family name (`SHARED_KEY` when off). The
designer chooses the family of a scene, so it is known at adaptation time; the hidden
parameters (which landmark, which gesture, what distance) are what adaptation infers. One
environment pass still runs the whole meta-batch; the learner is applied per family group
(`training.task_groups`) and one Adam step updates every family's parameters.

Gotchas
- The query batch's `old_log_prob` comes from the adapted policy, so the first outer epoch
  has ratio 1; later epochs re-adapt from the updated meta-params.
- Only the actor is adapted (`meta.adapt`: every actor weight, or only its task context);
  the outer value loss trains the critic, which also provides the GAE baselines of both
  support and query data.
- `meta.outer_loss: imitation` swaps PPO-clip for imitation of the scripted expert on the
  query states (guided meta-policy search, labels from `world.observed_expert`);
  `ppo+imitation` adds the two.
- Normalisation buffers are updated *after* the update, never by gradients.
- Resuming restores params, Adam state, buffers, RNG states, counters and the curve, so a run
  killed after iteration i continues exactly at i + 1.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avatar_meta.config import MetaConfig, RunConfig
from avatar_meta.envs.rollouts import CollectStats, TaskEnv
from avatar_meta.meta import (
    MAML,
    MAMLConfig,
    MetaSGD,
    MetaSGDConfig,
    MetaSGDParams,
    Reptile,
    ReptileConfig,
    TaskBatch,
    policy_losses,
)
from avatar_meta.meta.encoder import EncoderConfig, TaskEncoder, init_encoder
from avatar_meta.meta.search import CONTEXT, ContextImitation, LabelledReplay, task_contexts
from avatar_meta.report.metrics import is_best_window
from avatar_meta.rl import Buffers, Params, Policy, PPOConfig, update_obs_stats
from avatar_meta.rl.losses import GuidedBatch, RLBatch, make_guided_loss, make_ppo_loss
from avatar_meta.tasks import TASK_CODE_SIZE, Task, TaskDistribution
from avatar_meta.training.checkpoints import (
    MetaState,
    best_checkpoint_path,
    checkpoint_path,
    copy_checkpoint,
    load_checkpoint,
    policy_key,
    policy_keys,
    save_checkpoint,
)
from avatar_meta.training.common import (
    TaskPolicy,
    adapt_prefix,
    all_obs,
    collect_per_task,
    derived_seed,
    guided_parts,
    mean_returns,
    rollouts_to_guided,
    rollouts_to_tasks,
)
from avatar_meta.training.curve import curve_entry, log_tensorboard
from avatar_meta.training.prefetch import Prefetcher, SupportBatch
from avatar_meta.training.scoring import TrainingScorer
from avatar_meta.training.task_groups import (
    scatter_tasks,
    take_tasks,
    task_groups,
    task_minibatches,
)

logger = logging.getLogger("avatar_meta.training")


def init_state(algorithm: str, config: RunConfig, policy: Policy) -> MetaState:
    """Fresh meta-parameters (the same initial weights for every policy key), Adam and RNGs
    for one algorithm (seeded by env.seed)."""
    seed = config.env.seed
    params, buffers = policy.init(seed=seed)
    m = config.meta
    if algorithm == "encoder":
        encoder = init_encoder(policy.spec, m.encoder_hidden, seed, _code_size(config))
        params = {**params, **encoder}
    meta_params: dict[str, Any] = {}
    weights: list[torch.Tensor] = []
    step_sizes: list[torch.Tensor] = []
    for key in policy_keys(config):
        leaf = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        weights += leaf.values()
        if algorithm == "metasgd":
            sgd = MetaSGD(_unused, _unused, _metasgd_cfg(config)).init(leaf)
            step_sizes += [t for d in sgd.lrs for t in d.values()]
            meta_params[key] = sgd
        else:
            meta_params[key] = leaf
    # base_lr: the group's rate before annealing (`anneal_outer_lr`)
    groups: list[dict[str, Any]] = [{"params": weights, "lr": m.outer_lr, "base_lr": m.outer_lr}]
    if step_sizes:
        lr = m.outer_lr * m.metasgd_lr_scale
        groups.append({"params": step_sizes, "lr": lr, "base_lr": lr})
    optimizer = torch.optim.Adam(groups, eps=1e-5)
    generator = torch.Generator().manual_seed(seed)
    return MetaState(
        algorithm, meta_params, buffers, optimizer, np.random.default_rng([seed, 7]), generator
    )


def _code_size(config: RunConfig) -> int:
    """Width of the task code the encoder's inference is supervised with: the guided outer
    losses carry task codes on their query rows; PPO alone has no labels (0 = no decoder)."""
    m = config.meta
    return TASK_CODE_SIZE if m.outer_loss != "ppo" and m.encoder_task_weight > 0 else 0


def _unused(params: Params, batch: Any) -> torch.Tensor:  # pragma: no cover
    raise RuntimeError("placeholder loss")


def restore_state(algorithm: str, config: RunConfig, policy: Policy, path: Path) -> MetaState:
    """A MetaState from a checkpoint written by `save_checkpoint`."""
    ck = load_checkpoint(path)
    state = init_state(algorithm, config, policy)
    saved_keys = list(ck.get("policy_keys") or [])
    if saved_keys != list(state.params):
        raise ValueError(
            f"{path}: its meta-policies {saved_keys} do not match this config's "
            f"{list(state.params)} (meta.per_family or tasks.families changed); "
            "resume with the run's own config.yaml or start over with --force"
        )
    with torch.no_grad():
        for key, params in state.params.items():
            target = params.init if isinstance(params, MetaSGDParams) else params
            for k in target:
                target[k].copy_(ck["params_by_key"][key][k])
            if isinstance(params, MetaSGDParams):
                for d, saved in zip(params.lrs, ck["metasgd_lrs_by_key"][key], strict=True):
                    for k in d:
                        d[k].copy_(saved[k])
    bases = [group["base_lr"] for group in state.optimizer.param_groups]
    state.optimizer.load_state_dict(ck["optimizer"])
    for group, base in zip(state.optimizer.param_groups, bases, strict=True):
        group["base_lr"] = base  # this config's outer_lr (and older checkpoints lack it)
    state.buffers = ck["buffers"]
    state.np_rng.bit_generator.state = ck["np_rng"]
    state.generator.set_state(ck["torch_generator"])
    torch.set_rng_state(ck["torch_rng"])
    for name in ("iteration", "env_steps", "env_seconds", "learn_seconds", "finished", "curve"):
        setattr(state, name, ck[name])
    state.wall_seconds = ck.get("wall_seconds", state.env_seconds + state.learn_seconds)
    return state


def _metasgd_cfg(config: RunConfig) -> MetaSGDConfig:
    m = config.meta
    return MetaSGDConfig(
        init_lr=m.inner_lr,
        init_lr_decay=m.inner_lr_decay,
        inner_steps=1,
        adapt_prefix=adapt_prefix(config),
        use_vmap=m.use_vmap,
    )


def ppo_config(config: RunConfig) -> PPOConfig:
    m = config.meta
    return PPOConfig(clip=m.clip, vf_coef=m.vf_coef, ent_coef=m.ent_coef)


def build_learner(algorithm: str, config: RunConfig, policy: Policy, buffers: Buffers) -> Any:
    """The meta-learner object bound to losses over the *current* normalisation buffers."""
    m = config.meta
    inner, outer = policy_losses(policy, buffers, ppo_config(config))
    if m.outer_loss != "ppo":
        with_ppo = ppo_config(config) if m.outer_loss == "ppo+imitation" else None
        outer = make_guided_loss(
            policy, buffers, with_ppo, m.imitation_weight, m.imitation_gesture_weight, m.vf_coef
        )
    if algorithm in ("maml", "fomaml"):
        cfg = MAMLConfig(
            inner_lr=m.inner_lr,
            inner_lr_decay=m.inner_lr_decay,
            first_order=algorithm == "fomaml",
            adapt_prefix=adapt_prefix(config),
            use_vmap=m.use_vmap,
        )
        return MAML(inner, outer, cfg)
    if algorithm == "metasgd":
        return MetaSGD(inner, outer, _metasgd_cfg(config))
    if algorithm == "encoder":
        encoder = EncoderConfig(
            m.encoder_hidden, _code_size(config), m.encoder_task_weight, m.use_vmap
        )
        return TaskEncoder(policy, buffers, outer, encoder)
    if algorithm == "search":  # no advantages are ever needed: the critic is not trained
        imitation = make_guided_loss(
            policy, buffers, None, m.imitation_weight, m.imitation_gesture_weight, vf_coef=0.0
        )
        return ContextImitation(imitation, m.use_vmap)
    if algorithm == "reptile":
        rcfg = ReptileConfig(
            inner_lr=m.reptile_inner_lr,
            inner_steps=m.reptile_inner_steps,
            minibatches=4,
            epsilon=1.0,  # the Adam step below plays epsilon's role
            adapt_prefix=None,
            use_vmap=m.use_vmap,
        )
        return Reptile(make_ppo_loss(policy, buffers, ppo_config(config)), rcfg)
    raise ValueError(f"unknown algorithm {algorithm!r}")


def pretrain_meta_params(state: MetaState, config: RunConfig, env: TaskEnv, policy: Policy) -> None:
    """Initialise `state` (params and normalisation buffers) from multi-task PPO on the
    training tasks (`meta.pretrain_env_steps`, the `multitask_finetune` baseline's recipe);
    its env steps and wall time count towards the algorithm's budget."""
    from avatar_meta.training.baselines import PretrainConfig, pretrain

    m = config.meta
    t0 = time.perf_counter()
    dist = config.task_distribution()
    cfg = PretrainConfig(env_steps=m.pretrain_env_steps)
    result = pretrain(
        env,
        dist.train_tasks(),
        cfg,
        config.policy_spec(),
        config.env.seed + 3,
        False,
        f"{state.algorithm} pretrain",
    )
    agent = result.agent
    if m.pretrain_reset_exploration:
        agent.reset_exploration()
    with torch.no_grad():  # every meta-policy starts from the multi-task policy
        for params in state.params.values():
            target = params.init if isinstance(params, MetaSGDParams) else params
            for k in agent.params:
                target[k].copy_(agent.params[k].detach())
    state.buffers = dict(agent.buffers)
    state.env_steps += result.env_steps
    state.learn_seconds += time.perf_counter() - t0
    logger.info(
        "%s: pretrained %d env steps in %.1f s (last return %.2f)",
        state.algorithm,
        result.env_steps,
        time.perf_counter() - t0,
        result.curve[-1]["pre_return"] if result.curve else float("nan"),
    )


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
def _leaves(params: Any) -> list[torch.Tensor]:
    if isinstance(params, MetaSGDParams):
        return [*params.init.values(), *(t for d in params.lrs for t in d.values())]
    return list(params.values())


def anneal_outer_lr(optimizer: torch.optim.Optimizer, progress: float, final_scale: float) -> float:
    """Set every group's rate to base_lr x a cosine from 1 (progress 0) to `final_scale`
    (progress >= 1); returns the factor."""
    p = min(max(progress, 0.0), 1.0)
    factor = final_scale + (1.0 - final_scale) * 0.5 * (1.0 + math.cos(math.pi * p))
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return factor


def _clip_per_key(params: dict[str, Any], groups: dict[str, torch.Tensor], limit: float) -> float:
    """Clip each meta-policy's gradient to `limit` on its own (one family's large returns
    must not shrink another's step); returns the largest norm before clipping."""
    norms = [float(torch.nn.utils.clip_grad_norm_(_leaves(params[key]), limit)) for key in groups]
    return max(norms)


def _assign(params: Any, grads: Any) -> float:
    """Write functional grads into .grad of the leaf tensors; returns the global grad norm."""
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    if isinstance(params, MetaSGDParams):
        pairs += [(params.init[k], grads.init[k]) for k in params.init]
        for d, g in zip(params.lrs, grads.lrs, strict=True):
            pairs += [(d[k], g[k]) for k in d]
    else:
        pairs += [(params[k], grads[k]) for k in params]
    for p, g in pairs:
        p.grad = g.detach().clone()
    return float(torch.sqrt(torch.stack([(g.detach() ** 2).sum() for _, g in pairs]).sum()))


def sample_batch(
    state: MetaState, config: RunConfig, dist: TaskDistribution
) -> tuple[list[Task], list[str]]:
    """A meta-batch of training tasks and their policy keys."""
    m = config.meta
    tasks = dist.sample_train(state.np_rng, m.meta_batch_size, m.family_weights)
    return tasks, [policy_key(config, t.family) for t in tasks]


def support_policy(algorithm: str, state: MetaState, tasks: list[Task], keys: list[str]) -> Params:
    """Each task's acting parameters [K, ...]: its family's meta-policy (stacked copies);
    strategy search's is told the task's code."""
    init = state.task_init(keys)
    if algorithm == "search":
        init[CONTEXT] = task_contexts(tasks)
    return init


def train_algorithm(
    algorithm: str,
    config: RunConfig,
    env: TaskEnv,
    run_dir: Path,
    *,
    resume: bool = False,
    writer: Any = None,
    progress: Any = None,
    deadline: float | None = None,
    reserve_env_steps: int = 0,
) -> MetaState:
    """Meta-train one algorithm to `meta_iterations` or `time_budget_s`, checkpointing every
    iteration into `run_dir/checkpoints/<algorithm>.pt`; returns the final state.

    `deadline` (a `time.perf_counter()` value, from `meta.job_budget_s`) shortens the time
    budget so that training, then `reserve_env_steps` more env steps at the throughput
    measured so far (the evaluation's), end by then."""
    m = config.meta
    policy = Policy(config.policy_spec())
    dist = config.task_distribution()
    path = checkpoint_path(run_dir, algorithm)
    best_path = best_checkpoint_path(run_dir, algorithm)
    if resume and path.exists():
        state = restore_state(algorithm, config, policy, path)
        logger.info("%s: resuming after meta-iteration %d", algorithm, state.iteration)
        # a raised iteration limit reopens a finished run (the time budget is re-checked)
        state.finished = state.finished and state.iteration >= m.meta_iterations
    else:
        state = init_state(algorithm, config, policy)
        if m.pretrain_env_steps > 0:
            pretrain_meta_params(state, config, env, policy)
            save_checkpoint(state, path, config)
    scorer = TrainingScorer(seed=config.env.seed, pool=dist.train_tasks())
    replay = LabelledReplay(m.search_replay)
    task_bar = progress.add_task(algorithm, total=m.meta_iterations) if progress else None
    if progress is not None:
        progress.update(task_bar, completed=state.iteration)
    started = time.perf_counter() - state.wall_seconds
    ahead = algorithm == "search" and m.search_collect_ahead
    with Prefetcher(env, m.support_episodes) if ahead else nullcontext() as prefetch:
        while not state.finished:
            elapsed = time.perf_counter() - started
            budget = time_budget(state, m.time_budget_s, elapsed, deadline, reserve_env_steps)
            if state.iteration >= m.meta_iterations or elapsed > budget:
                state.finished = True
                save_checkpoint(state, path, config)
                break
            progress_done = max(state.iteration / m.meta_iterations, elapsed / budget)
            lr_factor = anneal_outer_lr(state.optimizer, progress_done, m.outer_lr_final_scale)
            # 1-2. a meta-batch and its support episodes, each task with its meta-policy --------
            batch = prefetch.take() if prefetch is not None else None
            if batch is None:
                tasks, keys = sample_batch(state, config, dist)
                init = support_policy(algorithm, state, tasks, keys)
                stats = CollectStats()
                rolls = collect_per_task(
                    env,
                    policy,
                    init,
                    state.buffers,
                    state.generator,
                    tasks,
                    m.support_episodes,
                    stats,
                )
                batch = SupportBatch(tasks, keys, rolls, stats)
            if prefetch is not None:  # the next batch is collected while this one is learned
                tasks, keys = sample_batch(state, config, dist)
                init = support_policy(algorithm, state, tasks, keys)
                seed = derived_seed(state.generator)
                prefetch.start(TaskPolicy.of(policy.spec, init, state.buffers, seed), tasks, keys)
            tasks, keys, support_roll, stats = batch.tasks, batch.keys, batch.rollouts, batch.stats
            groups = task_groups(keys)
            t_learn = time.perf_counter()
            # strategy search reads the expert-labelled rows only (below), no advantages
            support = (
                None
                if algorithm == "search"
                else rollouts_to_tasks(support_roll, m.gamma, m.gae_lambda)
            )
            learner = build_learner(algorithm, config, policy, state.buffers)
            rows = all_obs(support_roll)
            log: dict[str, float] = {"outer_lr_factor": lr_factor}
            learn_s = 0.0
            if algorithm == "reptile":
                # 5'. Reptile: gradient of 0.5||theta - phi||^2 is theta - mean phi; Adam steps it.
                state.optimizer.zero_grad()
                meta_loss = 0.0
                for key, index in groups.items():
                    loss = learner.meta_loss(
                        state.params[key], TaskBatch(take_tasks(support, index), None)
                    )
                    loss.backward()
                    meta_loss += float(loss.detach()) * len(index) / len(tasks)
                log["grad_norm"] = _clip_per_key(state.params, groups, 1e9)
                state.optimizer.step()
                log["meta_loss"] = meta_loss
                post = None
            elif algorithm == "search":
                # 3'-5'. no inner step: the support episodes acted with each task's true context,
                # and the policy imitates the expert's labels of their states (DAgger)
                parts = guided_parts(support_roll, m.gamma, m.gae_lambda, returns=False)
                guided, batch_keys = replay.mix(parts, keys, state.generator)
                log |= learner.update(
                    state.params,
                    batch_keys,
                    guided,
                    state.optimizer,
                    state.generator,
                    m.outer_epochs,
                    m.outer_minibatches,
                    m.max_grad_norm,
                )
                post = None
            else:
                # 3. adapt per task (no grad, vmap within each family) ---------------------------
                adapted = scatter_tasks(
                    {
                        key: learner.adapt_tasks(state.params[key], take_tasks(support, index))
                        for key, index in groups.items()
                    },
                    groups,
                    len(tasks),
                )
                learn_s += time.perf_counter() - t_learn
                # 4. query episodes with the adapted params -------------------------------------
                query_roll = collect_per_task(
                    env,
                    policy,
                    adapted,
                    state.buffers,
                    state.generator,
                    tasks,
                    m.query_episodes,
                    stats,
                )
                t_learn = time.perf_counter()
                query: RLBatch | GuidedBatch = (
                    rollouts_to_guided(query_roll, m.gamma, m.gae_lambda)
                    if m.outer_loss != "ppo"
                    else rollouts_to_tasks(query_roll, m.gamma, m.gae_lambda)
                )
                rows = torch.cat([rows, all_obs(query_roll)])
                post = mean_returns(query_roll)
                # 5. outer PPO-clip epochs through the inner step -------------------------------
                log |= outer_epochs(state, learner, groups, support, query, m)
            # 6. normalisation statistics ------------------------------------------------------
            state.buffers = update_obs_stats(state.buffers, rows)
            learn_s += time.perf_counter() - t_learn
            # 7. bookkeeping, log, checkpoint ------------------------------------------------
            state.iteration += 1
            state.env_steps += stats.agent_steps
            state.env_seconds += stats.seconds
            state.learn_seconds += learn_s
            state.wall_seconds = time.perf_counter() - started
            pre = mean_returns(support_roll)
            for name, returns in (("pre_score", pre), ("post_score", post)):
                score = None if returns is None else scorer.score(tasks, returns)
                if score is not None:
                    log[name] = score
            entry = curve_entry(state, tasks, pre, post, log)
            if not all(math.isfinite(v) for v in entry.values()):
                raise FloatingPointError(f"{algorithm}: non-finite training values {entry}")
            state.curve.append(entry)
            log_tensorboard(writer, algorithm, state, entry, tasks, pre, post)
            save_checkpoint(state, path, config)
            if is_best_window(state.curve):
                copy_checkpoint(path, best_path)
            if progress is not None:
                progress.update(task_bar, completed=state.iteration)
    if progress is not None:  # a time-budget stop ends the bar where training ended
        progress.update(task_bar, total=state.iteration, completed=state.iteration)
    return state


def outer_epochs(
    state: MetaState,
    learner: Any,
    groups: dict[str, torch.Tensor],
    support: Any,
    query: Any,
    m: MetaConfig,
) -> dict[str, float]:
    """`m.outer_epochs` passes of `m.outer_minibatches` Adam steps over the meta-batch; each
    step sums every family's meta-gradient on its share of the minibatch, clipped per family.
    Returns the logged losses and the last gradient norm."""
    parts = {
        key: task_minibatches(
            TaskBatch(take_tasks(support, index), take_tasks(query, index)),
            m.outer_minibatches,
            state.generator,
        )
        for key, index in groups.items()
    }
    losses, grad_norm = [], 0.0
    for _ in range(m.outer_epochs):
        for j in range(max(len(p) for p in parts.values())):
            state.optimizer.zero_grad()
            step_loss = 0.0
            for key, key_parts in parts.items():
                if j < len(key_parts):
                    grads, loss = learner.meta_grad(state.params[key], key_parts[j])
                    _assign(state.params[key], grads)
                    step_loss += float(loss.detach()) / len(parts)
            grad_norm = _clip_per_key(state.params, groups, m.max_grad_norm)
            state.optimizer.step()
            losses.append(step_loss)
    return {"grad_norm": grad_norm, "meta_loss": losses[-1], "meta_loss_first_epoch": losses[0]}


def time_budget(
    state: MetaState,
    budget_s: float,
    elapsed: float,
    deadline: float | None,
    reserve_env_steps: int,
) -> float:
    """The seconds of training this run may take in all: `budget_s`, or less when the job
    must end by `deadline` after `reserve_env_steps` more env steps, timed at the env
    throughput of this run's meta-iterations (from the second on, so pretraining steps do
    not count; until then nothing is reserved)."""
    if deadline is None:
        return budget_s
    rate = math.inf
    if len(state.curve) >= 2:
        first, last = state.curve[0], state.curve[-1]
        rate = (last["env_steps"] - first["env_steps"]) / max(last["env_s"] - first["env_s"], 1e-9)
    left = deadline - time.perf_counter() - reserve_env_steps / rate
    return max(min(budget_s, elapsed + left), 1e-6)
