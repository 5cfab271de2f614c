"""The run driver behind `avatar-meta train` and `avatar-meta evaluate`.

Run folder `results/<run-id>/` (design section 8), mlagents-learn semantics:
- it exists and neither `--resume` nor `--force` is given -> `RunExistsError` telling the
  user to pass one;
- `--force` wipes it and starts over;
- `--resume` continues every algorithm from its last completed meta-iteration (algorithms
  that had finished are not retrained) and redoes evaluation, baselines and report.

Flow: resolved `config.yaml` -> meta-train each configured algorithm (checkpoint every
iteration) -> held-out evaluation of each, and the stability check -> the first one's adapted
policies streamed into the world over the PolicyChannel (`training.streaming`) -> baselines on
the same held-out tasks -> `report.write_report` (metrics.json, report.md, plots). With a job
budget (`meta.job_budget_s`) the baselines run first and meta-training gets the time they
leave. Records are also kept as `heldout_meta.json` and `heldout_baselines.json` so
`avatar-meta evaluate` can redo the meta-learners' part alone; `heldout_stability.json` holds
the stability check's final-vs-best checkpoint records (`training.evaluate.stability_records`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from avatar_meta import contract
from avatar_meta.config import RunConfig, dump_config, load_config
from avatar_meta.training.common import make_env
from avatar_meta.training.records import HeldoutRecord, load_records, save_records

logger = logging.getLogger("avatar_meta.training")

META_RECORDS = "heldout_meta.json"
BASELINE_RECORDS = "heldout_baselines.json"
CURVES = "training_curves.json"
TIMING = "timing.json"
STREAMING = "streaming.json"
STABILITY_RECORDS = "heldout_stability.json"


class RunExistsError(RuntimeError):
    """The run folder exists and neither resume nor force was asked for."""


def prepare_run_dir(results_dir: str | Path, run_id: str, resume: bool, force: bool) -> Path:
    """Create (or reuse with resume, or wipe with force) results_dir/run_id."""
    if resume and force:
        raise ValueError("--resume and --force exclude each other; pass one")
    if not run_id or "/" in run_id or run_id in (".", ".."):
        raise ValueError(f"--run-id {run_id!r}: use a plain folder name like 'demo'")
    run_dir = Path(results_dir) / run_id
    if run_dir.exists():
        if force:
            shutil.rmtree(run_dir)
        elif not resume:
            raise RunExistsError(
                f"run folder {run_dir} already exists; pass --resume to continue it from its "
                "last checkpoint, --force to overwrite it, or choose another --run-id"
            )
    elif resume:
        raise RunExistsError(f"--resume: no run folder {run_dir} to resume; drop --resume")
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    for stale in (run_dir / "checkpoints").glob("*.tmp"):
        stale.unlink()  # half-written by a killed run; the previous checkpoint is intact
    return run_dir


def _writer(config: RunConfig, run_dir: Path) -> Any:
    if not config.output.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir))


def _progress(config: RunConfig) -> Any:
    if not config.output.progress:
        return nullcontext(None)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("meta-iterations"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )


REPORT_RESERVE_S = 20.0
"""Seconds a job budget (`meta.job_budget_s`) keeps for streaming, export and the report
(5-10 s measured on the demo)."""


def train(config: RunConfig, run_id: str, *, resume: bool = False, force: bool = False) -> Path:
    """The whole job; returns the run folder."""
    from avatar_meta.training.evaluate import evaluate_checkpoint, summarise
    from avatar_meta.training.meta_loop import train_algorithm

    torch.set_num_threads(1)
    run_dir = prepare_run_dir(config.output.results_dir, run_id, resume, force)
    dump_config(config, run_dir / "config.yaml")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    timing: dict[str, Any] = {}
    curves: dict[str, list[dict[str, float]]] = {}
    heldout = config.task_distribution().heldout()
    algorithms = config.meta.algorithms
    deadline = None
    baselines = None
    if config.meta.job_budget_s is not None:  # baselines first: meta-training gets the rest
        deadline = t0 + config.meta.job_budget_s - REPORT_RESERVE_S
        baselines = run_baselines(config, run_dir, heldout)
        timing["baselines_s"] = time.perf_counter() - t0
    keys = ensure_keys(run_dir)
    env = make_env(
        config,
        log_folder=str((run_dir / "logs").resolve()),
        policy_public_key=str((keys / "public.pem").resolve()),
    )
    writer = _writer(config, run_dir)
    try:
        with _progress(config) as progress:
            for i, algo in enumerate(algorithms):
                share = None  # an equal share of what is left for each algorithm still to train
                if deadline is not None:
                    now = time.perf_counter()
                    share = now + (deadline - now) / (len(algorithms) - i)
                state = train_algorithm(
                    algo,
                    config,
                    env,
                    run_dir,
                    resume=resume,
                    writer=writer,
                    progress=progress,
                    deadline=share,
                    reserve_env_steps=evaluation_env_steps(config),
                )
                curves[algo] = state.curve
                timing[algo] = {
                    "meta_iterations": state.iteration,
                    "env_steps": state.env_steps,
                    "env_s": state.env_seconds,
                    "learn_s": state.learn_seconds,
                    "env_steps_per_s": state.env_steps / max(state.env_seconds, 1e-9),
                }
        t_eval = time.perf_counter()
        records: list[HeldoutRecord] = []
        adapted: dict[str, Any] = {}
        for algo in algorithms:
            records += evaluate_checkpoint(algo, config, env, run_dir, heldout, adapted)
        timing["evaluation_s"] = time.perf_counter() - t_eval
        t_check = time.perf_counter()
        check_stability(config, env, run_dir, heldout)
        timing["stability_s"] = time.perf_counter() - t_check
        streaming = stream_first_algorithm(env, config, run_dir, heldout, adapted)
    finally:
        env.close()
        if writer is not None:
            writer.close()
    save_records(records, run_dir / META_RECORDS)
    (run_dir / CURVES).write_text(json.dumps(curves))
    logger.info("held-out returns by step: %s", json.dumps(summarise(records)))
    if baselines is None:
        t_base = time.perf_counter()
        baselines = run_baselines(config, run_dir, heldout)
        timing["baselines_s"] = time.perf_counter() - t_base
    base_records, base_curves, validation = baselines
    timing["total_s"] = time.perf_counter() - t0
    (run_dir / TIMING).write_text(json.dumps(timing, indent=1))
    (run_dir / STREAMING).write_text(json.dumps(streaming, indent=1))
    export_meta_policy(run_dir, records, config)
    finish_report(run_dir, records + base_records, {**curves, **base_curves}, config, validation)
    return run_dir


def evaluation_env_steps(config: RunConfig) -> int:
    """Upper bound on the env steps of one meta-learner's held-out evaluation and stability
    check (every episode at the step limit): what a job budget reserves per algorithm."""
    ev = config.eval
    episodes = config.tasks.n_heldout * ev.episodes_per_step
    rounds = ev.adaptation_steps + 1 + 2 * 2 * ev.stability_repeats  # stability: 2 ckpts x 2
    return episodes * rounds * contract.MAX_EPISODE_STEPS


def check_stability(config: RunConfig, env: Any, run_dir: Path, heldout: list[Any]) -> None:
    """Write `heldout_stability.json`: every algorithm's final and best checkpoints adapted
    on the held-out tasks (`training.evaluate.stability_records`), read by `finish_report`."""
    from avatar_meta.training.checkpoints import checkpoint_path
    from avatar_meta.training.evaluate import stability_records

    checks: list[HeldoutRecord] = []
    for algo in config.meta.algorithms:
        if checkpoint_path(run_dir, algo).exists():
            checks += stability_records(algo, config, env, run_dir, heldout)
    save_records(checks, run_dir / STABILITY_RECORDS)


def ensure_keys(run_dir: Path) -> Path:
    """The run's signing key pair `keys/{private,public}.pem`, created on first use."""
    from avatar_meta.export.signing import write_keypair

    keys = run_dir / "keys"
    if not (keys / "private.pem").exists():
        write_keypair(keys)
    return keys


