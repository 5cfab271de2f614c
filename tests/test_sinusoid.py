"""A short MAML run on the sinusoid benchmark learns an initialisation that adapts."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from avatar_meta.meta.sinusoid import SinusoidConfig, evaluate, init_mlp, train


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    """Small ops: one thread is fastest and robust when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_few_hundred_meta_iterations_make_adaptation_work() -> None:
    torch.manual_seed(0)
    cfg = replace(SinusoidConfig(), iterations=400, eval_tasks=300, eval_steps=(0, 1, 10), seed=0)
    params = train(cfg)
    ev = evaluate(params, cfg)["mse"]
    untrained = evaluate(init_mlp(cfg.hidden, cfg.seed), cfg)["mse"]
    # Seeds 0-3 gave 10-step/0-step ~0.54, 1-step/0-step ~0.73, trained/untrained ~0.4.
    # Adaptation helps, clearly and monotonically, after meta-training ...
    assert ev["10"] < 0.7 * ev["0"], ev
    assert ev["1"] < 0.9 * ev["0"], ev
    # ... and far better than fine-tuning the untrained network.
    assert ev["10"] < 0.6 * untrained["10"], (ev, untrained)
