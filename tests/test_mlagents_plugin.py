"""The mlagents-learn plugin: entry point discovery, the ONNX export fix, a real mlagents-learn run.

`avatar_meta.plugin:register_plugin` is declared in the `mlagents.trainer_type` entry-point
group; mlagents calls it from `register_trainer_plugins()` at start-up, and it installs the export
fix (TorchScript exporter, opset 9) into mlagents' model_serialization module only.
"""

from __future__ import annotations

import importlib.metadata as md
import inspect
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import avatar_meta.plugin
from avatar_meta import contract
from avatar_meta.export import check_sentis_contract
from avatar_meta.plugin import export_fix

REPO = Path(__file__).resolve().parents[1]
MLAGENTS_LEARN = Path(sys.executable).with_name("mlagents-learn")
OBS_SHAPES = [[contract.OBSERVATION_SIZE]]
BRANCHES = list(contract.DISCRETE_BRANCHES)


def _register() -> tuple[dict[str, Any], dict[str, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlagents.plugins.trainer_type import register_trainer_plugins

        return register_trainer_plugins()


def _model_serialization() -> Any:
    from mlagents.trainers.torch_entities import model_serialization

    return model_serialization


@pytest.fixture
def restore_patch_state() -> Iterator[None]:
    """Each test starts from 'not installed' and leaves the process as it found it."""
    was_installed = export_fix.is_installed()
    export_fix.uninstall()
    yield
    if was_installed:
        export_fix.install()
    else:
        export_fix.uninstall()


def _tiny_policy() -> Any:
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
                (contract.OBSERVATION_SIZE,),
                (DimensionProperty.NONE,),
                ObservationType.DEFAULT,
                contract.SENSOR_NAME,
            )
        ],
        ActionSpec(contract.NUM_CONTINUOUS_ACTIONS, contract.DISCRETE_BRANCHES),
    )
    return TorchPolicy(
        0,
        spec,
        NetworkSettings(hidden_units=16, num_layers=1),
        SimpleActor,
        {"conditional_sigma": False, "tanh_squash": False},
    )


# ------------------------------------------------------------------------------------------------
# (a) discovery
# ------------------------------------------------------------------------------------------------
def test_entry_point_is_declared_for_mlagents() -> None:
    group = md.entry_points(group="mlagents.trainer_type")
    ours = [ep for ep in group if ep.value == "avatar_meta.plugin:register_plugin"]
    assert ours, f"avatar_meta entry point not installed; found {[ep.value for ep in group]}"
    assert ours[0].load() is avatar_meta.plugin.register_plugin


def test_register_trainer_plugins_calls_ours(
    monkeypatch: pytest.MonkeyPatch, restore_patch_state: None
) -> None:
    calls: list[int] = []
    real = avatar_meta.plugin.register_plugin

    def spy() -> tuple[dict[str, Any], dict[str, Any]]:
        calls.append(1)
        return real()

    # entry_point.load() resolves the attribute on the module at call time.
    monkeypatch.setattr(avatar_meta.plugin, "register_plugin", spy)
    trainer_types, trainer_settings = _register()
    assert calls, "mlagents' register_trainer_plugins() did not call avatar_meta.plugin"
    assert {"ppo", "sac", "poca"} <= set(trainer_types) and set(trainer_types) == set(
        trainer_settings
    )
    assert export_fix.is_installed()


def test_register_plugin_returns_no_trainers_yet(restore_patch_state: None) -> None:
    assert avatar_meta.plugin.register_plugin() == ({}, {})