def stream_first_algorithm(
    env: Any, config: RunConfig, run_dir: Path, heldout: list[Any], adapted: dict[str, Any]
) -> dict[str, Any]:
    """Push the first meta-learner's adapted held-out policies into the world
    (`training.streaming`); a failure is logged and reported, never fatal."""
    from avatar_meta.training.checkpoints import checkpoint_path, load_checkpoint
    from avatar_meta.training.streaming import stream_adapted_policies

    algo = config.meta.algorithms[0]
    try:
        buffers = load_checkpoint(checkpoint_path(run_dir, algo))["buffers"]
        out = stream_adapted_policies(
            env,
            config.policy_spec(),
            buffers,
            heldout,
            adapted[algo],
            run_dir / "keys" / "private.pem",
            version=config.eval.adaptation_steps,
        )
    except Exception as err:  # the run's results do not depend on this demonstration
        logger.warning("streaming adapted policies into the world failed: %s", err)
        out = {"error": f"{type(err).__name__}: {err}"}
    return {"algorithm": algo, **out}


def export_meta_policy(run_dir: Path, records: list[HeldoutRecord], config: RunConfig) -> None:
    """Write the best meta-learner's initial policy as `<Behavior>.onnx` (Sentis contract) and
    `<Behavior>.weights.bin` (signed PolicyWeights envelope) into the run folder; with one
    meta-policy per family these hold the first family's, and every family's is also written
    as `<Behavior>.<family>.onnx` / `.weights.bin` (task id = the family).

    The signing key is `keys/private.pem` in the run folder, created on first use; games
    verify with `keys/public.pem` (or pass your own key through `avatar-meta export`).
    """
    from avatar_meta.export.checkpoint import export_checkpoint, policy_keys
    from avatar_meta.report.metrics import best_meta_learner
    from avatar_meta.training.checkpoints import SHARED_KEY, checkpoint_path

    best = best_meta_learner(records) or config.meta.algorithms[0]
    keys = ensure_keys(run_dir)

    path = checkpoint_path(run_dir, best)
    result = export_checkpoint(path, run_dir, sign_key=keys / "private.pem", task_id="meta")
    logger.info("exported %s meta-policy: %s, %s", best, result.onnx, result.weights)
    for family in policy_keys(path):
        if family == SHARED_KEY:
            continue
        stem = f"{contract.BEHAVIOR_NAME}.{family}"
        export_checkpoint(
            path, run_dir, sign_key=keys / "private.pem", task_id=family, family=family, stem=stem
        )
        logger.info("exported %s meta-policy for %s: %s.onnx", best, family, stem)


