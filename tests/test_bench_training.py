"""`avatar-meta bench training`: its pieces on tiny sizes (the full suite is a benchmark)."""

from __future__ import annotations

import numpy as np
import torch

from avatar_meta.benchmarks import SUITES
from avatar_meta.benchmarks.training import steps_to_reach, vmap_vs_loop, wall_time_share
from avatar_meta.config import config_from_dict

torch.set_num_threads(1)


def test_suite_is_registered() -> None:
    assert SUITES["training"] == "avatar_meta.benchmarks.training"


def test_steps_to_reach_is_the_first_crossing() -> None:
    steps = np.array([0, 4000, 8000, 12000])
    assert steps_to_reach(np.array([0.1, 0.95, 0.5, 0.99]), steps, 0.9) == 4000
    assert steps_to_reach(np.array([0.9, 0.1, 0.2, 0.3]), steps, 0.9) == 0
    assert steps_to_reach(np.array([0.1, 0.2, 0.3, 0.89]), steps, 0.9) is None


def test_vmap_and_loop_are_timed_on_the_same_sizes() -> None:
    out = vmap_vs_loop({"small": (3, 20)}, repeats=1)
    row = out["small"]
    assert (row["tasks"], row["transitions_per_task"]) == (3, 20)
    assert row["vmap"]["median_s"] > 0 and row["loop_baseline"]["median_s"] > 0
    assert row["speedup_median"] == round(
        row["loop_baseline"]["median_s"] / row["vmap"]["median_s"], 2
    )


def test_wall_time_share_splits_a_real_meta_iteration() -> None:
    config = config_from_dict(
        {
            "env": {"inprocess": True, "num_areas": 4},
            "tasks": {"n_train": 4, "n_heldout": 2, "families": ["keep_distance"]},
            "meta": {"meta_batch_size": 2, "support_episodes": 1, "query_episodes": 1},
            "baselines": {"methods": []},
            "output": {"progress": False, "tensorboard": False},
        }
    )
    out = wall_time_share(config, iterations=1)
    assert out["meta_iterations"] == 1 and out["env_steps"] >= 2 * 2 * 200
    assert out["env_s"] > 0 and out["learn_s"] > 0
    assert abs(out["env_share"] + out["learn_share"] - 1.0) < 2e-3
