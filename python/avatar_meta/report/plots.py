"""The report's figures (matplotlib, Agg backend, no display needed).

- `adaptation_curves.png`: normalised score vs adaptation step, one panel per family plus
  "all families", one line per method;
- `meta_training.png`: return before (dashed) and after (solid) adaptation vs env steps during
  meta-training, one colour per method (pretraining curves of baselines included);
- `scores_by_family.png`: normalised score after one step, grouped bars per family.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PLOT_METHODS = (
    "maml",
    "fomaml",
    "reptile",
    "metasgd",
    "encoder",
    "search",
    "pre_adapt",
    "ppo_scratch",
    "multitask_finetune",
    "oracle",
)
"""Methods drawn (in this order) when they have scores."""
_STYLE = {
    "maml": ("tab:blue", "-"),
    "fomaml": ("tab:cyan", "-"),
    "reptile": ("tab:purple", "-"),
    "metasgd": ("tab:green", "-"),
    "encoder": ("tab:olive", "-"),
    "search": ("tab:brown", "-"),
    "pre_adapt": ("tab:gray", ":"),
    "ppo_scratch": ("tab:orange", "--"),
    "multitask_finetune": ("tab:red", "--"),
    "oracle": ("black", "-."),
}


def _style(method: str) -> tuple[str, str]:
    return _STYLE.get(method, ("tab:olive", "-"))


def _drawn(methods: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [m for m in PLOT_METHODS if methods.get(m, {}).get("normalised_score") is not None]


def adaptation_curves(summary: Mapping[str, Any], path: Path) -> Path:
    """One panel per family (and overall): normalised score by adaptation step."""
    panels = [("all families", summary["methods"])] + list(summary["families"].items())
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (title, methods) in zip(axes.flat, panels, strict=False):
        for m in _drawn(methods):
            ys = methods[m]["normalised_score_by_step"]
            color, ls = _style(m)
            ax.plot(range(len(ys)), ys, ls, color=color, marker="o", ms=3, label=m)
        ax.set_title(title)
        ax.set_xlabel("adaptation step")
        ax.set_ylabel("normalised score")
        ax.axhline(1.0, color="black", lw=0.5, alpha=0.4)
        ax.axhline(0.0, color="black", lw=0.5, alpha=0.4)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(8, max(1, len(labels))), fontsize=9)
    fig.suptitle("Held-out adaptation: 0 = random policy, 1 = oracle")
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    return _save(fig, path)


def meta_training_curve(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> Path:
    """Return before/after adaptation vs env steps for every method with a curve."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for method, points in curves.items():
        if not points:
            continue
        xs = [float(p.get("env_steps", p.get("iteration", i))) for i, p in enumerate(points)]
        color, _ = _style(method)
        if any("post_return" not in p for p in points):  # no adaptation in training (search)
            ax.plot(xs, [p["pre_return"] for p in points], "-", color=color, label=method)
            continue
        ax.plot(xs, [p["post_return"] for p in points], "-", color=color, label=f"{method} (after)")
        if any(p["pre_return"] != p["post_return"] for p in points):
            ax.plot(
                xs,
                [p["pre_return"] for p in points],
                "--",
                color=color,
                alpha=0.6,
                label=f"{method} (before)",
            )
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean episode return (training tasks)")
    ax.set_title("Meta-training (solid: after adaptation, dashed: before)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def scores_by_family(summary: Mapping[str, Any], path: Path) -> Path:
    """Grouped bars: normalised score after one step, per family and overall."""
    groups = [("all", summary["methods"])] + list(summary["families"].items())
    methods = [
        m
        for m in PLOT_METHODS
        if any(g.get(m, {}).get("normalised_score") is not None for _, g in groups)
    ]
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(8.0, 1.4 * len(groups)), 4.5))
    for j, m in enumerate(methods):
        ys = [g.get(m, {}).get("normalised_score") for _, g in groups]
        xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, [0.0 if y is None else y for y in ys], width, color=_style(m)[0], label=m)
    ax.set_xticks(range(len(groups)), [name for name, _ in groups], rotation=20)
    ax.axhline(1.0, color="black", lw=0.6, alpha=0.5)
    ax.set_ylabel("normalised score after 1 step")
    ax.set_title("Normalised score per family (1 = oracle, 0 = random)")
    ax.grid(axis="y", alpha=0.3)
    if methods:
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(
    summary: Mapping[str, Any], curves: Mapping[str, Sequence[Mapping[str, Any]]], plot_dir: Path
) -> dict[str, Path]:
    """All figures into `plot_dir`; returns name -> path."""
    return {
        "adaptation_curves": adaptation_curves(summary, plot_dir / "adaptation_curves.png"),
        "meta_training": meta_training_curve(curves, plot_dir / "meta_training.png"),
        "scores_by_family": scores_by_family(summary, plot_dir / "scores_by_family.png"),
    }
