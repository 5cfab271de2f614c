"""`avatar-meta bench algorithms`: the learners of issue 6 against their baselines.

Every result has `metric`, `value`, `baseline`, `baseline_value` and `beats_baseline`, measured
in this run, plus details:
- `protonet`, `matching` (here): 5-way 5-shot accuracy on held-out visitor styles vs nearest
  neighbour on raw features; also 1-shot, the digits figures and the style-conditioned
  behaviour returns (the recognised style picks the controller's parameters).
- `hypernet` (benchmarks/hypernet_bench.py): model-based learner vs MAML at equal adaptation data,
  few-shot imitation in the plaza; value = mean held-out return, plus adaptation latency (ms).
- `probabilistic` (benchmarks/probabilistic_bench.py): probabilistic MAML vs MAML, each with its
  noise level fit on the same validation tasks (and the learner's mean-shift step bounded),
  ambiguous sine-or-line regression; value = held-out log-likelihood per point, plus
  90%-interval coverage.
- `metagrad` (benchmarks/metagrad_bench.py): PPO with gamma/lambda learned by the
  meta-gradient vs the same PPO with the same fixed gamma/lambda (0.6/0.3), same seeds and env
  steps, on reach_landmark with delayed reward; value = mean return of the last 10 training
  batches over seeds 0-5, plus the paired difference with its standard error, the
  deterministic return after training and the gamma/lambda trajectories.
- `character_generation` (benchmarks/character_bench.py): Meta-SGD few-shot attribute generation
  vs the same MLP fitted from scratch on the same 5 examples; value = MSE on held-out
  descriptors of held-out designers, plus ridge, pretrained+fine-tune and MAML (full run) and
  3/10 examples.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from avatar_meta.meta import styles
from avatar_meta.meta.digits import TEST_DIGITS, digits_data
from avatar_meta.meta.metric import (
    EpisodeSampler,
    MatchingNet,
    MetricConfig,
    ProtoNet,
    conv_encode,
    episode_accuracy,
    init_conv,
    init_mlp,
    mlp_encode,
    nearest_neighbour_predict,
    with_input,
)
from avatar_meta.world import scripted

N_WAY = 5
BASELINE = "nearest neighbour on raw features"


def _learners(
    make_params: Callable[[], dict[str, torch.Tensor]],
    encode: Callable[..., torch.Tensor],
    cfg: MetricConfig,
    scale: float,
) -> dict[str, ProtoNet | MatchingNet]:
    return {
        "protonet": ProtoNet(encode, make_params(), cfg),
        "matching": MatchingNet(encode, make_params(), cfg, scale=scale),
    }


def _accuracies(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    train_classes: list[int],
    train_way: int,
    x_te: np.ndarray,
    y_te: np.ndarray,
    test_classes: list[int],
    make_params: Callable[[], dict[str, torch.Tensor]],
    encode: Callable[..., torch.Tensor],
    cfg: MetricConfig,
    episodes: int,
    n_query: int,
    scale: float,
) -> tuple[dict[str, dict[int, float]], dict[int, float], dict[str, Any]]:
    """Per learner and shot: held-out accuracy; the NN baseline; the trained learners (K=5)."""
    out: dict[str, dict[int, float]] = {"protonet": {}, "matching": {}}
    nn: dict[int, float] = {}
    trained: dict[str, Any] = {}
    for k in (1, 5):
        test = EpisodeSampler(x_te, y_te, test_classes, N_WAY, k, n_query, seed=100 + k)
        nn[k] = episode_accuracy(nearest_neighbour_predict, test, episodes).mean
        for name, learner in _learners(make_params, encode, cfg, scale).items():
            learner.fit(EpisodeSampler(x_tr, y_tr, train_classes, train_way, k, n_query, seed=k))
            test = EpisodeSampler(x_te, y_te, test_classes, N_WAY, k, n_query, seed=100 + k)
            out[name][k] = episode_accuracy(learner.predict, test, episodes).mean
            trained[f"{name}/{k}"] = learner
    return out, nn, trained


def _conditioned_returns(
    learners: dict[str, Any],
    nn_predict: Callable[..., torch.Tensor],
    x: np.ndarray,
    y: np.ndarray,
    mu: np.ndarray,
    sd: np.ndarray,
    per_style: int,
    seed: int,
) -> dict[str, float]:
    """Non-gradient adaptation: recognise the style of new held-out-style visitors from one
    probe trajectory (7-way 5-shot support from the labelled held-out pool), drive the scripted
    controller with the recognised style's parameters, and compare mean returns."""
    rng = np.random.default_rng(seed)
    classes = list(styles.HELDOUT)
    tasks = [styles.STYLES[c].sample(rng) for c in classes for _ in range(per_style)]
    truth = np.repeat(classes, per_style)
    q_obs, q_rew, q_valid = styles.record(tasks, seed=seed)
    query = torch.as_tensor((styles.featurise(q_obs, q_rew, q_valid) - mu) / sd)
    support_idx = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), 5, replace=False) for c in classes]
    )
    sx = torch.as_tensor(x[support_idx])
    sy = torch.as_tensor(np.repeat(np.arange(len(classes)), 5))
    out: dict[str, float] = {}

    def ret(controller: scripted.Controller) -> float:
        return float(scripted.evaluate(controller, tasks, episodes=1, seed=seed + 1).returns.mean())

    predictors = {name: lrn.predict for name, lrn in learners.items()}
    predictors["nearest_neighbour"] = nn_predict
    for name, predict in predictors.items():
        with torch.no_grad():
            labels = predict(sx, sy, query).numpy()
        recognised = np.array(classes)[labels]
        out[f"{name}_recognition_accuracy"] = float((recognised == truth).mean())
        out[f"{name}_return"] = ret(
            styles.StyleConditionedController(styles.style_params(recognised))
        )
    out["task_agnostic_return"] = ret(scripted.TaskAgnosticController())
    out["oracle_return"] = ret(scripted.scripted_actions)
    out["tasks"] = float(len(tasks))
    return out


