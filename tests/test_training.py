"""Meta-training loop, checkpoints, run-folder semantics, SIGKILL + --resume, protocol path."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

from avatar_meta.config import RunConfig, config_from_dict
from avatar_meta.envs.rollouts import TaskEnv
from avatar_meta.training.checkpoints import MetaState, checkpoint_path, load_checkpoint
from avatar_meta.training.common import make_env
from avatar_meta.training.evaluate import evaluate_checkpoint
from avatar_meta.training.meta_loop import train_algorithm
from avatar_meta.training.records import RECORD_KEYS, HeldoutRecord, validate_record
from avatar_meta.training.run import RunExistsError, prepare_run_dir

torch.set_num_threads(1)

TINY = {
    "env": {"inprocess": True, "num_areas": 12},
    "tasks": {"n_train": 12, "n_heldout": 6, "families": ["reach_landmark", "follow_visitor"]},
    "meta": {
        "meta_batch_size": 4,
        "support_episodes": 1,
        "query_episodes": 1,
        "meta_iterations": 2,
        "reptile_inner_steps": 2,
    },
    "eval": {"episodes_per_step": 1, "adaptation_steps": 3},
    "baselines": {"methods": []},
    "output": {"progress": False, "tensorboard": False},
}


def tiny(**meta: object) -> RunConfig:
    data = {k: dict(v) for k, v in TINY.items()}
    data["meta"].update(meta)
    return config_from_dict(data)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd", "reptile"])
def test_each_algorithm_trains_checkpoints_and_evaluates(algorithm: str, tmp_path: Path) -> None:
    config = tiny(algorithms=[algorithm])
    env = make_env(config)
    state = train_algorithm(algorithm, config, env, tmp_path)
    assert state.iteration == 2 and state.finished
    assert all(math.isfinite(e["meta_loss"]) for e in state.curve)
    ck = load_checkpoint(checkpoint_path(tmp_path, algorithm))
    assert ck["iteration"] == 2 and ck["env_steps"] == state.env_steps > 0
    assert set(ck) >= {"params", "optimizer", "buffers", "np_rng", "torch_generator", "config"}
    assert all(torch.isfinite(v).all() for v in ck["params"].values())
    assert float(ck["buffers"]["obs_count"]) > 0
    if algorithm == "metasgd":
        assert ck["metasgd_lrs"] is not None
    heldout = config.task_distribution().heldout()[:4]
    records = evaluate_checkpoint(algorithm, config, env, tmp_path, heldout)
    assert len(records) == 4
    for r in records:
        validate_record(dict(r))
        assert tuple(r) == RECORD_KEYS and len(r["return_by_step"]) == 4
        assert r["method"] == algorithm and r["env_steps"] > 0
    env.close()
    # The run folder's exports: Sentis ONNX + a signed PolicyWeights envelope.
    from avatar_meta import contract
    from avatar_meta.export import signing
    from avatar_meta.export.onnx_contract import check_sentis_contract
    from avatar_meta.training.run import export_meta_policy

    export_meta_policy(tmp_path, records, config)
    onnx_path = tmp_path / f"{contract.BEHAVIOR_NAME}.onnx"
    problems = check_sentis_contract(
        onnx_path,
        [(contract.OBSERVATION_SIZE,)],
        contract.NUM_CONTINUOUS_ACTIONS,
        list(contract.DISCRETE_BRANCHES),
    )
    assert problems == []
    envelope = (tmp_path / f"{contract.BEHAVIOR_NAME}.weights.bin").read_bytes()
    public = signing.load_public_key(tmp_path / "keys" / "public.pem")
    assert signing.verify(envelope, public).behavior_name == contract.BEHAVIOR_NAME
    for family in ("reach_landmark", "follow_visitor"):  # one meta-policy per family
        stem = f"{contract.BEHAVIOR_NAME}.{family}"
        assert (tmp_path / f"{stem}.onnx").is_file()
        weights = signing.verify((tmp_path / f"{stem}.weights.bin").read_bytes(), public)
        assert weights.task_id == family


def test_pretraining_initialises_the_meta_parameters(tmp_path: Path) -> None:
    """meta.pretrain_env_steps: the meta-parameters and normalisation statistics start from
    multi-task PPO, the log-std is reset to its initial value, and the pretraining env steps
    count in the algorithm's total."""
    from avatar_meta.rl import Policy
    from avatar_meta.training.meta_loop import init_state, pretrain_meta_params

    config = tiny(algorithms=["maml"], meta_iterations=1, pretrain_env_steps=2000)
    policy = Policy(config.policy_spec())
    env = make_env(config)
    state = init_state("maml", config, policy)
    fresh = {k: v.clone() for k, v in state.init_params("reach_landmark").items()}
    pretrain_meta_params(state, config, env, policy)
    assert state.env_steps >= 2000 and float(state.buffers["obs_count"]) > 0
    after = state.init_params("reach_landmark")
    moved = {k: float((after[k] - fresh[k]).abs().max()) for k in fresh}
    for k, v in state.init_params("follow_visitor").items():  # every family starts there
        assert torch.equal(v, after[k])
    assert moved["actor.log_std"] == 0.0  # exploration reset
    for prefix in ("actor.", "critic."):  # both networks were trained
        assert max(v for k, v in moved.items() if k.startswith(prefix)) > 1e-2
    # through the loop: the pretraining steps are in the run's env steps and checkpoint
    pre = train_algorithm("maml", config, env, tmp_path / "pre")
    base = train_algorithm("maml", tiny(algorithms=["maml"], meta_iterations=1), env, tmp_path)
    env.close()
    assert pre.env_steps >= base.env_steps + 2000
    assert load_checkpoint(checkpoint_path(tmp_path / "pre", "maml"))["env_steps"] == pre.env_steps