def multitask_loss(config: RunConfig) -> str:
    """`multitask_finetune`'s pretraining loss: it sees the scripted expert whenever a
    meta-learner of the run does. Strategy search always learns from the expert's labels
    (DAgger); the gradient-based learners do per `meta.outer_loss`."""
    if config.meta.outer_loss == "ppo" and "search" in config.meta.algorithms:
        return "imitation"
    return config.meta.outer_loss


def baseline_config(config: RunConfig) -> Any:
    """`training.baselines.BaselineConfig` from our `baselines` and `eval` sections."""
    from avatar_meta.training import baselines as bl

    b = config.baselines
    base = bl.BaselineConfig()
    finetune = replace(
        base.finetune,
        episodes_per_step=config.eval.episodes_per_step,
        steps=config.eval.adaptation_steps,
        lr_candidates=tuple(b.lr_candidates),
    )
    return replace(
        base,
        methods=tuple(b.methods),
        seed=config.env.seed,
        hidden=tuple(config.policy.hidden),
        eval_episodes=b.eval_episodes,
        n_validation=b.n_validation,
        finetune=finetune,
        multitask=replace(
            base.multitask,
            env_steps=b.multitask_env_steps,
            loss=multitask_loss(config),
            imitation_weight=config.meta.imitation_weight,
        ),
        per_family=config.meta.per_family,
        oracle=replace(base.oracle, env_steps=b.oracle_env_steps, patience=b.oracle_patience),
    )


