"""report.md: a page a designer can read without knowing the code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from avatar_meta.report.metrics import REQUIRED_METHODS

DESCRIPTIONS = {
    "maml": "MAML (second order): meta-learned start, adapted with policy-gradient steps",
    "fomaml": "first-order MAML: same, without the second-order term",
    "reptile": "Reptile: meta-learned start, adapted with PPO-style steps",
    "metasgd": "Meta-SGD: meta-learned start and per-weight step sizes",
    "encoder": "task encoder: reads the scenario off the first episodes in one pass (no "
    "gradient step)",
    "search": "strategy search: a policy trained for every scenario setting; the first episodes "
    "each try one setting and the best one is kept",
    "pre_adapt": "the best meta-learner before any adaptation (no experience of the task; for "
    "search, its first episodes, each trying one setting)",
    "ppo_scratch": "PPO from a fresh policy with the same experience per task",
    "multitask_finetune": "one policy trained on all training scenarios, then fine-tuned like "
    "PPO from scratch",
    "oracle": "a policy that is told the hidden parameters (the 1.0 of the score)",
    "oracle_ppo": "the PPO oracle's own return, before validation",
    "scripted": "a hand-written controller that reads the hidden parameters",
    "random": "uniformly random actions (the 0.0 of the score)",
}


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _methods_in(summary: Mapping[str, Any]) -> list[str]:
    methods = summary["methods"]
    extra = [m for m in methods if m not in REQUIRED_METHODS and methods[m]["n_tasks"]]
    return list(REQUIRED_METHODS) + extra


def methods_table(summary: Mapping[str, Any]) -> list[str]:
    """Overall table: score after 0..3 steps, env steps and wall time per method."""
    lines = [
        "| method | what it is | score before | after 1 step | after 2 | after 3 | env steps "
        "(held-out) | training env steps | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in _methods_in(summary):
        s = summary["methods"][m]
        by = list(s["normalised_score_by_step"]) + [None] * 4
        lines.append(
            f"| {m} | {DESCRIPTIONS.get(m, '')} | {_fmt(by[0])} | {_fmt(s['normalised_score'])} "
            f"| {_fmt(by[2])} | {_fmt(by[3])} | {s['env_steps']:,} | "
            f"{s.get('training_env_steps', 0):,} | {s['wall_s'] + s.get('training_wall_s', 0.0):.0f} |"
        )
    return lines


def family_table(summary: Mapping[str, Any]) -> list[str]:
    """Score after one step, one row per family, one column per method."""
    methods = _methods_in(summary)
    lines = ["| family | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for fam, fs in summary["families"].items():
        cells = [_fmt(fs.get(m, {}).get("normalised_score")) for m in methods]
        lines.append(f"| {fam} | " + " | ".join(cells) + " |")
    return lines


def validation_lines(validation: Mapping[str, Any]) -> list[str]:
    if not validation:
        return ["The oracle was not checked against the scripted controller in this run."]
    lines = [
        "The oracle is checked per family against a hand-written controller that reads the "
        "hidden parameters: it must reach 98% of that controller's gain over random. Where it "
        "does not, the score uses the better of the two as its 1.0, so scores are never "
        "inflated by a weak oracle.",
        "",
        "| family | PPO oracle / scripted | passed | 1.0 of the score is |",
        "|---|---|---|---|",
    ]
    for fam, v in validation.items():
        lines.append(
            f"| {fam} | {_fmt(v['ratio'])} | {'yes' if v['passed'] else 'NO'} | {v['reference']} |"
        )
    return lines


def artifact_lines(run_dir: Path, artifacts: Sequence[Path]) -> list[str]:
    """Where the trained policy is (ONNX for the Unity Editor, PolicyWeights, checkpoints)."""
    if not artifacts:
        return [
            "- the meta-policy (`<Behavior>.onnx`, `<Behavior>.weights.bin`) and "
            "`checkpoints/` are written into this folder by `avatar-meta train`; none were "
            "found when this report was written"
        ]
    hints = {
        ".onnx": "import into the Unity Editor as a ModelAsset",
        ".bin": "PolicyWeights for the in-game evaluator / adaptation service",
    }
    return [
        f"- `{a.relative_to(run_dir) if a.is_relative_to(run_dir) else a}`"
        + (f": {hints[a.suffix]}" if a.suffix in hints else "")
        for a in artifacts
    ]


def stability_lines(summary: Mapping[str, Any]) -> list[str]:
    """One line per meta-learner: is the final meta-policy as good as the best seen?"""
    out = []
    for method, s in summary["methods"].items():
        st = s.get("stability")
        if not st:
            continue
        verdict = "stable" if st["within_tolerance"] else "not stable"
        window = (
            f"the best training window ({st['window']} meta-iterations of "
            f"{st['score'].replace('_', ' ')}) ended at iteration {st['best_at_iteration']} "
            f"of {st['final_iteration']}"
        )
        if st["measure"] == "heldout":
            stderr = st.get("gap_stderr")
            measured = (
                f"adapted once on the held-out tasks ({st['n_pairs']} paired runs), the final "
                f"checkpoint scores {_fmt(st['final'])} and that best one {_fmt(st['best'])} "
                f"(gap {_fmt(st['gap'], 3)}"
                + (f" +- {_fmt(stderr, 3)}" if stderr is not None else "")
                + f", tolerance {st['tolerance']})"
            )
        else:
            measured = (
                f"the last window averages {_fmt(st['final'])} against its {_fmt(st['best'])} "
                f"(gap {_fmt(st['gap'], 3)}, tolerance {st['tolerance']})"
            )
        out.append(f"- {method}: {verdict}: {window}; {measured}.")
    return out


def render(
    metrics: Mapping[str, Any],
    plots: Mapping[str, Path],
    run_dir: Path,
    config: Mapping[str, Any],
    artifacts: Sequence[Path],
) -> str:
    """The whole report.md text."""
    summary = metrics["summary"]
    best = summary.get("best_meta_learner")
    families = ", ".join(summary["families"]) or "none"
    n_tasks = len({e["task_id"] for e in metrics["heldout"]})
    best_line = (
        f"The best meta-learner is **{best}**: normalised score "
        f"{_fmt(summary['methods'][best]['normalised_score'])} after one adaptation step."
        if best
        else "No meta-learner results are in this report."
    )
    rel = {k: p.relative_to(run_dir) if p.is_relative_to(run_dir) else p for k, p in plots.items()}
    lines = [
        f"# avatar-meta run report: {config.get('run_id', run_dir.name)}",
        "",
        "## What was trained",
        "",
        "A policy for the avatar was meta-trained on many scenarios (families: "
        f"{families}; one starting policy per family unless the config says otherwise) "
        "whose details (the hidden parameters) a new scenario does not reveal. It was then "
        f"given a few episodes of experience on {n_tasks} scenarios it never saw and "
        "adapted to each one from the rewards alone. "
        "The baselines below had the same experience on the same scenarios.",
        "",
        best_line,
        "",
        "**Normalised score:** 0 means as good as random actions and 1 means as good as an "
        "oracle that is told the hidden details of the scenario.",
        "",
        "## Methods (all held-out scenarios)",
        "",
        *methods_table(summary),
        "",
        f"![adaptation curves]({rel['adaptation_curves']})",
        "",
        "## Per family (score after one adaptation step)",
        "",
        *family_table(summary),
        "",
        f"![scores by family]({rel['scores_by_family']})",
        "",
        "## Meta-training",
        "",
        f"![meta-training curve]({rel['meta_training']})",
        "",
        *stability_lines(summary),
        "",
        "## Oracle check",
        "",
        *validation_lines(metrics.get("oracle_validation", {})),
        "",
        "## Files",
        "",
        "- `metrics.json`: every number in this report (schema in docs/baselines-and-report.md)",
        *artifact_lines(run_dir, artifacts),
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in metrics["versions"].items()),
        "",
    ]
    return "\n".join(lines)
