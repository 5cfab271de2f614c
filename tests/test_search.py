"""Strategy search (meta/search.py): the probe cover, the best-probe rule, the imitation
learner, and a run through the loop, the held-out evaluation, resume and the exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_meta.config import config_from_dict
from avatar_meta.meta.search import (
    CONTEXT,
    ContextImitation,
    LabelledReplay,
    ProbeSearch,
    choice_dims,
    cover,
    refinements,
    task_contexts,
)
from avatar_meta.rl import Policy, PolicySpec, make_batch
from avatar_meta.rl.losses import GuidedBatch, make_guided_loss, stack_guided
from avatar_meta.tasks import TASK_CODE_SIZE, Task, TaskDistribution

torch.set_num_threads(1)


def family_tasks(family: str, n: int = 300) -> list[Task]:
    dist = TaskDistribution(n_train=n, n_heldout=6, families=[family], seed=3)
    return dist.train_tasks()


@pytest.mark.parametrize(("family", "choices"), [("reach_landmark", 3), ("patrol", 6)])
def test_the_cover_tries_every_discrete_choice_first(family: str, choices: int) -> None:
    """With as many probes as choices, every landmark / every route is a probe, although the
    body's three continuous numbers spread the codes further apart."""
    tasks = family_tasks(family)
    probes = cover(task_contexts(tasks), choices)
    assert probes.shape == (choices, TASK_CODE_SIZE)
    assert len({int(p[:choices].argmax()) for p in probes}) == choices
    again = cover(task_contexts(tasks), choices)
    assert torch.equal(probes, again)


def test_the_cover_is_spread_out_and_made_of_training_codes() -> None:
    codes = task_contexts(family_tasks("keep_distance"))
    probes = cover(codes, 20)
    assert all(any(torch.equal(p, c) for c in codes) for p in probes)
    gaps = torch.cdist(probes, probes) + torch.eye(20) * 1e9
    random = codes[torch.randperm(len(codes), generator=torch.Generator().manual_seed(0))[:20]]
    random_gaps = torch.cdist(random, random) + torch.eye(20) * 1e9
    assert gaps.min() > random_gaps.min()
    assert cover(codes[:5], 20).shape[0] == 5  # never more probes than codes


def test_the_best_probe_shrinks_one_lucky_episode() -> None:
    """A probe measured 21 times (mean 9) beats one tried once (9.5) when the other probes
    earned 0: one pseudo-episode at the task's mean pulls the single try down. Probes that
    never ran rank last."""
    search = ProbeSearch.start(torch.eye(20)[None])
    first = np.zeros((1, 19, 1))
    first[0, 3], first[0, 7] = 9.0, 9.5
    search.record(np.arange(19)[None], first)  # probe 19 never runs
    assert search.best(2).tolist() == [[7, 3]]
    search.record(np.array([[3]]), np.full((1, 1, 20), 9.0))
    assert search.best(2).tolist() == [[3, 7]]
    assert int(search.best(20)[0, -1]) == 19
    assert torch.equal(search.contexts(search.best(1)), torch.eye(20)[3][None, None])
    assert search.count.sum() == 39 and search.count[0, 3] == 21


