"""The dependency stack that mlagents-envs 1.1.0 needs is what setup installed.

If anything upgrades protobuf (onnxruntime > 1.26 does) or numpy, these fail first, with a
message that says what moved, instead of the protocol tests failing in obscure ways.
"""

from __future__ import annotations

import importlib.metadata as md

import numpy as np
import pytest

from avatar_meta import compat


def test_protobuf_is_3_20_and_mlagents_messages_round_trip() -> None:
    assert md.version("protobuf").startswith("3.20."), "mlagents-envs 1.1.0 needs protobuf 3.20.x"
    compat.check_stack()


def test_agent_info_round_trips_with_float_observations() -> None:
    from mlagents_envs.communicator_objects.agent_info_pb2 import AgentInfoProto
    from mlagents_envs.communicator_objects.observation_pb2 import ObservationProto

    obs = ObservationProto(shape=[3], name="VectorSensor")
    obs.float_data.data.extend([0.5, -1.0, 2.0])
    info = AgentInfoProto(reward=1.5, done=True, max_step_reached=True, id=7)
    info.observations.append(obs)
    back = AgentInfoProto.FromString(info.SerializeToString())
    assert back.id == 7 and back.max_step_reached
    assert list(back.observations[0].float_data.data) == [0.5, -1.0, 2.0]


def test_pinned_versions_match_constraints() -> None:
    assert md.version("mlagents") == "1.1.0"
    assert md.version("mlagents-envs") == "1.1.0"
    import sys

    expected_ort = "1.26.0" if sys.version_info >= (3, 11) else "1.23.2"  # 1.26 has no 3.10 wheel
    assert md.version("onnxruntime") == expected_ort
    assert md.version("torch").startswith("2.13.0")
    # mlagents 1.1.0 still uses np.float, removed in numpy 1.24.
    assert np.__version__ == "1.23.5"


def test_stack_error_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import google.protobuf

    monkeypatch.setattr(google.protobuf, "__version__", "5.29.0")
    with pytest.raises(compat.StackError, match="make setup"):
        compat.check_stack()


def test_mlagents_trainers_import() -> None:
    from mlagents.trainers.learn import run_cli  # noqa: F401  (imports torch, pkg_resources, ...)


def test_setup_refuses_pythons_the_stack_cannot_run() -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "tools" / "check_python.py"

    def check(version: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), version], capture_output=True, text=True, check=False
        )

    assert check("3.11.7").returncode == 0
    assert check("3.10.13").returncode == 0
    refused = check("3.12.1")
    assert (
        refused.returncode == 1 and "np.float" in refused.stderr and "python3.11" in refused.stderr
    )
    assert check("3.9.18").returncode == 1
