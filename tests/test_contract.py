"""The contract: internal consistency and the generated C# file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avatar_meta import codegen, contract


def test_observation_layout_is_contiguous_and_sized() -> None:
    assert contract.OBSERVATION_SIZE == 35
    end = 0
    for name, size in contract.OBSERVATION_LAYOUT:
        assert contract.OBS[name] == slice(end, end + size)
        end += size
    assert end == contract.OBSERVATION_SIZE
    assert contract.OBS["rays"].stop - contract.OBS["rays"].start == contract.NUM_RAYS
    assert contract.OBS["landmarks"].stop - contract.OBS["landmarks"].start == 2 * len(
        contract.LANDMARKS
    )


def test_action_spec_and_mask_rule() -> None:
    assert contract.NUM_CONTINUOUS_ACTIONS == 2
    assert contract.DISCRETE_BRANCHES == (4,)
    assert contract.gesture_allowed(0.0, 2.0) == (True, True, True, True)
    assert contract.gesture_allowed(1.0, 2.0) == (True, True, True, True)
    assert contract.gesture_allowed(1.01, 2.0) == (True, False, False, False)
    assert contract.gesture_allowed(-1.5, 2.0) == (True, False, False, False)


def test_families_are_indexed_and_params_unique() -> None:
    assert [f.index for f in contract.FAMILIES] == list(range(len(contract.FAMILIES)))
    assert {f.name for f in contract.FAMILIES} == {
        "reach_landmark",
        "follow_visitor",
        "greet_visitor",
        "keep_distance",
        "pace_match",
        "patrol",
    }
    names = [p.name for f in contract.FAMILIES for p in f.params]
    names += [p.name for p in contract.BODY_PARAMS]
    # Parameter names double as EnvironmentParameters keys, so they must be unique.
    assert len(names) == len(set(names))
    assert contract.ENV_PARAM_FAMILY not in names


def test_param_clip() -> None:
    landmark = contract.FAMILY_BY_NAME["reach_landmark"].params[0]
    assert landmark.clip(7.3) == 2.0 and landmark.clip(0.6) == 1.0
    assert contract.BODY_PARAMS[0].clip(9.0) == 3.0


def test_generated_csharp_is_fresh() -> None:
    """Fails when contract.py changed without `make codegen`."""
    assert codegen.CSHARP_PATH.exists(), "run `make codegen`"
    assert codegen.CSHARP_PATH.read_text() == codegen.render_csharp(), "stale: run `make codegen`"
    check = subprocess.run([sys.executable, "-m", "avatar_meta.codegen", "--check"])
    assert check.returncode == 0


def test_generated_csharp_carries_every_number() -> None:
    text = codegen.render_csharp()
    assert f"ObservationSize = {contract.OBSERVATION_SIZE};" in text
    assert contract.TASK_CHANNEL_ID in text and contract.POLICY_CHANNEL_ID in text
    for family in contract.FAMILIES:
        assert f'"{family.name}"' in text
        for p in family.params:
            assert f'"{p.name}"' in text
    for name, _ in contract.OBSERVATION_LAYOUT:
        assert f"= {contract.OBS[name].start};" in text


def test_param_clip_turns_nan_into_midpoint() -> None:
    landmark = contract.FAMILY_BY_NAME["reach_landmark"].params[0]
    assert landmark.clip(float("nan")) == 1.0
    assert contract.BODY_PARAMS[0].clip(float("nan")) == 2.0


def test_a_checkpoint_for_another_contract_is_refused_with_the_fix(tmp_path: Path) -> None:
    from avatar_meta.export.checkpoint import load_policy
    from avatar_meta.rl.policy import Policy, PolicySpec
    from avatar_meta.serve.adapter import Adapter, make_checkpoint
    from avatar_meta.training.checkpoints import load_checkpoint

    # A v1 checkpoint recorded no version: its first layer reads 32 observations.
    params, buffers = Policy(PolicySpec(obs_size=32, hidden=(8, 8))).init(seed=0)
    old = tmp_path / "v1.pt"
    torch.save({"params": params, "buffers": buffers, "config": {}}, old)
    for load in (load_policy, load_checkpoint, Adapter):
        with pytest.raises(ValueError) as err:
            load(old)
        message = str(err.value)
        assert "contract v1 (32 observations)" in message and "v2 (35" in message
        assert "train it again" in message
    # Today's checkpoints record the version, and load.
    current = make_checkpoint(tmp_path / "v2.pt", hidden=(8, 8))
    assert torch.load(current, weights_only=False)["contract"] == contract.CONTRACT_VERSION
    assert load_policy(current)[0].obs_size == contract.OBSERVATION_SIZE
    assert Adapter(current).spec.obs_size == contract.OBSERVATION_SIZE