@pytest.mark.parametrize("family", ["follow_visitor", "pace_match"])
def test_refinements_zoom_in_between_the_probes(family: str) -> None:
    """The new hypotheses keep the centre's discrete choices (pace_match's side), are
    training codes, differ from the centre, and sit closer to it than its nearest other
    probe (they fall inside the centre's share of the pool)."""
    codes = task_contexts(family_tasks(family))
    probes = cover(codes, 16)
    centre = probes[5]
    new = refinements(codes, centre, 3, len(codes) // 16, choice_dims(family))
    assert new.shape == (3, TASK_CODE_SIZE)
    fixed = choice_dims(family)
    assert fixed == ([0, 1] if family == "pace_match" else [])
    assert all(torch.equal(n[fixed], centre[fixed]) for n in new)
    assert all(any(torch.equal(n, c) for c in codes) for n in new)
    assert all(not torch.equal(n, centre) for n in new)
    nearest_probe = (probes - centre).norm(dim=1).sort().values[1]
    assert (new - centre).norm(dim=1).max() < nearest_probe * 1.5


def test_search_extend_adds_unrun_hypotheses() -> None:
    search = ProbeSearch.start(torch.eye(4)[None].repeat(2, 1, 1))
    search.record(np.tile(np.arange(4), (2, 1)), np.ones((2, 4, 1)))
    arms = search.extend(torch.full((2, 2, 4), 7.0))
    assert arms.tolist() == [[4, 5], [4, 5]]
    assert search.probes.shape == (2, 6, 4) and search.count[:, 4:].sum() == 0
    assert int(search.best(6)[0, -1]) in (4, 5)  # unrun rank last
    assert torch.equal(search.contexts(arms)[0, 0], torch.full((4,), 7.0))


def test_labelled_replay_mixes_past_tasks_and_forgets_the_oldest() -> None:
    """Each mix returns this iteration's tasks first, then as many stored ones (with their
    own policy keys and codes); the store keeps the newest `capacity` tasks."""
    spec = PolicySpec(obs_size=5, hidden=(8,), context_size=3)
    generator = torch.Generator().manual_seed(0)
    replay = LabelledReplay(capacity=5)

    def iteration(i: int, n: int) -> tuple[list[GuidedBatch], list[str]]:
        parts = [guided(4 + j, torch.full((3,), float(i)), 10 * i + j, spec) for j in range(n)]
        return parts, [f"family{i}"] * n

    batch, keys = replay.mix(*iteration(0, 3), generator)
    assert keys == ["family0"] * 3 and batch.task_code.shape[0] == 3  # nothing stored yet
    batch, keys = replay.mix(*iteration(1, 3), generator)
    assert keys == ["family1"] * 3 + ["family0"] * 3
    assert torch.equal(batch.task_code[3:, 0], torch.zeros(3, 3))  # old tasks keep their code
    assert [k for k, _ in replay.parts] == ["family0"] * 2 + ["family1"] * 3
    batch, keys = replay.mix(*iteration(2, 2), generator)
    assert len(keys) == 4 and set(keys[2:]) <= {"family0", "family1"}
    off = LabelledReplay(capacity=0)
    off.mix(*iteration(0, 3), generator)
    assert off.mix(*iteration(1, 2), generator)[1] == ["family1"] * 2 and off.parts == []


def guided(n: int, code: torch.Tensor, seed: int, spec: PolicySpec) -> GuidedBatch:
    g = torch.Generator().manual_seed(seed)
    rl = make_batch(
        torch.randn(n, spec.obs_size, generator=g),
        torch.zeros(n, spec.num_discrete, dtype=torch.bool),
        torch.randn(n, spec.num_continuous, generator=g),
        torch.randint(0, spec.num_discrete, (n,), generator=g),
        torch.randn(n, generator=g),
        torch.randn(n, generator=g),
        torch.zeros(n),
        torch.zeros(n),
    )
    expert_cont = torch.rand(n, spec.num_continuous, generator=g) * 2 - 1
    expert_gesture = torch.randint(0, spec.num_discrete, (n, 1), generator=g)
    return GuidedBatch(rl, expert_cont, expert_gesture, code.expand(n, -1))


def test_context_imitation_reads_each_tasks_code_and_updates_per_family() -> None:
    """The loss sets the policy's context to the batch's task code (changing the code changes
    the loss; vmap and the per-task loop agree), and one update moves each family's own
    weights by the gradient of its own tasks only."""
    spec = PolicySpec(hidden=(16, 16), context_size=TASK_CODE_SIZE)
    policy = Policy(spec)
    params, buffers = policy.init(seed=0)
    learner = ContextImitation(make_guided_loss(policy, buffers, None), use_vmap=True)
    codes = torch.randn(3, TASK_CODE_SIZE, generator=torch.Generator().manual_seed(1))
    batch = stack_guided([guided(12, codes[i], i, spec) for i in range(3)])
    stacked = {n: v.expand(3, *v.shape) for n, v in params.items()}
    losses = learner.task_losses(stacked, batch)
    assert losses.shape == (3,) and torch.isfinite(losses).all()
    swapped = GuidedBatch(
        batch.rl, batch.expert_cont, batch.expert_gesture, batch.task_code.flip(0)
    )
    assert not torch.allclose(learner.task_losses(stacked, swapped), losses)
    looped = ContextImitation(make_guided_loss(policy, buffers, None), use_vmap=False)
    torch.testing.assert_close(looped.task_losses(stacked, batch), losses)

    by_key = {k: {n: v.clone().requires_grad_(True) for n, v in params.items()} for k in "ab"}
    optimizer = torch.optim.Adam([v for p in by_key.values() for v in p.values()], lr=1e-2)
    log = learner.update(
        by_key, ["a", "a", "a"], batch, optimizer, torch.Generator(), 3, 1, max_grad_norm=1.0
    )
    assert log["meta_loss"] < log["meta_loss_first_epoch"]
    assert not torch.equal(by_key["a"]["actor.0.weight"], params["actor.0.weight"])
    assert torch.equal(by_key["b"]["actor.0.weight"], params["actor.0.weight"])  # no task of b
    assert torch.equal(by_key["a"][CONTEXT], params[CONTEXT])  # the code replaces it


SEARCH_RUN = {
    "env": {"inprocess": True, "num_areas": 12},
    "tasks": {"n_train": 12, "n_heldout": 6, "families": ["reach_landmark", "follow_visitor"]},
    "policy": {"context_size": TASK_CODE_SIZE, "log_std_init": -1.5},
    "meta": {
        "algorithms": ["search"],
        "meta_batch_size": 6,
        "support_episodes": 1,
        "meta_iterations": 2,
        "outer_epochs": 4,
        "outer_minibatches": 1,  # every Adam step on the whole batch: the losses compare
        "search_probes": 2,  # then the best one gets the support step's other 2 episodes
        "search_finalists": 1,
        "search_refine": 1,  # step 2 shares its 4 episodes with one new hypothesis
        "search_replay": 6,  # from the second iteration on, the first's 6 tasks mix in
        "family_weights": {"follow_visitor": 2.0},  # 4 of the 6 tasks
    },
    "eval": {"episodes_per_step": 4, "adaptation_steps": 3},
    "baselines": {"methods": []},
    "output": {"progress": False, "tensorboard": False},
}


def test_search_trains_resumes_evaluates_and_exports(tmp_path: Path) -> None:
    """The loop imitates the expert with each task's true code (the loss falls within an
    iteration), `--resume` continues, the held-out evaluation runs one episode per probe and
    then the best probe, whose context is the adapted policy's; exports meet the Sentis
    contract; the adaptation service refuses the checkpoint with a message."""
    from tests.test_training import assert_run_exports_meet_the_sentis_contract

    from avatar_meta.rl import Policy
    from avatar_meta.serve.adapter import Adapter
    from avatar_meta.training.checkpoints import checkpoint_path, load_checkpoint
    from avatar_meta.training.common import make_env
    from avatar_meta.training.evaluate import evaluate_search, search_hypotheses
    from avatar_meta.training.meta_loop import train_algorithm
    from avatar_meta.training.records import validate_record

    config = config_from_dict(SEARCH_RUN)
    env = make_env(config)
    state = train_algorithm("search", config, env, tmp_path)
    assert state.iteration == 2
    assert all(e["meta_loss"] < e["meta_loss_first_epoch"] for e in state.curve)
    more = {**SEARCH_RUN, "meta": {**SEARCH_RUN["meta"], "meta_iterations": 3}}
    resumed = train_algorithm("search", config_from_dict(more), env, tmp_path, resume=True)
    assert resumed.iteration == 3

    heldout = config.task_distribution().heldout()
    probes, pools = search_hypotheses(config, heldout)
    assert probes.shape == (6, 2, TASK_CODE_SIZE) and len(pools) == 6
    ck = load_checkpoint(checkpoint_path(tmp_path, "search"))
    keys = [t.family for t in heldout]
    init = {n: torch.stack([ck["params_by_key"][k][n] for k in keys]) for n in ck["params"]}
    adapted: dict[str, dict[str, torch.Tensor]] = {}
    policy = Policy(config.policy_spec())
    records = evaluate_search(
        env, policy, init, ck["buffers"], probes, pools, heldout, config, "search", 0, adapted
    )
    env.close()
    for i, r in enumerate(records):
        validate_record(dict(r))
        assert r["method"] == "search" and len(r["return_by_step"]) == 4
        assert r["env_steps"] >= 16  # 2 probes, 2 more for the finalist, then 3 steps x 4
        chosen = adapted["search"][CONTEXT][i]
        assert any(torch.equal(chosen, p) for p in pools[i])
    assert_run_exports_meet_the_sentis_contract(tmp_path, records, config)
    with pytest.raises(ValueError, match="strategy-search run.*avatar-meta evaluate"):
        Adapter(checkpoint_path(tmp_path, "search"), family="reach_landmark")


def test_search_through_the_real_world(tmp_path: Path) -> None:
    """The same through the protocol (built-in world subprocess, stock UnityEnvironment): the
    imitation labels come from the observations the world sent, and the held-out probes run
    one task in several areas at once."""
    from avatar_meta.training.common import make_env
    from avatar_meta.training.evaluate import evaluate_checkpoint
    from avatar_meta.training.meta_loop import train_algorithm

    data = {**SEARCH_RUN, "env": {"num_areas": 8, "base_port": 5700}}
    data["meta"] = {**SEARCH_RUN["meta"], "meta_iterations": 1}
    config = config_from_dict(data)
    env = make_env(config)
    try:
        state = train_algorithm("search", config, env, tmp_path)
        heldout = config.task_distribution().heldout()[:3]
        records = evaluate_checkpoint("search", config, env, tmp_path, heldout)
    finally:
        env.close()
    assert state.iteration == 1 and state.env_steps > 0
    assert state.curve[0]["meta_loss"] < state.curve[0]["meta_loss_first_epoch"]
    assert [r["task_id"] for r in records] == [t.task_id for t in heldout]
    assert all(len(r["return_by_step"]) == 4 and r["env_steps"] >= 16 for r in records)


def test_search_collects_ahead_in_the_worlds_workers(tmp_path: Path) -> None:
    """`meta.search_collect_ahead` with two real worlds: each batch after the first is
    collected by the workers while the trainer learns; the loop learns, checkpoints and
    resumes as without it, and the curve's wall time is its own (not env + learn). The
    held-out evaluation's probes run in the workers too."""
    from avatar_meta.training.common import make_env
    from avatar_meta.training.evaluate import evaluate_checkpoint
    from avatar_meta.training.meta_loop import train_algorithm

    data = {**SEARCH_RUN, "env": {"num_envs": 2, "num_areas": 4, "base_port": 5740}}
    data["meta"] = {**SEARCH_RUN["meta"], "meta_iterations": 3, "search_collect_ahead": True}
    config = config_from_dict(data)
    env = make_env(config)
    try:
        state = train_algorithm("search", config, env, tmp_path)
        assert state.iteration == 3 and state.env_steps > 0
        assert all(e["meta_loss"] < e["meta_loss_first_epoch"] for e in state.curve)
        walls = [e["wall_s"] for e in state.curve]
        assert walls == sorted(walls) and walls[-1] == pytest.approx(state.wall_seconds)
        more = {**data, "meta": {**data["meta"], "meta_iterations": 4}}
        resumed = train_algorithm("search", config_from_dict(more), env, tmp_path, resume=True)
        assert resumed.iteration == 4 and resumed.env_steps > state.env_steps
        heldout = config.task_distribution().heldout()[:3]
        records = evaluate_checkpoint("search", config, env, tmp_path, heldout)
    finally:
        env.close()
    assert [r["task_id"] for r in records] == [t.task_id for t in heldout]
    assert all(len(r["return_by_step"]) == 4 and r["env_steps"] >= 16 for r in records)
