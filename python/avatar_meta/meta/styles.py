"""Visitor-style episodes: few-shot recognition of a task's hidden style from trajectories.

A *style* is a class of hidden task parameters: a (family, discretised parameter) pair such as
"greet_visitor, prefers a bow" or "pace_match, walk on the right of a fast visitor". For each
style we sample tasks, run one short episode per task in the in-process plaza under a fixed
behaviour policy (the task-agnostic scripted controller with action noise and random
gestures, which never sees the hidden parameters), and featurise the trajectory. The hidden
parameter shows up only through the reward signal and the visitor's behaviour, so the
features include reward statistics and reward-weighted observation means.

Then N-way K-shot over styles with *disjoint* train and held-out styles (`HELDOUT`), and the
non-gradient adaptation path: the recognised style picks the scripted controller's parameters
(`STYLES[c].controller_params`), compared with the task-agnostic controller on the same tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avatar_meta import contract
from avatar_meta.world import scripted
from avatar_meta.world.plaza import Plaza
from avatar_meta.world.types import TaskSpec


@dataclass(frozen=True)
class Style:
    """One style class: a family, ranges for its hidden parameters, and the parameters the
    scripted controller should use for a visitor recognised as this style."""

    name: str
    family: str
    ranges: tuple[tuple[float, float], ...]  # per family parameter (low == high: fixed)
    controller_params: tuple[float, ...]

    def sample(self, rng: np.random.Generator) -> TaskSpec:
        values = tuple(float(rng.uniform(lo, hi)) if hi > lo else lo for lo, hi in self.ranges)
        return TaskSpec.make(self.family, values)


def _styles() -> tuple[Style, ...]:
    out: list[Style] = []
    for lm in range(3):
        out.append(Style(f"reach:landmark{lm}", "reach_landmark", ((lm, lm),), (lm,)))
    for tag, lo, hi in (("near", 1.0, 2.0), ("far", 3.0, 4.0)):
        out.append(Style(f"follow:{tag}", "follow_visitor", ((lo, hi),), ((lo + hi) / 2,)))
    for g in (1, 2, 3):
        name = contract.GESTURES[g]
        out.append(Style(f"greet:{name}", "greet_visitor", ((g, g), (0.8, 2.5)), (g, 2.1)))
    for tag, lo, hi in (("close", 1.0, 1.75), ("wide", 1.75, 2.5)):
        out.append(
            Style(f"keep:{tag}", "keep_distance", ((lo, hi), (0.5, 2.0)), ((lo + hi) / 2, 1.25))
        )
    for side, side_name in ((0, "left"), (1, "right")):
        for tag, lo, hi in (("slow", 0.4, 0.8), ("fast", 0.8, 1.2)):
            out.append(
                Style(
                    f"pace:{side_name}-{tag}",
                    "pace_match",
                    ((side, side), (0.8, 2.0), (lo, hi)),
                    (side, 1.4, (lo + hi) / 2),
                )
            )
    for route in range(6):
        out.append(Style(f"patrol:route{route}", "patrol", ((route, route),), (route,)))
    return tuple(out)


STYLES: tuple[Style, ...] = _styles()
"""20 style classes over the six families."""
HELDOUT: tuple[int, ...] = tuple(
    i
    for i, s in enumerate(STYLES)
    if s.name
    in {
        "reach:landmark2",
        "follow:far",
        "greet:dance",
        "keep:wide",
        "pace:right-fast",
        "patrol:route4",
        "patrol:route5",
    }
)
"""Styles never seen in training (7 classes, at least one per family)."""
TRAIN: tuple[int, ...] = tuple(i for i in range(len(STYLES)) if i not in HELDOUT)

STEPS = 120
"""Decisions per recorded trajectory (greet episodes may end earlier, on success)."""
ACTION_NOISE = 0.5
GESTURE_PROBABILITY = 0.3


class ProbeController:
    """Behaviour policy: the task-agnostic controller plus Gaussian action noise, and a
    random gesture with probability GESTURE_PROBABILITY per decision. Never reads the hidden
    parameters."""

    def __init__(self, seed: int = 0) -> None:
        self.base = scripted.TaskAgnosticController()
        self.rng = np.random.default_rng(seed)

    def __call__(self, plaza: Plaza) -> tuple[np.ndarray, np.ndarray]:
        cont, gest = self.base(plaza)
        cont = np.clip(cont + ACTION_NOISE * self.rng.standard_normal(cont.shape), -1.0, 1.0)
        rand = self.rng.random(plaza.n_agents) < GESTURE_PROBABILITY
        gest = np.where(rand, self.rng.integers(0, len(contract.GESTURES), plaza.n_agents), gest)
        return cont, gest


def record(
    tasks: Sequence[TaskSpec], seed: int = 0, steps: int = STEPS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One probe trajectory per task: obs [n, T, O], reward [n, T], valid [n, T] (False after
    the episode's first end)."""
    plaza = Plaza(num_areas=len(tasks), agents_per_area=1, seed=seed)
    for area, task in enumerate(tasks):
        plaza.assign_task(area, task)
    obs, _ = plaza.reset()
    probe = ProbeController(seed)
    n = len(tasks)
    all_obs = np.zeros((n, steps, contract.OBSERVATION_SIZE), dtype=np.float32)
    rewards = np.zeros((n, steps), dtype=np.float32)
    valid = np.zeros((n, steps), dtype=bool)
    alive = np.ones(n, dtype=bool)
    for t in range(steps):
        all_obs[:, t] = obs
        valid[:, t] = alive
        result = plaza.step(*probe(plaza))
        rewards[:, t] = np.where(alive, result.reward, 0.0)
        alive &= ~result.done
        obs = result.obs
    return all_obs, rewards, valid


