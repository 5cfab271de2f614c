"""The Sentis ONNX contract checker, against mlagents' own ModelSerializer output.

The reference model is exported exactly as `mlagents-learn` does it (ModelSerializer on a
TorchPolicy with a SimpleActor), with the avatar-meta export fix installed so that it works on
torch >= 2.9. The checker must accept it for our spec and reject models broken in the ways
Unity's loader would reject them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from avatar_meta import contract
from avatar_meta.export import check_sentis_contract
from avatar_meta.plugin import export_fix

OBS_SHAPES = [[contract.OBSERVATION_SIZE]]
CONTINUOUS = contract.NUM_CONTINUOUS_ACTIONS
BRANCHES = list(contract.DISCRETE_BRANCHES)


def make_policy(obs_size: int, continuous: int, branches: Sequence[int], seed: int = 0) -> Any:
    """A small mlagents TorchPolicy with the actor `mlagents-learn` PPO builds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlagents.trainers.policy.torch_policy import TorchPolicy
        from mlagents.trainers.settings import NetworkSettings
        from mlagents.trainers.torch_entities.networks import SimpleActor
        from mlagents_envs.base_env import (
            ActionSpec,
            BehaviorSpec,
            DimensionProperty,
            ObservationSpec,
            ObservationType,
        )

    spec = BehaviorSpec(
        [
            ObservationSpec(
                (obs_size,), (DimensionProperty.NONE,), ObservationType.DEFAULT, "VectorSensor"
            )
        ],
        ActionSpec(continuous, tuple(branches)),
    )
    settings = NetworkSettings(normalize=True, hidden_units=32, num_layers=2)
    return TorchPolicy(
        seed, spec, settings, SimpleActor, {"conditional_sigma": False, "tanh_squash": False}
    )


def export_with_mlagents(policy: Any, stem: Path) -> Path:
    """Export like mlagents' TorchModelSaver does; returns the .onnx path."""
    from mlagents.trainers.torch_entities.model_serialization import ModelSerializer

    ModelSerializer(policy).export_policy_model(str(stem))
    return stem.with_suffix(".onnx")


@pytest.fixture(scope="module")
def patched() -> Iterator[None]:
    was_installed = export_fix.is_installed()
    assert export_fix.install(), "the export fix must apply on this stack (torch >= 2.9)"
    yield
    if not was_installed:
        export_fix.uninstall()


@pytest.fixture(scope="module")
def policy() -> Any:
    return make_policy(contract.OBSERVATION_SIZE, CONTINUOUS, BRANCHES)


@pytest.fixture(scope="module")
def reference(patched: None, policy: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_with_mlagents(policy, tmp_path_factory.mktemp("onnx") / "AvatarAgent")


def _rename_input(model: onnx.ModelProto, old: str, new: str) -> None:
    for value_info in model.graph.input:
        if value_info.name == old:
            value_info.name = new
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _constant_feeding(model: onnx.ModelProto, output: str) -> onnx.TensorProto:
    """The initializer behind a constant output (the exporter writes Identity(initializer))."""
    producer = next(n for n in model.graph.node if output in n.output)
    source = producer.input[0]
    return next(t for t in model.graph.initializer if t.name == source)


# ------------------------------------------------------------------------------------------------
# The reference model passes
# ------------------------------------------------------------------------------------------------
def test_mlagents_export_of_our_spec_passes(reference: Path) -> None:
    assert check_sentis_contract(reference, OBS_SHAPES, CONTINUOUS, BRANCHES) == []


def test_checker_accepts_model_proto_and_bytes(reference: Path) -> None:
    model = onnx.load(str(reference))
    assert check_sentis_contract(model, OBS_SHAPES, CONTINUOUS, BRANCHES) == []
    assert check_sentis_contract(reference.read_bytes(), OBS_SHAPES, CONTINUOUS, BRANCHES) == []


def test_reference_is_a_torchscript_opset_9_graph(reference: Path) -> None:
    model = onnx.load(str(reference))
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 9)]
    assert len(model.functions) == 0
    assert [i.name for i in model.graph.input] == ["obs_0", "action_masks"]


def test_onnxruntime_matches_torch(reference: Path, policy: Any) -> None:
    import onnxruntime as ort
    import torch
    from mlagents.trainers.torch_entities.model_serialization import exporting_to_onnx

    rng = np.random.default_rng(0)
    obs = rng.normal(size=(5, contract.OBSERVATION_SIZE)).astype(np.float32)
    masks = np.ones((5, sum(BRANCHES)), dtype=np.float32)
    masks[2, 1:] = 0.0  # agent 2 is moving fast: gestures masked
    session = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(names, {"obs_0": obs, "action_masks": masks}), strict=True))

    with torch.no_grad(), exporting_to_onnx():
        out = policy.actor([torch.from_numpy(obs)], torch.from_numpy(masks), None)
    want = dict(zip(names, [np.asarray(t) for t in out], strict=True))
    for name in ("version_number", "memory_size", "continuous_action_output_shape"):
        np.testing.assert_allclose(got[name].reshape(-1), want[name].reshape(-1))
    np.testing.assert_allclose(
        got["deterministic_continuous_actions"],
        want["deterministic_continuous_actions"],
        rtol=1e-4,
        atol=1e-5,
    )
    np.testing.assert_array_equal(
        got["deterministic_discrete_actions"], want["deterministic_discrete_actions"]
    )
    assert got["deterministic_discrete_actions"][2, 0] == 0


