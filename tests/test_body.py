"""Identifying the avatar's body from its own observations (`meta.body`) and strategy
search's use of it (`meta.search_identify_body`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.test_search import SEARCH_RUN

from avatar_meta import contract
from avatar_meta.config import config_from_dict
from avatar_meta.envs.inprocess import PlazaEnvConfig, PlazaTaskEnv
from avatar_meta.envs.rollouts import ActionBatch, RandomPolicy, collect
from avatar_meta.meta.body import identify_body
from avatar_meta.meta.search import CONTEXT
from avatar_meta.tasks import body_code, make_task, task_code

BODIES = [(1.1, 1.6, 0.02), (2.0, 3.0, 0.1), (2.9, 3.9, 0.18)]


def test_the_body_shows_in_the_avatars_own_observations() -> None:
    """Random actions for two episodes: the top speed comes out exact, the turn rate within
    a few percent and the actuation noise within 0.04, for slow and fast bodies alike."""
    tasks = [
        make_task("follow_visitor", (2.0,), body=b, task_id=f"b{i}") for i, b in enumerate(BODIES)
    ]
    rollouts = collect(PlazaTaskEnv(PlazaEnvConfig(num_areas=3, seed=4)), RandomPolicy(1), tasks, 2)
    for task, rollout in zip(tasks, rollouts, strict=True):
        speed, rate, noise = identify_body([rollout])
        assert speed == pytest.approx(task.body[0], rel=1e-3)
        assert rate == pytest.approx(task.body[1], rel=0.06)
        assert noise == pytest.approx(task.body[2], abs=0.04)
        np.testing.assert_allclose(body_code(np.array(task.body)), task_code(task)[-3:], atol=1e-6)


def test_an_avatar_that_never_moves_gets_the_middle_of_each_range() -> None:
    def still(task_index: np.ndarray, obs: np.ndarray, mask: np.ndarray) -> ActionBatch:
        b = len(task_index)
        return ActionBatch(
            np.zeros((b, 2), np.float32),
            np.zeros(b, np.int64),
            np.zeros(b, np.float32),
            np.zeros(b, np.float32),
        )

    task = make_task("follow_visitor", (2.0,), body=(2.9, 3.9, 0.0), task_id="still")
    (rollout,) = collect(PlazaTaskEnv(PlazaEnvConfig(num_areas=1, seed=0)), still, [task], 1)
    middle = [(p.low + p.high) / 2 for p in contract.BODY_PARAMS]
    np.testing.assert_allclose(identify_body([rollout]), middle)


def test_search_gives_continuous_families_the_body_it_saw() -> None:
    """follow_visitor (a continuous parameter): the probes all guess the mid-range body, and
    the adapted policy carries the identified one. reach_landmark (discrete choices only):
    the probes keep the cover's bodies and the adapted context is one of them."""
    from avatar_meta.rl import Policy
    from avatar_meta.training.common import make_env
    from avatar_meta.training.evaluate import evaluate_search, search_hypotheses

    data = {**SEARCH_RUN, "policy": {**SEARCH_RUN["policy"], "log_std_init": 0.0}}
    data["meta"] = {**SEARCH_RUN["meta"], "search_identify_body": True}
    config = config_from_dict(data)
    heldout = config.task_distribution().heldout()
    probes, pools = search_hypotheses(config, heldout)
    follow = [i for i, t in enumerate(heldout) if t.family == "follow_visitor"]
    reach = [i for i, t in enumerate(heldout) if t.family == "reach_landmark"]
    assert follow and reach
    assert not probes[follow, :, -3:].any()  # one guess: the middle of every range
    assert probes[reach, :, -3:].abs().sum() > 0
    policy = Policy(config.policy_spec())
    params, buffers = policy.init(seed=0)
    init = {k: v[None].repeat(len(heldout), *[1] * v.dim()) for k, v in params.items()}
    adapted: dict[str, dict[str, torch.Tensor]] = {}
    env = make_env(config)
    try:
        evaluate_search(
            env, policy, init, buffers, probes, pools, heldout, config, "search", 0, adapted
        )
    finally:
        env.close()
    chosen = adapted["search"][CONTEXT]
    # code units: 0.02 is 0.02 m/s of top speed, 0.15 is 0.19 rad/s, 0.4 is 0.04 of noise
    tolerance = torch.tensor([0.02, 0.15, 0.4])
    for i in follow:
        truth = torch.from_numpy(task_code(heldout[i])[-3:])
        assert ((chosen[i, -3:] - truth).abs() <= tolerance).all(), (chosen[i, -3:], truth)
    for i in reach:
        assert any(torch.equal(chosen[i], p) for p in pools[i])