def test_outer_minibatches_split_tasks_and_take_more_steps(tmp_path: Path) -> None:
    from avatar_meta.meta import TaskBatch
    from avatar_meta.training.task_groups import task_minibatches

    support = torch.arange(10.0).reshape(5, 2)
    query = support + 100
    parts = task_minibatches(
        TaskBatch(_Obs(support), _Obs(query)), 2, torch.Generator().manual_seed(0)
    )
    assert [int(p.support.obs.shape[0]) for p in parts] == [3, 2]
    seen = torch.cat([p.support.obs for p in parts])
    assert sorted(seen[:, 0].tolist()) == [0.0, 2.0, 4.0, 6.0, 8.0]
    for p in parts:  # support and query stay paired per task
        assert torch.equal(p.query.obs, p.support.obs + 100)
    # shared meta-policy: 4 tasks in 4 minibatches; per family: each family's 2 tasks in 2
    for per_family, steps in ((False, 4), (True, 2)):
        config = tiny(
            algorithms=["maml"],
            meta_iterations=1,
            outer_epochs=2,
            outer_minibatches=4,
            per_family=per_family,
        )
        env = make_env(config)
        state = train_algorithm("maml", config, env, tmp_path / str(per_family))
        env.close()
        opt = state.optimizer.state_dict()["state"]
        assert int(next(iter(opt.values()))["step"]) == 2 * steps


def test_per_family_meta_policies_train_and_evaluate_separately(tmp_path: Path) -> None:
    """One meta-policy per family: both move during meta-training and end up different; the
    checkpoint holds both; evaluation starts each held-out task from its own family's policy
    (proved by breaking one family's policy and watching only that family's returns change)."""
    from avatar_meta.training.checkpoints import SHARED_KEY, policy_keys

    config = tiny(algorithms=["maml"], meta_iterations=1)
    assert policy_keys(config) == ["reach_landmark", "follow_visitor"]
    assert policy_keys(tiny(per_family=False)) == [SHARED_KEY]
    env = make_env(config)
    state = train_algorithm("maml", config, env, tmp_path)
    reach, follow = state.init_params("reach_landmark"), state.init_params("follow_visitor")
    assert not torch.equal(reach["actor.0.weight"], follow["actor.0.weight"])
    path = checkpoint_path(tmp_path, "maml")
    ck = load_checkpoint(path)
    assert ck["policy_keys"] == ["reach_landmark", "follow_visitor"]
    assert torch.equal(ck["params"]["actor.0.weight"], reach["actor.0.weight"])
    env.close()
    heldout = config.task_distribution().heldout()
    env = make_env(config)
    before = evaluate_checkpoint("maml", config, env, tmp_path, heldout)
    env.close()
    # turn the follow policy around for good: full speed backwards, whatever it sees
    ck["params_by_key"]["follow_visitor"]["actor.mu.weight"].zero_()
    ck["params_by_key"]["follow_visitor"]["actor.mu.bias"].copy_(torch.tensor([-50.0, 50.0]))
    torch.save(ck, path)
    env = make_env(config)
    after = evaluate_checkpoint("maml", config, env, tmp_path, heldout)
    env.close()
    for b, a in zip(before, after, strict=True):
        if b["family"] == "reach_landmark":
            assert a["return_by_step"][0] == b["return_by_step"][0]
        else:
            assert a["return_by_step"][0] != b["return_by_step"][0]