@pytest.mark.parametrize(("continuous", "branches"), [(2, []), (0, [4]), (0, [3, 2]), (3, [2, 2])])
def test_other_action_specs_pass(
    patched: None, tmp_path: Path, continuous: int, branches: list[int]
) -> None:
    path = export_with_mlagents(make_policy(6, continuous, branches), tmp_path / "Other")
    assert check_sentis_contract(path, [[6]], continuous, branches) == []


# ------------------------------------------------------------------------------------------------
# Broken models are reported
# ------------------------------------------------------------------------------------------------
def test_missing_version_number_output(reference: Path) -> None:
    model = onnx.load(str(reference))
    keep = [o for o in model.graph.output if o.name != "version_number"]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    problems = check_sentis_contract(model, OBS_SHAPES, CONTINUOUS, BRANCHES)
    assert any("'version_number'" in p and "missing" in p for p in problems), problems


def test_wrong_observation_input_name(reference: Path) -> None:
    model = onnx.load(str(reference))
    _rename_input(model, "obs_0", "vector_observation")
    problems = check_sentis_contract(model, OBS_SHAPES, CONTINUOUS, BRANCHES)
    assert any("missing input 'obs_0'" in p for p in problems), problems
    assert any("unexpected input 'vector_observation'" in p for p in problems), problems


def test_wrong_version_number_value(reference: Path) -> None:
    model = onnx.load(str(reference))
    tensor = _constant_feeding(model, "version_number")
    tensor.CopyFrom(numpy_helper.from_array(np.array([2.0], dtype=np.float32), tensor.name))
    problems = check_sentis_contract(model, OBS_SHAPES, CONTINUOUS, BRANCHES)
    assert any("'version_number' is [2.0], expected [3]" in p for p in problems), problems


def test_spec_mismatch_is_reported(reference: Path) -> None:
    problems = check_sentis_contract(reference, [[contract.OBSERVATION_SIZE + 1]], 3, [4, 2])
    joined = "\n".join(problems)
    assert f"dimension 1 is {contract.OBSERVATION_SIZE}" in joined
    assert "'continuous_action_output_shape' is [2.0], expected [3]" in joined
    assert "'discrete_action_output_shape' is [4.0], expected [4, 2]" in joined
    assert len(problems) == len(set(problems))


def test_missing_action_masks_and_extra_outputs(reference: Path) -> None:
    problems = check_sentis_contract(reference, OBS_SHAPES, CONTINUOUS, [])
    assert any("no discrete branches" in p for p in problems), problems
    problems = check_sentis_contract(reference, OBS_SHAPES + [[4]], CONTINUOUS, BRANCHES)
    assert any("missing input 'obs_1'" in p for p in problems), problems


def test_opset_outside_sentis_range(reference: Path) -> None:
    model = onnx.load(str(reference))
    model.opset_import[0].version = 17
    problems = check_sentis_contract(model, OBS_SHAPES, CONTINUOUS, BRANCHES)
    assert any("opset 17 is outside" in p for p in problems), problems


def test_foreign_domain_and_functions(reference: Path) -> None:
    model = onnx.load(str(reference))
    model.opset_import.append(helper.make_opsetid("pkg.onnxscript.torch_lib", 1))
    model.functions.append(
        helper.make_function(
            "pkg.onnxscript.torch_lib",
            "aten_noop",
            ["x"],
            ["y"],
            [helper.make_node("Identity", ["x"], ["y"])],
            [helper.make_opsetid("", 9)],
        )
    )
    problems = check_sentis_contract(model, OBS_SHAPES, CONTINUOUS, BRANCHES)
    assert any("opset domain 'pkg.onnxscript.torch_lib'" in p for p in problems), problems
    assert any("local functions" in p for p in problems), problems


def test_fixed_batch_dimension(reference: Path) -> None:
    model = onnx.load(str(reference))
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_value = 1
    problems = check_sentis_contract(model, OBS_SHAPES, CONTINUOUS, BRANCHES)
    assert any("fixed batch dimension" in p for p in problems), problems


def test_masks_with_inverted_convention_are_caught(reference: Path) -> None:
    # A graph that treats action_masks as 1 = masked picks a masked gesture: insert 1 - mask.
    model = onnx.load(str(reference))
    _rename_input(model, "action_masks", "action_masks_inverted")
    for value_info in model.graph.input:
        if value_info.name == "action_masks_inverted":
            value_info.name = "action_masks"
    one = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one_for_inversion")
    model.graph.initializer.append(one)
    model.graph.node.insert(
        0, helper.make_node("Sub", ["one_for_inversion", "action_masks"], ["action_masks_inverted"])
    )
    problems = check_sentis_contract(model, OBS_SHAPES, CONTINUOUS, BRANCHES)
    assert any("picks masked actions" in p for p in problems), problems


def test_garbage_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "not.onnx"
    path.write_bytes(b"not an onnx model")
    problems = check_sentis_contract(path, OBS_SHAPES, CONTINUOUS, BRANCHES)
    assert problems and "cannot load" in problems[0]
