"""write_report on synthetic held-out records: metrics.json keys and values, report.md, PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avatar_meta.report import write_report
from avatar_meta.report.metrics import META_METHODS, REQUIRED_METHODS, build_metrics, score
from avatar_meta.tasks import TaskDistribution
from avatar_meta.training.records import make_record

FAMILIES = ("reach_landmark", "greet_visitor", "patrol")
# normalised score by step each synthetic method reaches (random = 0, oracle = 1)
PROFILES = {
    "maml": (0.3, 0.8, 0.9, 0.95),
    "fomaml": (0.3, 0.6, 0.7, 0.75),
    "reptile": (0.35, 0.5, 0.6, 0.65),
    "metasgd": (0.25, 0.7, 0.85, 0.9),
    "ppo_scratch": (0.05, 0.1, 0.15, 0.2),
    "multitask_finetune": (0.4, 0.45, 0.5, 0.55),
}


def synthetic_records() -> list[dict]:
    tasks = TaskDistribution(families=FAMILIES, n_train=6, n_heldout=6).heldout()
    rng = np.random.default_rng(0)
    records = []
    for task in tasks:
        lo, hi = float(rng.uniform(-5, 0)), float(rng.uniform(10, 100))
        records.append(make_record(task, "random", [lo] * 4, 800, 0.1))
        records.append(make_record(task, "oracle", [hi] * 4, 800, 0.1))
        for method, profile in PROFILES.items():
            rbs = [lo + p * (hi - lo) for p in profile]
            records.append(make_record(task, method, rbs, 12000, 1.0))
    return [dict(r) for r in records]


def curves() -> dict[str, list[dict]]:
    """Training curves as the loop writes them: reptile and search adapt nothing in training,
    so their points have no post_return."""
    return {
        m: [
            {"iteration": i, "env_steps": 1000 * (i + 1), "pre_return": i * 0.5}
            | ({} if m in ("reptile", "search") else {"post_return": i * 0.8 + 1})
            for i in range(20)
        ]
        for m in META_METHODS
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / "AvatarAgent.onnx").write_bytes(b"onnx")
    paths = write_report(
        run_dir, synthetic_records(), curves(), {"run_id": "synthetic"}, {"mlagents": "1.1.0"}
    )
    return run_dir, paths


def test_metrics_json_has_required_keys(report: tuple[Path, dict[str, Path]]) -> None:
    run_dir, paths = report
    metrics = json.loads(paths["metrics"].read_text())
    assert {"heldout", "summary", "versions"} <= set(metrics)
    assert metrics["versions"]["protocol"] == "1.5.0"
    assert metrics["versions"]["mlagents"] == "1.1.0"
    assert {"package", "torch"} <= set(metrics["versions"])
    summary = metrics["summary"]
    for m in REQUIRED_METHODS:
        s = summary["methods"][m]
        assert {"normalised_score", "normalised_score_by_step", "env_steps", "wall_s"} <= set(s)
        for fam in FAMILIES:
            assert "normalised_score_by_step" in summary["families"][fam][m]
    entry = metrics["heldout"][0]
    for key in (
        "task",
        "family",
        "params",
        "return_by_step",
        "pre_adapt_return",
        "post_adapt_return",
        "baseline_returns",
        "oracle_return",
        "normalised_score",
    ):
        assert key in entry
    pairs = {(e["task_id"], e["method"]) for e in metrics["heldout"]}
    assert len(pairs) == len(metrics["heldout"])


def test_scores_are_the_synthetic_ones(report: tuple[Path, dict[str, Path]]) -> None:
    metrics = json.loads(report[1]["metrics"].read_text())
    methods = metrics["summary"]["methods"]
    for m, profile in PROFILES.items():
        assert methods[m]["normalised_score"] == pytest.approx(profile[1])
        assert methods[m]["normalised_score_by_step"] == pytest.approx(list(profile))
        fam = metrics["summary"]["families"]["patrol"][m]
        assert fam["normalised_score"] == pytest.approx(profile[1])
    assert metrics["summary"]["best_meta_learner"] == "maml"
    # pre_adapt = the best meta-learner (maml) before adaptation, at every step
    assert methods["pre_adapt"]["normalised_score_by_step"] == pytest.approx([0.3] * 4)
    assert methods["oracle"]["normalised_score"] == pytest.approx(1.0)
    assert methods["maml"]["env_steps"] == 12000 * 6
    assert methods["maml"]["training_env_steps"] == 20000


def test_report_md_mentions_every_method_and_plots(report: tuple[Path, dict[str, Path]]) -> None:
    run_dir, paths = report
    text = paths["report"].read_text()
    for m in REQUIRED_METHODS:
        assert f"| {m} |" in text
    assert "Normalised score" in text and "AvatarAgent.onnx" in text
    for name in ("adaptation_curves", "meta_training", "scores_by_family"):
        png = paths[name]
        assert png.parent == run_dir / "plots" and png.suffix == ".png"
        assert png.stat().st_size > 5000
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert str(png.relative_to(run_dir)) in text


def test_missing_methods_and_references_give_nulls(tmp_path: Path) -> None:
    only = [r for r in synthetic_records() if r["method"] in ("maml", "random")]
    metrics = build_metrics(only)
    assert metrics["summary"]["methods"]["maml"]["normalised_score"] is None
    assert metrics["summary"]["methods"]["ppo_scratch"]["n_tasks"] == 0
    write_report(tmp_path, only)  # no oracle, no curves: still writes everything
    assert (
        json.loads((tmp_path / "metrics.json").read_text())["summary"]["methods"]["oracle"][
            "normalised_score"
        ]
        is None
    )
    assert score(5.0, 0.0, 10.0) == 0.5 and score(1.0, 2.0, 2.0) is None


def test_stability_compares_the_final_window_with_the_best() -> None:
    from avatar_meta.report.metrics import stability

    rising = [{"post_score": 0.1 * i} for i in range(10)]
    out = stability(rising)
    assert out is not None and out["within_tolerance"] and out["gap"] == 0.0
    collapsed = rising + [{"post_score": 0.0}] * 5
    out = stability(collapsed)
    assert out is not None and not out["within_tolerance"]
    assert abs(out["best"] - 0.7) < 1e-9 and out["final"] == 0.0 and out["best_at_iteration"] == 10
    assert stability([{"pre_score": 0.5}])["score"] == "pre_score"  # type: ignore[index]
    assert stability([{"meta_loss": 1.0}]) is None


def test_stability_from_held_out_checkpoint_pairs() -> None:
    """With final-vs-best held-out pairs the verdict compares their means (paired stderr);
    the k-th record of a task pairs with the k-th `@best` record of that task."""
    from avatar_meta.report.metrics import (
        BEST_SUFFIX,
        is_best_window,
        paired_checkpoint_scores,
        stability,
    )

    curve = [{"post_score": s} for s in (0.1, 0.5, 0.2, 0.3, 0.1, 0.0)]
    assert is_best_window(curve[:2]) and not is_best_window(curve)
    out = stability(curve, [(0.50, 0.52), (0.40, 0.44), (0.60, 0.60)])
    assert out is not None and out["measure"] == "heldout" and out["n_pairs"] == 3
    assert out["gap"] == pytest.approx(0.02) and out["within_tolerance"]
    assert out["gap_stderr"] == pytest.approx(np.std([0.02, 0.04, 0.0], ddof=1) / np.sqrt(3))
    assert out["training_best"] > out["training_final"]
    worse = stability(curve, [(0.3, 0.5), (0.2, 0.3)])
    assert worse is not None and not worse["within_tolerance"]

    records = [r for r in synthetic_records() if r["method"] in ("random", "oracle")]
    task = records[0]["task_id"]
    lo = next(r for r in records if r["task_id"] == task and r["method"] == "random")
    hi = next(r for r in records if r["task_id"] == task and r["method"] == "oracle")
    span = hi["return_by_step"][0] - lo["return_by_step"][0]

    def check(method: str, fraction: float) -> dict[str, object]:
        ret = lo["return_by_step"][0] + fraction * span
        return {**lo, "method": method, "return_by_step": [0.0, ret]}

    checks = [
        check("maml", 0.5),
        check("maml", 0.7),
        check("maml" + BEST_SUFFIX, 0.6),
        check("maml" + BEST_SUFFIX, 0.7),
    ]
    pairs = paired_checkpoint_scores(checks, records)
    assert pairs["maml"] == [pytest.approx((0.5, 0.6)), pytest.approx((0.7, 0.7))]
    metrics = build_metrics(synthetic_records(), {"maml": curve}, checkpoint_records=checks)
    st = metrics["summary"]["methods"]["maml"]["stability"]
    assert st["measure"] == "heldout" and st["gap"] == pytest.approx(0.05)