def featurise(obs: np.ndarray, reward: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fixed-size features per trajectory [n, F]: mean and std of the observations, reward
    statistics (mean, std, min, max, per quarter of the episode), reward-weighted observation
    means (which observations go with high reward) and the episode length."""
    w = valid.astype(np.float32)
    count = np.maximum(w.sum(1, keepdims=True), 1.0)
    mean = (obs * w[..., None]).sum(1) / count
    std = np.sqrt(((obs - mean[:, None]) ** 2 * w[..., None]).sum(1) / count)
    r_mean = (reward * w).sum(1, keepdims=True) / count
    r_c = (reward - r_mean) * w
    r_std = np.sqrt((r_c**2).sum(1, keepdims=True) / count)
    r_min = np.where(valid, reward, np.inf).min(1, keepdims=True)
    r_max = np.where(valid, reward, -np.inf).max(1, keepdims=True)
    quarters = np.stack(
        [
            (reward[:, q] * w[:, q]).sum(1) / np.maximum(w[:, q].sum(1), 1.0)
            for q in np.array_split(np.arange(reward.shape[1]), 4)
        ],
        axis=1,
    )
    weighted = (obs * r_c[..., None]).sum(1) / count / np.maximum(r_std, 1e-3)
    length = count / reward.shape[1]
    return np.concatenate(
        [mean, std, r_mean, r_std, r_min, r_max, quarters, weighted, length], axis=1
    ).astype(np.float32)


@dataclass
class StyleDataset:
    """Features `x [M, F]` (raw), style labels `y [M]` and the tasks they came from."""

    x: np.ndarray
    y: np.ndarray
    tasks: list[TaskSpec]


def build_dataset(per_style: int = 30, seed: int = 0, steps: int = STEPS) -> StyleDataset:
    """`per_style` fresh tasks (one probe episode each) for every style in `STYLES`."""
    rng = np.random.default_rng(seed)
    tasks, labels = [], []
    for c, style in enumerate(STYLES):
        for _ in range(per_style):
            tasks.append(style.sample(rng))
            labels.append(c)
    obs, reward, valid = record(tasks, seed=seed, steps=steps)
    return StyleDataset(featurise(obs, reward, valid), np.array(labels), tasks)


def standardiser(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of the training features, for z-scoring every split the same way."""
    return x_train.mean(0), x_train.std(0) + 1e-6


class StyleConditionedController:
    """The scripted controller driven with the parameters of a recognised style per avatar
    (row i of `params` for avatar i), instead of the true hidden parameters."""

    def __init__(self, params: np.ndarray) -> None:
        self.params = np.asarray(params, dtype=float)

    def __call__(self, plaza: Plaza) -> tuple[np.ndarray, np.ndarray]:
        state = plaza.state()
        band = np.full(plaza.n_agents, 0.25)
        return scripted.actions_for_params(plaza, self.params, state["patrol_slot"], band)


def style_params(classes: Sequence[int]) -> np.ndarray:
    """[n, MAX_FAMILY_PARAMS] controller parameters of each recognised style."""
    out = np.zeros((len(classes), contract.MAX_FAMILY_PARAMS))
    for i, c in enumerate(classes):
        p = STYLES[c].controller_params
        out[i, : len(p)] = p
    return out