class _Obs(NamedTuple):
    obs: torch.Tensor


def test_outer_lr_anneals_and_the_best_window_checkpoint_is_kept(tmp_path: Path) -> None:
    """meta.outer_lr_final_scale: a cosine from 1 to the scale over meta_iterations; the
    checkpoint ending the best training window is kept as <algorithm>.best.pt, and the
    stability check adapts it and the final one on the same tasks with the same seeds."""
    from avatar_meta.report.metrics import BEST_SUFFIX, is_best_window
    from avatar_meta.training.checkpoints import best_checkpoint_path
    from avatar_meta.training.evaluate import stability_records

    config = tiny(algorithms=["maml"], meta_iterations=6, outer_lr_final_scale=0.1)
    config.eval.stability_repeats = 2
    env = make_env(config)
    state = train_algorithm("maml", config, env, tmp_path)
    factors = [e["outer_lr_factor"] for e in state.curve]
    expected = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / 6)) for i in range(6)]
    assert factors == pytest.approx(expected)
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(
        config.meta.outer_lr * expected[-1]
    )
    best_at = max(i for i in range(1, 7) if is_best_window(state.curve[:i]))
    best_path = best_checkpoint_path(tmp_path, "maml")
    assert load_checkpoint(best_path)["iteration"] == best_at
    heldout = config.task_distribution().heldout()[:3]
    records = stability_records("maml", config, env, tmp_path, heldout)
    if best_at == 6:  # the final checkpoint is the best: nothing to compare
        assert records == []
    # an earlier best checkpoint: both are adapted once on every task, twice
    ck = load_checkpoint(checkpoint_path(tmp_path, "maml"))
    ck["iteration"] = 1
    torch.save(ck, best_path)
    records = stability_records("maml", config, env, tmp_path, heldout)
    env.close()
    assert [r["method"] for r in records] == ["maml"] * 6 + ["maml" + BEST_SUFFIX] * 6
    assert [r["task_id"] for r in records[:6]] == [t.task_id for t in heldout] * 2
    assert all(len(r["return_by_step"]) == 2 for r in records)
    config.eval.stability_repeats = 0
    assert stability_records("maml", config, make_env(config), tmp_path, heldout) == []


def test_job_budget_runs_baselines_first_and_ends_meta_training_in_time(tmp_path: Path) -> None:
    """meta.job_budget_s: baselines first, then meta-training stops early enough for its
    evaluation and the report, and the outer learning rate anneals over that shorter run."""
    from avatar_meta.training import run

    data = {k: dict(v) for k, v in TINY.items()}
    training_s = 10.0
    data["meta"].update(
        meta_iterations=100_000,
        job_budget_s=run.REPORT_RESERVE_S + training_s,
        outer_lr_final_scale=0.1,
    )
    data["baselines"] = {"methods": ["random"], "eval_episodes": 1}
    data["output"] = {**data["output"], "results_dir": str(tmp_path)}
    run_dir = run.train(config_from_dict(data), "budget")
    timing = json.loads((run_dir / "timing.json").read_text())
    assert next(iter(timing)) == "baselines_s"  # measured before meta-training started
    curve = json.loads((run_dir / "training_curves.json").read_text())["maml"]
    assert 2 <= len(curve) < 100_000
    per_iteration = curve[-1]["wall_s"] / len(curve)
    assert curve[-1]["wall_s"] <= training_s - timing["baselines_s"] + 2 * per_iteration + 0.5
    assert curve[-1]["outer_lr_factor"] < 0.4  # the cosine reached its end by the deadline
    assert (run_dir / "metrics.json").exists()


def test_resume_in_process_continues_the_counter(tmp_path: Path) -> None:
    config = tiny(algorithms=["maml"])
    env = make_env(config)
    train_algorithm("maml", config, env, tmp_path)
    longer = tiny(algorithms=["maml"], meta_iterations=3)
    state = train_algorithm("maml", longer, env, tmp_path, resume=True)
    assert state.iteration == 3 and [e["iteration"] for e in state.curve] == [1.0, 2.0, 3.0]
    env.close()