def test_mlagents_learn_cli_parsing_registers_the_plugin(restore_patch_state: None) -> None:
    """mlagents-learn's own start-up path (parse_command_line) reaches our entry point."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlagents.trainers.learn import parse_command_line

    options = parse_command_line([str(REPO / "config" / "ppo_avatar_ci.yaml"), "--run-id", "x"])
    assert "AvatarAgent" in options.behaviors
    assert export_fix.is_installed()


@pytest.mark.parametrize("name", ["ppo_avatar.yaml", "ppo_avatar_ci.yaml"])
def test_shipped_configs_are_valid_mlagents_configs(name: str, restore_patch_state: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlagents.trainers.learn import parse_command_line

    options = parse_command_line([str(REPO / "config" / name), "--run-id", "x"])
    behavior = options.behaviors[contract.BEHAVIOR_NAME]
    assert behavior.trainer_type == "ppo"
    assert (behavior.network_settings.hidden_units, behavior.network_settings.num_layers) == (
        128,
        2,
    )
    assert options.environment_parameters is not None
    assert contract.ENV_PARAM_FAMILY in options.environment_parameters


# ------------------------------------------------------------------------------------------------
# (b) the patch: on after registration, off with AVATAR_META_PATCH_EXPORT=0, narrow, faithful
# ------------------------------------------------------------------------------------------------
def test_patch_active_after_registration_and_idempotent(restore_patch_state: None) -> None:
    import torch

    module = _model_serialization()
    assert module.torch is torch
    _register()
    proxy = module.torch
    assert export_fix.is_installed() and proxy is not torch
    avatar_meta.plugin.register_plugin()
    _register()
    assert module.torch is proxy, "registering again must not wrap the proxy again"
    # Only mlagents' view changed: torch itself and its default exporter are untouched.
    assert not getattr(torch.onnx.export, "__avatar_meta_export_fix__", False)
    assert getattr(proxy.onnx.export, "__avatar_meta_export_fix__", False)
    assert (
        proxy.zeros is torch.zeros and proxy.onnx.is_in_onnx_export is torch.onnx.is_in_onnx_export
    )


@pytest.mark.parametrize("value", ["0", "false", "OFF", "no"])
def test_patch_off_with_env_var(
    monkeypatch: pytest.MonkeyPatch, restore_patch_state: None, value: str
) -> None:
    export_fix.install()
    monkeypatch.setenv(export_fix.ENV_VAR, value)
    _register()
    assert not export_fix.is_installed()
    import torch

    assert _model_serialization().torch is torch


def test_patch_on_for_other_env_values(
    monkeypatch: pytest.MonkeyPatch, restore_patch_state: None
) -> None:
    monkeypatch.setenv(export_fix.ENV_VAR, "1")
    _register()
    assert export_fix.is_installed()


def test_env_var_off_in_a_fresh_mlagents_process() -> None:
    code = (
        "import warnings; warnings.simplefilter('ignore')\n"
        "import torch\n"
        "from mlagents.trainers.learn import parse_command_line\n"
        f"parse_command_line([{str(REPO / 'config' / 'ppo_avatar_ci.yaml')!r}])\n"
        "from mlagents.trainers.torch_entities import model_serialization as ms\n"
        "print('PATCHED' if ms.torch is not torch else 'UNPATCHED')\n"
    )
    for value, want in (("0", "UNPATCHED"), ("1", "PATCHED")):
        env = {**os.environ, export_fix.ENV_VAR: value}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == want


def test_wrapper_forces_torchscript_and_keeps_other_arguments(
    monkeypatch: pytest.MonkeyPatch, restore_patch_state: None
) -> None:
    import torch

    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fake_export(
        model: Any, args: Any = (), f: Any = None, *, dynamo: bool = True, **kw: Any
    ) -> None:
        seen.append(((model, args, f), {"dynamo": dynamo, **kw}))

    monkeypatch.setattr(torch.onnx, "export", fake_export)
    assert export_fix.install()
    exported = _model_serialization().torch.onnx.export
    exported("m", ("x",), "out.onnx", input_names=["obs_0"], dynamic_axes={"obs_0": {0: "batch"}})
    exported("m", ("x",), "out.onnx", opset_version=11, dynamo=True)
    assert seen[0] == (
        ("m", ("x",), "out.onnx"),
        {
            "dynamo": False,
            "opset_version": 9,
            "input_names": ["obs_0"],
            "dynamic_axes": {"obs_0": {0: "batch"}},
        },
    )
    assert seen[1][1] == {"dynamo": False, "opset_version": 11}


def test_info_line_logged_once(
    monkeypatch: pytest.MonkeyPatch, restore_patch_state: None, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(export_fix, "_announced", False)
    with caplog.at_level(logging.INFO, logger=export_fix.__name__):
        export_fix.install()
        export_fix.uninstall()
        export_fix.install()
    lines = [r.getMessage() for r in caplog.records if "TorchScript exporter" in r.getMessage()]
    assert len(lines) == 1 and export_fix.ENV_VAR in lines[0]


def test_patched_mlagents_export_passes_the_contract(
    restore_patch_state: None, tmp_path: Path
) -> None:
    from mlagents.trainers.torch_entities.model_serialization import ModelSerializer

    export_fix.install()
    ModelSerializer(_tiny_policy()).export_policy_model(str(tmp_path / "AvatarAgent"))
    problems = check_sentis_contract(
        tmp_path / "AvatarAgent.onnx", OBS_SHAPES, contract.NUM_CONTINUOUS_ACTIONS, BRANCHES
    )
    assert problems == []


# ------------------------------------------------------------------------------------------------
# (d) without the patch, mlagents' export on this torch is broken
# ------------------------------------------------------------------------------------------------
def test_unpatched_export_fails_or_breaks_the_contract(
    restore_patch_state: None, tmp_path: Path
) -> None:
    import torch

    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        pytest.skip(f"torch {torch.__version__} has only the TorchScript exporter")
    from mlagents.trainers.torch_entities.model_serialization import ModelSerializer

    assert not export_fix.is_installed()
    policy = _tiny_policy()
    stem = tmp_path / "Unpatched"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ModelSerializer(policy).export_policy_model(str(stem))
    except Exception as err:  # torch >= 2.9 without onnxscript: ModuleNotFoundError
        failure = f"{type(err).__name__}: {err}"
    else:
        problems = check_sentis_contract(
            stem.with_suffix(".onnx"), OBS_SHAPES, contract.NUM_CONTINUOUS_ACTIONS, BRANCHES
        )
        assert problems, "the unpatched (dynamo) export unexpectedly meets the Sentis contract"
        failure = "; ".join(problems)
    # The same policy exports fine once the fix is in: the exporter was the problem.
    export_fix.install()
    ModelSerializer(policy).export_policy_model(str(tmp_path / "Patched"))
    assert (
        check_sentis_contract(
            tmp_path / "Patched.onnx", OBS_SHAPES, contract.NUM_CONTINUOUS_ACTIONS, BRANCHES
        )
        == []
    ), f"patched export broken too (unpatched failure was: {failure})"


# ------------------------------------------------------------------------------------------------
# (c) a real, stock mlagents-learn run on the headless world
# ------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _world_log(run_dir: Path) -> str:
    logs = sorted((run_dir / "run_logs").glob("Player-*.log"))
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in logs) or "(none)"


RUN_TIMEOUT_S = 300


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_stock_mlagents_learn_trains_and_exports_a_sentis_model(tmp_path: Path) -> None:
    from avatar_meta.world.launcher import world_executable_path

    world = os.fspath(world_executable_path())
    assert MLAGENTS_LEARN.exists(), f"{MLAGENTS_LEARN} is missing"
    run_id = "ci_ppo"
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k != export_fix.ENV_VAR}
    command = [
        str(MLAGENTS_LEARN),
        str(REPO / "config" / "ppo_avatar_ci.yaml"),
        "--env", world,
        "--run-id", run_id,
        "--no-graphics",
        "--base-port", str(_free_port()),
        "--results-dir", str(results),
        "--force",
    ]  # fmt: skip
    started = time.monotonic()
    # Own session: on a hang, kill mlagents-learn together with its env-worker processes.
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        log, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(
            f"mlagents-learn did not finish within {RUN_TIMEOUT_S} s (normally ~20 s):\n"
            f"{log[-4000:]}\n--- world log ---\n{_world_log(results / run_id)}"
        )
    wall = time.monotonic() - started
    print(f"mlagents-learn wall time: {wall:.1f} s")
    assert proc.returncode == 0, (
        f"mlagents-learn exited {proc.returncode}:\n{log[-6000:]}\n"
        f"--- world log ---\n{_world_log(results / run_id)}"
    )

    onnx_path = results / run_id / f"{contract.BEHAVIOR_NAME}.onnx"
    assert onnx_path.exists(), f"no {onnx_path}:\n{log[-4000:]}"
    assert "TorchScript exporter" in log, "the export fix did not announce itself"
    assert re.search(rf"{contract.BEHAVIOR_NAME}\. Step: \d+", log), log[-4000:]
    problems = check_sentis_contract(
        onnx_path, OBS_SHAPES, contract.NUM_CONTINUOUS_ACTIONS, BRANCHES
    )
    assert problems == [], problems

    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        "obs_0": rng.uniform(-1, 1, (4, contract.OBSERVATION_SIZE)).astype(np.float32),
        "action_masks": np.ones((4, sum(BRANCHES)), dtype=np.float32),
    }
    cont, disc = session.run(["deterministic_continuous_actions", "discrete_actions"], feeds)
    assert cont.shape == (4, contract.NUM_CONTINUOUS_ACTIONS) and np.all(np.isfinite(cont))
    assert disc.shape == (4, 1) and np.all((disc >= 0) & (disc < BRANCHES[0]))
