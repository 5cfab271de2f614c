"""Cross-field checks of a `config.RunConfig` (`validate`): each raises a ConfigError that
names the field and the fix. Split from `config` so that the dataclasses read on their own;
`config.config_from_dict` calls `validate` on every config it builds."""

from __future__ import annotations

import difflib

from avatar_meta.config import (
    ALGORITHMS,
    BASELINE_METHODS,
    MAX_EPISODES_PER_STEP,
    OUTER_LOSSES,
    RunConfig,
)
from avatar_meta.tasks import ALL_FAMILIES, TASK_CODE_SIZE, TaskError
from avatar_meta.typed_config import ConfigError


def _check_search(c: RunConfig) -> None:
    """Strategy search's policy reads the true task code as its context, and its probes are
    the codes of a family's training tasks, run within the support step's episodes."""
    if c.policy.context_size != TASK_CODE_SIZE:
        raise ConfigError(
            f"policy.context_size = {c.policy.context_size}: meta.algorithms lists search, whose "
            f"policy reads the task code as its context; set policy.context_size: {TASK_CODE_SIZE}"
        )
    if not c.meta.per_family:
        raise ConfigError(
            "meta.per_family = false: search needs one policy per family (the task code does "
            "not name the family); set meta.per_family: true"
        )
    probes, finalists, per_step = (
        c.meta.search_probes,
        c.meta.search_finalists,
        c.eval.episodes_per_step,
    )
    if not 1 <= probes <= per_step:
        raise ConfigError(
            f"meta.search_probes = {probes}: each probe runs one of the support step's "
            f"eval.episodes_per_step ({per_step}) episodes; use 1..{per_step}"
        )
    extra = per_step - probes
    if not 1 <= finalists <= max(1, min(probes, extra)):
        raise ConfigError(
            f"meta.search_finalists = {finalists}: the finalists share the support step's "
            f"{extra} episodes left after the probes; use 1..{max(1, min(probes, extra))}"
        )
    refine = c.meta.search_refine
    if not 0 <= refine < per_step:
        raise ConfigError(
            f"meta.search_refine = {refine}: the new hypotheses and the best probe share "
            f"eval.episodes_per_step ({per_step}) episodes; use 0..{per_step - 1}"
        )
    families = len(c.task_distribution().train_families)
    if c.tasks.n_train < families * probes:
        raise ConfigError(
            f"tasks.n_train = {c.tasks.n_train}: search draws {probes} hypotheses per family "
            f"(meta.search_probes) from the training tasks; use tasks.n_train >= "
            f"{families * probes}"
        )


def _positive(value: float, where: str, fix: str = "use a value > 0") -> None:
    if not value > 0:
        raise ConfigError(f"{where} = {value!r} must be > 0; {fix}")


def _check_names(
    names: list[str], allowed: tuple[str, ...], where: str, what: str, keys: bool = False
) -> None:
    """Every name is one of `allowed` (else: a "did you mean" and the list); `keys`: the
    names are a mapping's keys, not a list's items."""
    for i, name in enumerate(names):
        if name not in allowed:
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            field_name = f"{where} key {name!r}" if keys else f"{where}[{i}] = {name!r}"
            raise ConfigError(
                f"{field_name}: unknown {what}; {hint}use one of: {', '.join(allowed)}"
            )


def _check_families(names: list[str], where: str, keys: bool = False) -> None:
    _check_names(names, ALL_FAMILIES, where, "scenario family", keys)