def test_run_folder_semantics(tmp_path: Path) -> None:
    run = prepare_run_dir(tmp_path, "r", resume=False, force=False)
    (run / "marker").write_text("x")
    with pytest.raises(RunExistsError, match="--resume.*--force"):
        prepare_run_dir(tmp_path, "r", resume=False, force=False)
    assert (prepare_run_dir(tmp_path, "r", resume=True, force=False) / "marker").exists()
    assert not (prepare_run_dir(tmp_path, "r", resume=False, force=True) / "marker").exists()
    with pytest.raises(RunExistsError, match="no run folder"):
        prepare_run_dir(tmp_path, "other", resume=True, force=False)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "avatar_meta.cli", *args]


def test_sigkill_then_resume_continues_from_last_completed_iteration(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "tasks: {n_train: 12, n_heldout: 4, families: [reach_landmark, follow_visitor]}\n"
        "meta: {meta_batch_size: 4, support_episodes: 1, query_episodes: 1, meta_iterations: 40}\n"
        "eval: {episodes_per_step: 1}\n"
        "env: {num_areas: 8}\nbaselines: {methods: []}\noutput: {progress: false}\n"
    )
    common = [str(cfg), "--run-id", "k", "--results-dir", str(tmp_path), "--inprocess"]
    proc = subprocess.Popen(_cli("train", *common), stderr=subprocess.DEVNULL)
    ck = checkpoint_path(tmp_path / "k", "maml")
    deadline = time.time() + 60
    while time.time() < deadline:
        if ck.exists() and load_checkpoint(ck)["iteration"] >= 2:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(ck)["iteration"]  # whole and loadable after SIGKILL
    assert 2 <= killed_at < 40
    # without --resume/--force the existing run is refused with a helpful message
    refused = subprocess.run(_cli("train", *common), capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    cfg.write_text(
        cfg.read_text().replace("meta_iterations: 40", f"meta_iterations: {killed_at + 2}")
    )
    done = subprocess.run(_cli("train", *common, "--resume"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    final = load_checkpoint(ck)
    iters = [int(e["iteration"]) for e in final["curve"]]
    assert iters == list(range(1, killed_at + 3))  # continued at killed_at + 1, no gap or repeat
    assert final["finished"] and not list(ck.parent.glob("*.tmp"))
    records = tmp_path / "k" / "heldout_meta.json"
    assert records.exists()
    # `avatar-meta evaluate` re-runs the held-out evaluation of the finished run
    first = json.loads(records.read_text())
    records.unlink()
    (tmp_path / "k" / "report.md").unlink()
    again = subprocess.run(
        _cli("evaluate", "--run-id", "k", "--results-dir", str(tmp_path)),
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    redone = json.loads(records.read_text())
    assert [(r["task"], r["method"]) for r in redone] == [(r["task"], r["method"]) for r in first]
    assert all(len(r["return_by_step"]) == 4 for r in redone)
    assert (tmp_path / "k" / "report.md").exists()
    missing = subprocess.run(
        _cli("evaluate", "--run-id", "nope", "--results-dir", str(tmp_path)),
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and "train it first" in missing.stderr


@pytest.mark.slow
def test_protocol_path_runs_through_the_real_world(tmp_path: Path) -> None:
    data = {k: dict(v) for k, v in TINY.items()}
    data["env"] = {"num_areas": 8, "base_port": 5640}
    data["meta"]["meta_iterations"] = 1
    config = config_from_dict(data)
    env = make_env(config)
    try:
        state = train_algorithm("maml", config, env, tmp_path)
    finally:
        env.close()
    assert state.iteration == 1 and state.env_steps > 0
    assert math.isfinite(state.curve[0]["meta_loss"])


@pytest.mark.slow
def test_adapted_policies_stream_into_the_world_and_drive_it(tmp_path: Path) -> None:
    """The job's last step through the protocol: adapted policies signed with the run's key
    are accepted by the world, which then drives those areas itself (the trainer sends
    zeros); signed with another key they are refused and nothing is driven."""
    from avatar_meta.export import signing
    from avatar_meta.meta.core import stack_tasks
    from avatar_meta.rl import Policy
    from avatar_meta.training.streaming import stream_adapted_policies

    data = {k: dict(v) for k, v in TINY.items()}
    data["env"] = {"num_areas": 4, "base_port": 5660}
    config = config_from_dict(data)
    signing.write_keypair(tmp_path / "run")
    signing.write_keypair(tmp_path / "other")
    policy = Policy(config.policy_spec())
    tasks = config.task_distribution().heldout()[:3]
    inits = [policy.init(seed=i) for i in range(3)]
    adapted = stack_tasks([p for p, _ in inits])
    buffers = inits[0][1]
    env = make_env(config, policy_public_key=str(tmp_path / "run" / "public.pem"))
    try:
        out = stream_adapted_policies(
            env, config.policy_spec(), buffers, tasks, adapted, tmp_path / "run" / "private.pem", 3
        )
        assert out["policies"] == 3 and out["accepted"] == 3 and out["refused"] == []
        assert len(out["world_returns"]) == 3
        assert all(math.isfinite(r) for r in out["world_returns"].values())
        bad = stream_adapted_policies(
            env,
            config.policy_spec(),
            buffers,
            tasks,
            adapted,
            tmp_path / "other" / "private.pem",
            4,
        )
    finally:
        env.close()
    assert bad["accepted"] == 0 and len(bad["refused"]) == 3 and bad["unanswered"] == 0
    assert all("signature" in reason or "key" in reason for reason in bad["refused"])


def test_training_scorer_normalises_against_scripted_and_random() -> None:
    from avatar_meta.training.scoring import TrainingScorer

    tasks = tiny().task_distribution().train_tasks()[:3]
    scorer = TrainingScorer(episodes=2)
    lo, hi = scorer.references(tasks)
    assert np.all(hi > lo)  # the scripted controller beats random actions
    assert scorer.score(tasks, hi) == pytest.approx(1.0)
    assert scorer.score(tasks, lo) == pytest.approx(0.0)
    assert scorer.score(tasks, (lo + hi) / 2) == pytest.approx(0.5)
    again = scorer.references(list(reversed(tasks)))  # cached per task, in the caller's order
    assert np.array_equal(again[1], hi[::-1])
    two = TrainingScorer(episodes=2, max_tasks=2)  # scores tasks 0 and 2 only
    best = two.references([tasks[0], tasks[2]])[1]
    assert two.score(tasks, np.array([best[0], -1e9, best[1]])) == pytest.approx(1.0)
    assert tasks[1].task_id not in two._refs  # its references were never computed


def test_training_scorer_reads_a_fixed_subset_of_a_large_pool() -> None:
    """A batch larger than max_tasks is scored on the tasks of a fixed subset of the pool,
    so references stop being computed once that subset is cached."""
    from avatar_meta.training.scoring import TrainingScorer

    pool = tiny().task_distribution().train_tasks()
    assert len(pool) >= 12
    scorer = TrainingScorer(episodes=1, max_tasks=3)
    first, second = pool[:12], pool[6:] + pool[:6]  # the same tasks, in another order
    picked = {first[i].task_id for i in scorer.scored(first)}
    again = {second[i].task_id for i in scorer.scored(second)}
    assert picked == again and 0 < len(picked) <= 3  # membership depends on the task only
    scorer.score(first, np.zeros(len(first)))
    assert set(scorer._refs) == picked  # only the subset's references were computed
    whole = TrainingScorer(episodes=1, max_tasks=3, pool=pool)  # the pool's subset at once
    whole.score(first, np.zeros(len(first)))
    subset = {t.task_id for t in pool if zlib.crc32(t.task_id.encode()) % 4 == 0}
    assert set(whole._refs) == subset and picked <= subset


def test_guided_context_training_adapts_only_the_context_and_exports_plain(
    tmp_path: Path,
) -> None:
    """meta.outer_loss imitation + meta.adapt context: the loop trains on expert labels,
    held-out adaptation changes only `actor.context`, and the exports fold the context away
    (the Sentis contract and the C# evaluator see the plain MLP)."""
    from avatar_meta.rl import Policy
    from avatar_meta.rl.policy import CONTEXT_KEYS

    data = {k: dict(v) for k, v in TINY.items()}
    data["meta"].update(outer_loss="imitation", adapt="context", inner_lr=5.0)
    data["policy"] = {"context_size": 4}
    config = config_from_dict(data)
    env = make_env(config)
    state = train_algorithm("maml", config, env, tmp_path)
    assert state.iteration == 2 and all(math.isfinite(e["meta_loss"]) for e in state.curve)
    init = state.init_params("reach_landmark")
    assert set(CONTEXT_KEYS) <= set(init)
    fresh = Policy(config.policy_spec()).init(seed=config.env.seed)[0]
    assert not torch.equal(init["actor.ctx_in.weight"], fresh["actor.ctx_in.weight"])  # trained

    assert changed_by_one_adaptation("maml", config, env, state) == {"actor.context"}
    records = evaluate_checkpoint(
        "maml", config, env, tmp_path, config.task_distribution().heldout()[:2]
    )
    env.close()
    assert_run_exports_meet_the_sentis_contract(tmp_path, records, config)


def changed_by_one_adaptation(
    algorithm: str, config: RunConfig, env: TaskEnv, state: MetaState
) -> set[str]:
    """Names of the meta-policy's parameters that one held-out adaptation step changes."""
    from avatar_meta.envs.rollouts import collect
    from avatar_meta.rl import Policy
    from avatar_meta.training.common import per_task_policy_fn, rollouts_to_tasks
    from avatar_meta.training.evaluate import make_adapt_fn

    policy = Policy(config.policy_spec())
    task = config.task_distribution().heldout()[0]
    stacked = {k: v.detach()[None] for k, v in state.init_params(task.family).items()}
    act = per_task_policy_fn(policy, stacked, state.buffers, torch.Generator().manual_seed(0))
    batch = rollouts_to_tasks(collect(env, act, [task], 1), 0.99, 0.95)
    adapted = make_adapt_fn(algorithm, config, policy, state.buffers)(stacked, batch, 0)
    return {k for k in stacked if not torch.equal(adapted[k], stacked[k])}


def assert_run_exports_meet_the_sentis_contract(
    run_dir: Path, records: list[HeldoutRecord], config: RunConfig
) -> None:
    """The run folder's ONNX export of the best meta-learner loads as the Sentis contract."""
    from avatar_meta import contract
    from avatar_meta.export.onnx_contract import check_sentis_contract
    from avatar_meta.training.run import export_meta_policy

    export_meta_policy(run_dir, records, config)
    problems = check_sentis_contract(
        run_dir / f"{contract.BEHAVIOR_NAME}.onnx",
        [(contract.OBSERVATION_SIZE,)],
        contract.NUM_CONTINUOUS_ACTIONS,
        list(contract.DISCRETE_BRANCHES),
    )
    assert problems == []


def test_encoder_trains_resumes_adapts_only_the_context_and_exports_plain(
    tmp_path: Path,
) -> None:
    """meta.algorithms [encoder]: the loop trains the task encoder with the policy (its
    weights are in the checkpoint and move), `--resume` restores them, held-out adaptation
    writes only `actor.context` among the policy's weights, and the exports are the plain
    MLP the Sentis contract expects."""
    from avatar_meta.meta.encoder import init_encoder
    from avatar_meta.rl import Policy

    data = {k: dict(v) for k, v in TINY.items()}
    data["meta"].update(algorithms=["encoder"], outer_loss="ppo+imitation", encoder_hidden=8)
    data["policy"] = {"context_size": 4}
    config = config_from_dict(data)
    env = make_env(config)
    state = train_algorithm("encoder", config, env, tmp_path)
    assert state.iteration == 2 and all(math.isfinite(e["meta_loss"]) for e in state.curve)
    policy = Policy(config.policy_spec())
    fresh = init_encoder(policy.spec, 8, config.env.seed)
    init = state.init_params("reach_landmark")
    assert not torch.equal(init["encoder.out.weight"], fresh["encoder.out.weight"])  # trained

    more = config_from_dict({**data, "meta": {**data["meta"], "meta_iterations": 3}})
    resumed = train_algorithm("encoder", more, env, tmp_path, resume=True)
    assert resumed.iteration == 3
    ck = load_checkpoint(checkpoint_path(tmp_path, "encoder"))
    assert "encoder.out.weight" in ck["params_by_key"]["follow_visitor"]

    assert changed_by_one_adaptation("encoder", config, env, resumed) == {"actor.context"}
    records = evaluate_checkpoint(
        "encoder", config, env, tmp_path, config.task_distribution().heldout()[:2]
    )
    env.close()
    assert all(len(r["return_by_step"]) == 4 and r["method"] == "encoder" for r in records)
    assert_run_exports_meet_the_sentis_contract(tmp_path, records, config)
