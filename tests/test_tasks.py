"""Tasks and TaskDistribution: validation, reproducibility, disjoint held-out splits,
stratified meta-batches, file round trips and the TaskChannel encoding."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from avatar_meta import contract
from avatar_meta.tasks import (
    ALL_FAMILIES,
    Task,
    TaskDistribution,
    TaskError,
    dump_tasks,
    load_tasks,
    make_task,
    send_tasks,
    task_distance,
    tasks_from_json,
    tasks_to_json,
)


# -- Task -------------------------------------------------------------------------------------
def test_task_spec_matches_world_type() -> None:
    task = make_task("greet_visitor", {"greet_gesture": 2, "comfort_distance": 1.2})
    spec = task.spec
    assert spec.family == "greet_visitor"
    assert spec.params == (2.0, 1.2)
    assert spec.body == contract.DEFAULT_BODY
    assert spec.param_dict() == task.param_dict()
    assert task.family_index == 2


def test_make_task_fills_missing_params_with_mid_range() -> None:
    task = make_task("keep_distance", {"space_min": 2.0})
    assert task.params == (2.0, 1.25)


def test_sample_train_follows_family_weights() -> None:
    """patrol at 3x: 3/8 of a batch, the rest shared evenly; equal weights draw exactly what
    no weights draw."""
    dist = TaskDistribution(seed=0, n_train=120, n_heldout=6)
    rng = np.random.default_rng(1)
    for k in (12, 16, 30):
        counts = Counter(t.family for t in dist.sample_train(rng, k, {"patrol": 3.0}))
        assert sum(counts.values()) == k
        assert abs(counts["patrol"] - k * 3 / 8) <= 1
        others = [counts[f] for f in ALL_FAMILIES if f != "patrol"]
        assert max(others) - min(others) <= 1
    even = {f: 2.0 for f in ALL_FAMILIES}
    assert dist.sample_train(np.random.default_rng(2), 12, even) == dist.sample_train(
        np.random.default_rng(2), 12
    )


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(family="dance_off", params=()), ["family", "dance_off", "reach_landmark"]),
        (dict(family="reach_landmark", params=(5.0,)), ["landmark", "outside [0, 2]"]),
        (dict(family="reach_landmark", params=(1.5,)), ["landmark", "whole number"]),
        (dict(family="follow_visitor", params=(1.0, 2.0)), ["takes 1 value", "follow_distance"]),
        (
            dict(family="follow_visitor", params=(2.0,), body=(9.0, 2.0, 0.0)),
            ["body", "top_speed", "outside [1, 3]"],
        ),
        (dict(family="follow_visitor", params=(float("nan"),)), ["follow_distance", "outside"]),
    ],
)
def test_invalid_tasks_name_field_and_fix(kwargs: dict, words: list[str]) -> None:
    with pytest.raises(TaskError) as info:
        Task(task_id="t", **kwargs)
    for word in words:
        assert word in str(info.value)


def test_from_dict_rejects_unknown_keys_and_names() -> None:
    with pytest.raises(TaskError, match="unknown key"):
        Task.from_dict({"family": "patrol", "params": [1], "colour": "red"})
    with pytest.raises(TaskError, match="it takes: route"):
        Task.from_dict({"family": "patrol", "params": {"order": 1}})
    with pytest.raises(TaskError, match="family is missing"):
        Task.from_dict({"params": [1]})


def test_task_dict_json_yaml_round_trip(tmp_path: Path) -> None:
    dist = TaskDistribution(seed=3, n_train=12, n_heldout=6)
    tasks = dist.train_tasks() + dist.heldout()
    assert [Task.from_dict(t.to_dict()) for t in tasks] == tasks
    assert tasks_from_json(tasks_to_json(tasks)) == tasks
    for name in ("tasks.yaml", "tasks.json"):
        dump_tasks(tasks, tmp_path / name)
        assert load_tasks(tmp_path / name) == tasks


def test_from_dict_accepts_lists_and_default_body() -> None:
    task = Task.from_dict({"family": "pace_match", "params": [1, 1.5, 0.8]})
    assert task.body == contract.DEFAULT_BODY
    assert task.param_dict() == {"side": 1.0, "side_gap": 1.5, "visitor_speed": 0.8}
    assert task.task_id.startswith("pace_match[")


# -- TaskDistribution ------------------------------------------------------------------------
def test_distribution_is_reproducible_and_seed_dependent() -> None:
    a = TaskDistribution(seed=7, n_train=30, n_heldout=12)
    b = TaskDistribution(seed=7, n_train=30, n_heldout=12)
    c = TaskDistribution(seed=8, n_train=30, n_heldout=12)
    assert a.train_tasks() == b.train_tasks() and a.heldout() == b.heldout()
    assert a.train_tasks() != c.train_tasks()
    r1, r2 = np.random.default_rng(1), np.random.default_rng(1)
    assert a.sample_train(r1, 12) == b.sample_train(r2, 12)


def test_families_are_independent_streams() -> None:
    """Adding a family does not move the tasks of the others."""
    small = TaskDistribution(families=("follow_visitor",), seed=2, n_train=5, n_heldout=2)
    big = TaskDistribution(
        families=("reach_landmark", "follow_visitor"), seed=2, n_train=10, n_heldout=4
    )
    follow = [t for t in big.train_tasks() if t.family == "follow_visitor"]
    assert follow == small.train_tasks()


def test_pools_have_requested_sizes_and_even_families() -> None:
    dist = TaskDistribution(seed=0, n_train=60, n_heldout=12)
    assert len(dist.train_tasks()) == 60 and len(dist.heldout()) == 12
    assert set(Counter(t.family for t in dist.train_tasks()).values()) == {10}
    assert set(Counter(t.family for t in dist.heldout()).values()) == {2}
    ids = [t.task_id for t in dist.train_tasks() + dist.heldout()]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("vary_body", [True, False])
def test_heldout_is_disjoint_from_training(vary_body: bool) -> None:
    families = ALL_FAMILIES if vary_body else ("follow_visitor", "greet_visitor", "keep_distance")
    dist = TaskDistribution(
        families=families, seed=5, n_train=120, n_heldout=30, vary_body=vary_body
    )
    train = dist.train_tasks()
    for h in dist.heldout():
        assert min(task_distance(h, t) for t in train) >= dist.min_gap
        assert all((h.family, h.params, h.body) != (t.family, t.params, t.body) for t in train)
    if not vary_body:
        assert all(t.body == contract.DEFAULT_BODY for t in train)


def test_integer_families_disjoint_on_params_and_body() -> None:
    dist = TaskDistribution(families=("reach_landmark", "patrol"), seed=1, n_train=20, n_heldout=8)
    keys = {(t.family, t.params, t.body) for t in dist.train_tasks()}
    assert all((h.family, h.params, h.body) not in keys for h in dist.heldout())


def test_small_space_without_body_variation_fails_clearly() -> None:
    with pytest.raises(TaskError) as info:
        TaskDistribution(
            families=("reach_landmark",), n_train=3, n_heldout=1, vary_body=False
        ).heldout()
    message = str(info.value)
    assert "reach_landmark" in message and "vary_body=True" in message


def test_heldout_family_only_in_heldout() -> None:
    dist = TaskDistribution(seed=0, n_train=25, n_heldout=12, heldout_family="patrol")
    assert "patrol" not in {t.family for t in dist.train_tasks()}
    assert dist.train_families == tuple(f for f in ALL_FAMILIES if f != "patrol")
    heldout_families = Counter(t.family for t in dist.heldout())
    assert heldout_families["patrol"] == 2 and len(heldout_families) == 6
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert all(t.family != "patrol" for t in dist.sample_train(rng, 7))


def test_sample_train_is_stratified() -> None:
    dist = TaskDistribution(seed=0, n_train=60, n_heldout=6)
    rng = np.random.default_rng(0)
    for k in (6, 12, 8, 3):
        counts = Counter(t.family for t in dist.sample_train(rng, k))
        assert max(counts.values()) - min(counts.get(f, 0) for f in ALL_FAMILIES) <= 1
        assert sum(counts.values()) == k
    # without replacement while the family pool lasts
    batch = dist.sample_train(rng, 60)
    assert len({t.task_id for t in batch}) == 60


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(families=("reach_landmark", "moonwalk")), ["families", "moonwalk", "use one of"]),
        (dict(heldout_family="patrol", families=("reach_landmark",)), ["heldout_family", "add it"]),
        (dict(heldout_family="patrol", families=("patrol",)), ["no training family"]),
        (dict(n_train=2), ["n_train = 2", "raise n_train"]),
        (dict(min_gap=1.5), ["min_gap"]),
    ],
)
def test_distribution_errors_name_field_and_fix(kwargs: dict, words: list[str]) -> None:
    with pytest.raises(TaskError) as info:
        TaskDistribution(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_distribution_config_round_trip() -> None:
    dist = TaskDistribution(families=("patrol", "follow_visitor"), seed=4, heldout_family="patrol")
    back = TaskDistribution.from_dict(dist.to_dict())
    assert back == dist and back.heldout() == dist.heldout()
    with pytest.raises(TaskError, match="unknown field"):
        TaskDistribution.from_dict({"seeds": 3})


# -- TaskChannel encoding ----------------------------------------------------------------------
class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str, list[float], list[float]]] = []

    def assign(
        self, area: int, family: str, params: Sequence[float], body: Sequence[float]
    ) -> None:
        self.calls.append((area, family, list(params), list(body)))


def test_send_tasks_one_message_per_assigned_area() -> None:
    a = make_task("reach_landmark", (2,))
    b = make_task("patrol", (4,), body=(1.5, 2.0, 0.1))
    rec = _Recorder()
    assert send_tasks(rec, [a, None, b]) == 2
    assert rec.calls == [
        (0, "reach_landmark", [2.0], list(a.body)),
        (2, "patrol", [4.0], [1.5, 2.0, 0.1]),
    ]
    rec = _Recorder()
    send_tasks(rec, {5: a})
    assert rec.calls[0][0] == 5


def test_send_tasks_bytes_decode_in_the_world() -> None:
    """The real TaskChannel's bytes decode to the same TaskSpec on the world side."""
    task_channel = pytest.importorskip("avatar_meta.envs.task_channel")
    side = pytest.importorskip("avatar_meta.world.side_channels")
    channel = task_channel.TaskChannel()
    task = make_task("pace_match", {"side": 1, "side_gap": 1.25, "visitor_speed": 0.5})
    send_tasks(channel, [None, task])
    (payload,) = channel.message_queue
    message = side.decode_task(bytes(payload))
    assert message.area == 1
    from avatar_meta.envs.inprocess import wire_spec

    spec = side.task_from_message(message)
    assert spec == wire_spec(task)  # the same float32 rounding as the in-process env
    np.testing.assert_allclose(spec.params + spec.body, task.params + task.body, rtol=1e-6)


def test_task_code_one_hots_choices_and_scales_ranges() -> None:
    """`task_code`: integer parameters one-hot, continuous ones in [-1, 1], the body last;
    distinct tasks of a family get distinct codes."""
    from avatar_meta.tasks import TASK_CODE_SIZE, make_task, task_code

    assert 6 + len(contract.BODY_PARAMS) == TASK_CODE_SIZE  # patrol's six routes are the widest
    greet = make_task("greet_visitor", (2, 2.5), body=(1.0, 4.0, 0.1))
    code = task_code(greet)
    assert code.shape == (TASK_CODE_SIZE,) and code.dtype == np.float32
    assert code[:3].tolist() == [0.0, 1.0, 0.0]  # gesture 2 of 1..3
    assert code[3] == pytest.approx(1.0)  # comfort distance at the top of 0.8..2.5
    assert code[4:6].tolist() == [0.0, 0.0]  # padding up to the widest family
    assert code[-3:] == pytest.approx([-1.0, 1.0, 0.0])  # top speed low, turn rate high
    reach = [task_code(make_task("reach_landmark", (i,))) for i in range(3)]
    assert [int(np.argmax(c[:3])) for c in reach] == [0, 1, 2]