def run(quick: bool = False) -> dict[str, Any]:
    torch.set_num_threads(1)
    start = time.perf_counter()
    steps = 300 if quick else 1500
    episodes = 200 if quick else 600

    # ------------------------------------------------------------------ visitor styles
    ds = styles.build_dataset(per_style=30 if quick else 60, seed=0)
    mu, sd = styles.standardiser(ds.x[np.isin(ds.y, styles.TRAIN)])
    x = np.clip((ds.x - mu) / sd, -10, 10).astype(np.float32)
    dim = x.shape[1]
    style_acc, style_nn, trained = _accuracies(
        x,
        ds.y,
        list(styles.TRAIN),
        N_WAY,
        x,
        ds.y,
        list(styles.HELDOUT),
        lambda: init_mlp([dim, 128, 64], seed=0),
        mlp_encode,
        MetricConfig(steps=steps, lr=1e-3, seed=0),
        episodes,
        n_query=5,
        scale=10.0,
    )

    behaviour = _conditioned_returns(
        {"protonet": trained["protonet/5"], "matching": trained["matching/5"]},
        nearest_neighbour_predict,
        x,
        ds.y,
        mu,
        sd,
        per_style=10 if quick else 30,
        seed=7,
    )

    # ------------------------------------------------------------------ digits
    xd_tr, yd_tr, xd_te, yd_te = digits_data()
    digit_acc, digit_nn, _ = _accuracies(
        xd_tr,
        yd_tr,
        sorted(set(yd_tr.tolist())),
        15,
        xd_te,
        yd_te,
        list(TEST_DIGITS),
        lambda: init_conv(32, 2, seed=0),
        with_input(conv_encode),
        MetricConfig(steps=steps, lr=1e-3, seed=0),
        episodes,
        n_query=5,
        scale=20.0,
    )

    results: dict[str, Any] = {}
    for name in ("protonet", "matching"):
        value, base = style_acc[name][5], style_nn[5]
        results[name] = {
            "metric": "5-way 5-shot accuracy, held-out visitor styles",
            "value": value,
            "baseline": BASELINE,
            "baseline_value": base,
            "beats_baseline": bool(value > base),
            "styles_1shot": {"value": style_acc[name][1], "baseline_value": style_nn[1]},
            "styles_5shot": {"value": style_acc[name][5], "baseline_value": style_nn[5]},
            "digits_1shot": {"value": digit_acc[name][1], "baseline_value": digit_nn[1]},
            "digits_5shot": {"value": digit_acc[name][5], "baseline_value": digit_nn[5]},
            "beats_baseline_everywhere": bool(
                all(style_acc[name][k] > style_nn[k] for k in (1, 5))
                and all(digit_acc[name][k] > digit_nn[k] for k in (1, 5))
            ),
            "style_conditioned_behaviour": {
                "recognition_accuracy_7way_5shot": behaviour[f"{name}_recognition_accuracy"],
                "return": behaviour[f"{name}_return"],
                "nearest_neighbour_recognition_return": behaviour["nearest_neighbour_return"],
                "nearest_neighbour_recognition_accuracy": behaviour[
                    "nearest_neighbour_recognition_accuracy"
                ],
                "task_agnostic_return": behaviour["task_agnostic_return"],
                "oracle_return": behaviour["oracle_return"],
                "tasks": int(behaviour["tasks"]),
            },
        }
    results["setup"] = {
        "quick": quick,
        "styles": [s.name for s in styles.STYLES],
        "train_styles": [styles.STYLES[i].name for i in styles.TRAIN],
        "heldout_styles": [styles.STYLES[i].name for i in styles.HELDOUT],
        "trajectories": int(len(ds.y)),
        "features": int(dim),
        "training_steps": steps,
        "meta_batch": 4,
        "eval_episodes": episodes,
        "digits": "sklearn load_digits; train classes 0-4 (+rotations/mirror = 40 classes, "
        "15-way training episodes), test classes 5-9; encoder [raw pixels, conv features]",
        "seconds": round(time.perf_counter() - start, 1),
    }
    from avatar_meta.benchmarks import hypernet_bench, probabilistic_bench

    results["hypernet"] = hypernet_bench.bench(quick)
    results["probabilistic"] = probabilistic_bench.bench(quick)
    from avatar_meta.benchmarks import character_bench, metagrad_bench

    results["metagrad"] = metagrad_bench.bench(quick)
    results["character_generation"] = character_bench.bench(quick)
    return results