def run_baselines(
    config: RunConfig, run_dir: Path, heldout: list[Any]
) -> tuple[list[HeldoutRecord], dict[str, list[dict[str, float]]], dict[str, Any]]:
    """Baselines on the same held-out tasks (in a fresh env: the meta env is closed)."""
    if not config.baselines.methods:
        return [], {}, {}
    try:
        from avatar_meta.training import baselines as bl
    except ImportError as err:  # the baselines module is optional while it is being built
        logger.warning("baselines skipped: %s", err)
        return [], {}, {}
    dist = config.task_distribution()
    factory = lambda: make_env(config, log_folder=str((run_dir / "logs").resolve()))  # noqa: E731
    results = bl.run_baselines(baseline_config(config), factory, heldout, dist.train_tasks())
    save_records(results.records, run_dir / BASELINE_RECORDS)
    return list(results.records), dict(results.training_curves), dict(results.oracle_validation)


def finish_report(
    run_dir: Path,
    records: list[HeldoutRecord],
    curves: dict[str, list[dict[str, float]]],
    config: RunConfig,
    validation: dict[str, Any] | None = None,
) -> Path | None:
    """`report.write_report(...)`; returns report.md's path (None if the module is missing)."""
    try:
        from avatar_meta.report import write_report
    except ImportError as err:
        logger.warning("report skipped (avatar_meta.report not available: %s)", err)
        return None
    extra: dict[str, Any] = {}
    if (run_dir / TIMING).exists():
        extra["timing"] = json.loads((run_dir / TIMING).read_text())
    if (run_dir / STREAMING).exists():
        extra["streaming"] = json.loads((run_dir / STREAMING).read_text())
    if validation:
        extra["oracle_validation"] = validation
    checks = (
        load_records(run_dir / STABILITY_RECORDS) if (run_dir / STABILITY_RECORDS).exists() else []
    )
    paths = write_report(run_dir, records, curves, config, _versions(), extra, checks)
    return Path(paths["report"])


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    from avatar_meta import contract
    from avatar_meta.world.unity_client import COMMUNICATION_VERSION

    out = {"protocol": COMMUNICATION_VERSION, "contract": contract.CONTRACT_VERSION}
    for name in ("avatar-meta", "mlagents", "mlagents-envs", "torch"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def evaluate_run(results_dir: str | Path, run_id: str) -> Path:
    """Re-run the meta-learners' held-out evaluation from the saved checkpoints, then redo
    the report with the saved baseline records."""
    from avatar_meta.training.checkpoints import checkpoint_path
    from avatar_meta.training.evaluate import evaluate_checkpoint

    torch.set_num_threads(1)
    run_dir = Path(results_dir) / run_id
    if not (run_dir / "config.yaml").is_file():
        raise RunExistsError(f"no run at {run_dir} (config.yaml missing); train it first")
    config = load_config(run_dir / "config.yaml")
    algos = [a for a in config.meta.algorithms if checkpoint_path(run_dir, a).exists()]
    if not algos:
        raise RunExistsError(f"{run_dir}/checkpoints has no checkpoint to evaluate")
    heldout = config.task_distribution().heldout()
    env = make_env(config, log_folder=str((run_dir / "logs").resolve()))
    try:
        records = [r for a in algos for r in evaluate_checkpoint(a, config, env, run_dir, heldout)]
        check_stability(config, env, run_dir, heldout)
    finally:
        env.close()
    save_records(records, run_dir / META_RECORDS)
    base: list[HeldoutRecord] = []
    if (run_dir / BASELINE_RECORDS).exists():
        base = load_records(run_dir / BASELINE_RECORDS)
    curves = json.loads((run_dir / CURVES).read_text()) if (run_dir / CURVES).exists() else {}
    finish_report(run_dir, records + base, curves, config)
    return run_dir
