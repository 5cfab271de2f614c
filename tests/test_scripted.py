"""Scripted controllers: the rewards are learnable and the hidden parameters matter.

One plaza runs every family on four bodies (slow/clumsy/noisy to fast/nimble) for two
episodes under each controller; the results are shared by the tests below (about 2 s).
"""

from __future__ import annotations

import numpy as np
import pytest

from avatar_meta import contract
from avatar_meta.world import scripted
from avatar_meta.world.types import TaskSpec

BODIES = ((1.0, 1.5, 0.2), (2.0, 3.0, 0.05), (3.0, 4.0, 0.1), (1.5, 2.5, 0.0))
"""(top_speed, turn_rate, actuation_noise): both ends of every range, and the defaults."""
FAMILIES = [f.name for f in contract.FAMILIES]

MIN_GAP = {
    # Scripted minus random mean return, per family. Each is a fraction of what the scripted
    # controller demonstrably earns, stated in the family's own reward terms:
    "reach_landmark": 30.0,  # = 60 decisions of the 0.5 arrival bonus; random never arrives
    "follow_visitor": 50.0,  # = 100 decisions at half the peak distance reward
    "greet_visitor": 2.0,  # = the success bonus (1) plus 2 m of approach shaping (0.5/m)
    "keep_distance": 100.0,  # = 100 decisions inside the band (+1 each)
    "pace_match": 30.0,  # = 60 decisions at half the peak alongside reward
    "patrol": 5.0,  # = two arrivals (+1 each) plus 6 m of progress (0.5/m)
}


def family_tasks() -> list[TaskSpec]:
    rng = np.random.default_rng(7)
    tasks = []
    for family in contract.FAMILIES:
        for body in BODIES:
            params = tuple(
                float(rng.integers(p.low, p.high + 1))
                if p.integer
                else float(rng.uniform(p.low, p.high))
                for p in family.params
            )
            tasks.append(TaskSpec.make(family.name, params, body))
    return tasks


@pytest.fixture(scope="module")
def results() -> dict[str, scripted.Evaluation]:
    tasks = family_tasks()
    return {
        "scripted": scripted.evaluate(scripted.scripted_actions, tasks, episodes=2, seed=0),
        "agnostic": scripted.evaluate(scripted.TaskAgnosticController(), tasks, episodes=2, seed=0),
        "random": scripted.evaluate(scripted.random_controller(0), tasks, episodes=2, seed=0),
    }


def rows(family: str) -> slice:
    i = FAMILIES.index(family) * len(BODIES)
    return slice(i, i + len(BODIES))


@pytest.mark.parametrize("family", FAMILIES)
def test_scripted_beats_random_on_every_family(results: dict, family: str) -> None:
    ours = results["scripted"].returns[rows(family)]
    rand = results["random"].returns[rows(family)]
    assert ours.mean() - rand.mean() > MIN_GAP[family], (ours, rand)
    assert (ours > rand).all(), "the scripted controller must win on every body"


def test_scripted_succeeds_where_success_is_reachable(results: dict) -> None:
    success = results["scripted"].success
    for family in ("reach_landmark", "greet_visitor", "keep_distance", "follow_visitor"):
        assert success[rows(family)].mean() >= 0.75, family
    assert results["random"].success.mean() <= 0.1


def enumerated_tasks() -> list[TaskSpec]:
    """Every value of each discrete hidden parameter, so a lucky guess cannot dominate."""
    tasks = [
        TaskSpec.make("reach_landmark", {"landmark": i}, body) for i in range(3) for body in BODIES
    ]
    tasks += [
        TaskSpec.make("greet_visitor", {"greet_gesture": g, "comfort_distance": c}, body)
        for g in (1, 2, 3)
        for c in (0.9, 1.7, 2.4)
        for body in BODIES[1:3]
    ]
    tasks += [TaskSpec.make("patrol", {"route": r}, body) for r in range(6) for body in BODIES[1:3]]
    return tasks


@pytest.fixture(scope="module")
def enumerated() -> dict[str, tuple[list[str], scripted.Evaluation]]:
    tasks = enumerated_tasks()
    families = [t.family for t in tasks]
    return {
        "scripted": (families, scripted.evaluate(scripted.scripted_actions, tasks, 2, seed=3)),
        "agnostic": (
            families,
            scripted.evaluate(scripted.TaskAgnosticController(), tasks, 2, seed=3),
        ),
        "random": (families, scripted.evaluate(scripted.random_controller(3), tasks, 2, seed=3)),
    }


@pytest.mark.parametrize("family", ["reach_landmark", "greet_visitor", "patrol"])
def test_knowing_the_hidden_parameters_matters(enumerated: dict, family: str) -> None:
    """A controller that knows only the family scores well below one that knows the task.
    The design aim is < 0.5 normalised (docs/scenarios.md measures 0.3-0.4 on 24 random
    tasks); the bound here leaves room for the small sample."""

    def mean(name: str) -> float:
        families, evaluation = enumerated[name]
        return float(evaluation.returns[np.array(families) == family].mean())

    normalised = (mean("agnostic") - mean("random")) / (mean("scripted") - mean("random"))
    assert normalised < 0.65


def test_random_actions_shapes_and_ranges() -> None:
    cont, gest = scripted.random_actions(np.random.default_rng(0), 500)
    assert cont.shape == (500, 2) and gest.shape == (500,)
    assert np.abs(cont).max() <= 1.0 and set(gest.tolist()) == {0, 1, 2, 3}
