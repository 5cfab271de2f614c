"""Our Sentis ONNX export: same interface as mlagents' ModelSerializer, same numbers as torch.

The reference interface is mlagents' own export of a TorchPolicy for the same observation and
action spec (helpers shared with test_onnx_contract.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from avatar_meta import contract
from avatar_meta.export import check_sentis_contract
from avatar_meta.export.onnx_export import OPSET, OnnxTemplate, export_policy
from avatar_meta.plugin import export_fix
from avatar_meta.rl.policy import Buffers, Params, Policy, PolicySpec
from test_onnx_contract import export_with_mlagents, make_policy

torch.set_num_threads(1)
SPEC = PolicySpec(hidden=(32, 32))


def _io(model: onnx.ModelProto) -> tuple[list[Any], list[Any]]:
    """(name, elem type, dims with symbolic batch as 'B') of inputs and outputs."""

    def describe(vi: onnx.ValueInfoProto) -> tuple[str, int, list[Any]]:
        dims = [
            d.dim_value if d.HasField("dim_value") else "B" for d in vi.type.tensor_type.shape.dim
        ]
        return vi.name, vi.type.tensor_type.elem_type, dims

    inits = {t.name for t in model.graph.initializer}
    ins = [describe(v) for v in model.graph.input if v.name not in inits]
    return ins, [describe(v) for v in model.graph.output]


def trained_like(spec: PolicySpec, seed: int) -> tuple[Params, Buffers]:
    """Weights and normalisation stats far from init, so clamps and masks matter."""
    params, buffers = Policy(spec).init(seed)
    gen = torch.Generator().manual_seed(seed + 100)
    params = {k: v + 0.3 * torch.randn(v.shape, generator=gen) for k, v in params.items()}
    buffers = dict(buffers)
    buffers["obs_mean"] = 0.2 * torch.randn(spec.obs_size, generator=gen)
    buffers["obs_var"] = 0.5 + torch.rand(spec.obs_size, generator=gen)
    return params, buffers


def run(model: onnx.ModelProto, obs: np.ndarray, allowed: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feeds = {"obs_0": obs, "action_masks": allowed}
    return dict(zip(names, session.run(names, feeds), strict=True))


def random_inputs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, contract.OBSERVATION_SIZE)).astype(np.float32)
    allowed = (rng.random((n, 4)) < 0.6).astype(np.float32)
    allowed[:, 0] = 1.0  # `none` is always allowed (contract rule)
    return obs, allowed


@pytest.fixture(scope="module")
def patched() -> Iterator[None]:
    was_installed = export_fix.is_installed()
    assert export_fix.install()
    yield
    if not was_installed:
        export_fix.uninstall()


@pytest.fixture(scope="module")
def weights() -> tuple[Params, Buffers]:
    return trained_like(SPEC, 0)


@pytest.fixture(scope="module")
def model(weights: tuple[Params, Buffers]) -> onnx.ModelProto:
    return export_policy(SPEC, *weights)


def test_interface_equals_mlagents_export(
    patched: None, model: onnx.ModelProto, tmp_path: Path
) -> None:
    reference = onnx.load(
        str(export_with_mlagents(make_policy(contract.OBSERVATION_SIZE, 2, [4]), tmp_path / "R"))
    )
    ours_in, ours_out = _io(model)
    ref_in, ref_out = _io(reference)
    assert ours_in == ref_in
    # Same output names in the same order, same shapes; element types may differ only where the
    # contract allows it (action indices: INT64 here, whatever mlagents' exporter produced).
    assert [(n, d) for n, _, d in ours_out] == [(n, d) for n, _, d in ref_out]
    ref_types = {n: t for n, t, _ in ref_out}
    for name, elem, _ in ours_out:
        if "discrete_actions" not in name:
            assert elem == ref_types[name], name
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]


def test_sentis_contract(model: onnx.ModelProto) -> None:
    assert check_sentis_contract(model, [[contract.OBSERVATION_SIZE]], 2, [4]) == []


def test_deterministic_outputs_equal_torch(
    model: onnx.ModelProto, weights: tuple[Params, Buffers]
) -> None:
    obs, allowed = random_inputs(64, 1)
    got = run(model, obs, allowed)
    act = Policy(SPEC).act(
        *weights, torch.from_numpy(obs), torch.from_numpy(allowed == 0), deterministic=True
    )
    want = act.cont_action.clamp(-1, 1).numpy()
    assert np.abs(act.cont_action.numpy()).max() > 1.0, "weights should exercise the clamp"
    np.testing.assert_allclose(got["deterministic_continuous_actions"], want, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(got["deterministic_discrete_actions"], act.gesture.numpy())
    assert np.all(allowed[np.arange(64), got["deterministic_discrete_actions"][:, 0]] == 1)
    # Stochastic outputs: in range, and only allowed gestures are ever sampled.
    assert np.all(np.abs(got["continuous_actions"]) <= 1.0)
    assert np.all(allowed[np.arange(64), got["discrete_actions"][:, 0]] == 1)


def test_other_specs_pass_the_contract() -> None:
    for spec in (
        PolicySpec(obs_size=6, hidden=(8,), activation="relu", normalize_obs=False),
        PolicySpec(obs_size=6, hidden=(8, 8), num_continuous=3, discrete_branches=(2, 3)),
    ):
        params, buffers = trained_like(spec, 3)
        problems = check_sentis_contract(
            export_policy(spec, params, buffers),
            [[spec.obs_size]],
            spec.num_continuous,
            list(spec.discrete_branches),
        )
        assert problems == []


def test_swapped_initializers_equal_fresh_export(weights: tuple[Params, Buffers]) -> None:
    template = OnnxTemplate()
    template.template(SPEC)
    obs, allowed = random_inputs(16, 2)
    timings = {"swap": 0.0, "export": 0.0}
    for seed in (5, 6):
        params, buffers = trained_like(SPEC, seed)
        start = time.perf_counter()
        swapped = template.model_for(SPEC, params, buffers)
        timings["swap"] += time.perf_counter() - start
        start = time.perf_counter()
        fresh = export_policy(SPEC, params, buffers)
        timings["export"] += time.perf_counter() - start
        a, b = run(swapped, obs, allowed), run(fresh, obs, allowed)
        for name in ("deterministic_continuous_actions", "deterministic_discrete_actions"):
            np.testing.assert_array_equal(a[name], b[name])
        assert swapped.graph.node == fresh.graph.node
    print(
        f"swap-initializers {timings['swap'] / 2 * 1e3:.1f} ms, re-export "
        f"{timings['export'] / 2 * 1e3:.1f} ms"
    )


def test_swap_rejects_wrong_shapes(weights: tuple[Params, Buffers]) -> None:
    params, buffers = weights
    bad = dict(params)
    bad["actor.mu.bias"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"actor\.mu\.bias"):
        OnnxTemplate().model_for(SPEC, bad, buffers)


def test_a_task_context_is_folded_into_the_plain_contract() -> None:
    """A policy with a CAVIA context exports as the plain MLP: same inputs and outputs, same
    deterministic actions as torch, and the template path gives the same model."""
    spec = PolicySpec(hidden=(32, 32), context_size=4)
    params, buffers = trained_like(spec, 5)
    model = export_policy(spec, params, buffers)
    assert _io(model) == _io(export_policy(SPEC, *trained_like(SPEC, 5)))
    obs, allowed = random_inputs(32, 2)
    act = Policy(spec).act(
        params, buffers, torch.from_numpy(obs), torch.from_numpy(allowed == 0), deterministic=True
    )
    got = run(model, obs, allowed)
    want = act.cont_action.clamp(-1, 1).numpy()
    np.testing.assert_allclose(got["deterministic_continuous_actions"], want, atol=1e-5, rtol=0)
    templated = run(OnnxTemplate().model_for(spec, params, buffers), obs, allowed)
    np.testing.assert_array_equal(
        templated["deterministic_continuous_actions"], got["deterministic_continuous_actions"]
    )