def validate(c: RunConfig) -> None:
    """Cross-field checks; raises ConfigError naming the field and the fix."""
    e, m, ev = c.env, c.meta, c.eval
    if e.editor and e.env_path:
        raise ConfigError("env.editor and env.env_path are both set; use one (--editor or --env)")
    if e.inprocess and (e.editor or e.env_path):
        raise ConfigError("env.inprocess cannot be combined with env.editor or env.env_path")
    if e.editor and e.num_envs != 1:
        raise ConfigError("env.num_envs must be 1 with env.editor (there is one Editor)")
    _positive(e.num_envs, "env.num_envs")
    _positive(e.num_areas, "env.num_areas")
    if not 1024 <= e.base_port <= 65000:
        raise ConfigError(f"env.base_port = {e.base_port}: use a port in 1024..65000")
    _check_families(c.tasks.families, "tasks.families")
    _check_families(list(c.meta.family_weights), "meta.family_weights", keys=True)
    for name, weight in c.meta.family_weights.items():
        _positive(weight, f"meta.family_weights.{name}", "use a relative share > 0")

    if c.tasks.heldout_family is not None:
        _check_families([c.tasks.heldout_family], "tasks.heldout_family")
        if m.per_family:
            raise ConfigError(
                f"tasks.heldout_family = {c.tasks.heldout_family!r} needs meta.per_family: false "
                "(a held-out family has no meta-policy of its own; set meta.per_family: false to "
                "meta-train one shared initialisation that can transfer)"
            )
    try:
        dist = c.task_distribution()
    except TaskError as err:
        raise ConfigError(f"tasks: {err}") from None
    if c.tasks.n_heldout < 1:
        raise ConfigError("tasks.n_heldout must be >= 1 (the acceptance bar wants >= 20)")
    if not c.meta.algorithms:
        raise ConfigError(
            "meta.algorithms is empty; list at least one of: " + ", ".join(ALGORITHMS)
        )
    _check_names(m.algorithms, ALGORITHMS, "meta.algorithms", "algorithm")
    if len(set(m.algorithms)) != len(m.algorithms):
        raise ConfigError("meta.algorithms lists an algorithm twice; list each once")
    _positive(m.meta_batch_size, "meta.meta_batch_size")
    if m.meta_batch_size > c.total_areas:
        raise ConfigError(
            f"meta.meta_batch_size = {m.meta_batch_size} is larger than the areas available "
            f"(env.num_envs x env.num_areas = {e.num_envs} x {e.num_areas} = {c.total_areas}); "
            f"lower meta.meta_batch_size or raise env.num_areas / env.num_envs"
        )
    n_train_fams = len(dist.train_families)
    if m.meta_batch_size < n_train_fams:
        raise ConfigError(
            f"meta.meta_batch_size = {m.meta_batch_size} is smaller than the number of training "
            f"families ({n_train_fams}); raise it so every family is in each meta-batch"
        )
    for name in ("support_episodes", "query_episodes"):
        value = getattr(m, name)
        if not 1 <= value <= MAX_EPISODES_PER_STEP:
            raise ConfigError(
                f"meta.{name} = {value}: use 1..{MAX_EPISODES_PER_STEP} episodes per task"
            )
    if not 1 <= ev.episodes_per_step <= MAX_EPISODES_PER_STEP:
        raise ConfigError(
            f"eval.episodes_per_step = {ev.episodes_per_step}: use 1..{MAX_EPISODES_PER_STEP}"
        )
    if ev.adaptation_steps < 1:
        raise ConfigError("eval.adaptation_steps must be >= 1 (the report uses 3)")
    if ev.inner_lr is not None:
        _positive(ev.inner_lr, "eval.inner_lr", "use a value > 0 or null")
    if ev.stability_repeats < 0:
        raise ConfigError(
            f"eval.stability_repeats = {ev.stability_repeats}: use 0 (training-curve check "
            "only) or a whole number of paired held-out repeats, e.g. 2"
        )
    _check_names(c.baselines.methods, BASELINE_METHODS, "baselines.methods", "baseline")
    for name in (
        "inner_lr",
        "outer_lr",
        "clip",
        "reptile_inner_lr",
        "reptile_epsilon",
        "metasgd_lr_scale",
        "max_grad_norm",
        "time_budget_s",
    ):
        _positive(getattr(m, name), f"meta.{name}")
    if not 0 < m.inner_lr_decay <= 1:
        raise ConfigError(f"meta.inner_lr_decay = {m.inner_lr_decay}: use a value in (0, 1]")
    if m.job_budget_s is not None:
        _positive(m.job_budget_s, "meta.job_budget_s", "use seconds > 0 or null (no target)")
    if not 0 < m.outer_lr_final_scale <= 1:
        raise ConfigError(
            f"meta.outer_lr_final_scale = {m.outer_lr_final_scale}: use a value in (0, 1] "
            "(1 = constant learning rate, 0.1 = anneal to a tenth)"
        )
    if not 0 < m.gamma <= 1 or not 0 <= m.gae_lambda <= 1:
        raise ConfigError("meta.gamma must be in (0, 1] and meta.gae_lambda in [0, 1]")
    for name in ("meta_iterations", "outer_epochs", "outer_minibatches"):
        _positive(getattr(m, name), f"meta.{name}", "use a whole number >= 1")
    if m.pretrain_env_steps < 0:
        raise ConfigError(
            f"meta.pretrain_env_steps = {m.pretrain_env_steps}: use 0 (no pretraining) or a "
            "positive env-step budget"
        )
    if m.reptile_inner_steps < 2:
        raise ConfigError(
            "meta.reptile_inner_steps must be >= 2 (with 1 step Reptile is joint training)"
        )
    if m.adapt not in ("actor", "context"):
        raise ConfigError(f"meta.adapt = {m.adapt!r}: use actor or context")
    if m.adapt == "context" and c.policy.context_size < 1:
        raise ConfigError(
            "meta.adapt = context needs a context to adapt; set policy.context_size (e.g. 8)"
        )
    if "encoder" in m.algorithms and c.policy.context_size < 1:
        raise ConfigError(
            "meta.algorithms lists encoder, which writes the policy's task context; set "
            "policy.context_size (e.g. 8)"
        )
    _positive(m.encoder_hidden, "meta.encoder_hidden", "use a whole number >= 1, e.g. 64")
    if "search" in m.algorithms:
        _check_search(c)
    if m.encoder_task_weight < 0:
        raise ConfigError(
            f"meta.encoder_task_weight = {m.encoder_task_weight}: use 0 (off) or a weight > 0"
        )
    if m.outer_loss not in OUTER_LOSSES:
        raise ConfigError(
            f"meta.outer_loss = {m.outer_loss!r}: use one of {', '.join(OUTER_LOSSES)}"
        )
    if m.outer_loss != "ppo" and "reptile" in m.algorithms:
        raise ConfigError(
            f"meta.outer_loss = {m.outer_loss} needs query episodes, which reptile does not "
            "collect; remove reptile from meta.algorithms or use outer_loss: ppo"
        )
    if m.imitation_gesture_weight < 0 or m.imitation_weight < 0:
        raise ConfigError("meta.imitation_weight and meta.imitation_gesture_weight must be >= 0")
    try:
        c.policy_spec()
    except ValueError as err:
        raise ConfigError(f"policy: {err}") from None
