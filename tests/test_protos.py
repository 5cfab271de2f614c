"""The committed protos/ stubs are fresh, and they run beside mlagents-envs' messages.

Both the generated avatar_meta.v1 modules and mlagents-envs' shipped `_pb2` modules must work on
the one protobuf runtime of the venv (3.20.3, pure Python on 3.11; design.md section 3).
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY_STUBS = ROOT / "python" / "avatar_meta" / "proto_gen"
CS_STUBS = ROOT / "unity_project" / "Packages" / "com.avatarmeta.agents" / "Runtime" / "Proto"


def _files(folder: Path, pattern: str) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob(pattern))}


@pytest.mark.skipif(
    shutil.which("protoc") is None or not Path("/usr/bin/grpc_python_plugin").exists(),
    reason="protoc / grpc_python_plugin not installed (tools/setup_venv.sh installs them)",
)
def test_committed_stubs_are_up_to_date(tmp_path: Path) -> None:
    py_out, cs_out = tmp_path / "py", tmp_path / "cs"
    subprocess.run(
        [str(ROOT / "tools" / "gen_protos.sh"), str(py_out), str(cs_out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    for fresh_dir, committed_dir, pattern in (
        (py_out, PY_STUBS, "*.py*"),
        (cs_out, CS_STUBS, "*.cs"),
    ):
        fresh, committed = _files(fresh_dir, pattern), _files(committed_dir, pattern)
        assert sorted(fresh) == sorted(committed), "run tools/gen_protos.sh"
        stale = [n for n in fresh if not filecmp.cmp(fresh[n], committed[n], shallow=False)]
        assert not stale, f"stale generated files {stale}: run tools/gen_protos.sh"


def test_messages_round_trip_beside_mlagents() -> None:
    import google.protobuf
    from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto

    from avatar_meta.proto_gen.v1 import adaptation_service_pb2 as svc
    from avatar_meta.proto_gen.v1 import adaptation_service_pb2_grpc as svc_grpc
    from avatar_meta.proto_gen.v1 import policy_weights_pb2 as pw

    assert google.protobuf.__version__.startswith("3.20.")
    weights = pw.PolicyWeights(policy_version=7, task_id="greet/3", behavior_name="AvatarAgent")
    weights.descriptor.hidden.extend([64, 64])
    weights.descriptor.activation = pw.ACTIVATION_TANH
    weights.descriptor.normalization.mean.extend([0.5, -0.25])
    weights.weights = b"\x00\x00\x80\x3f"
    envelope = pw.PolicyWeightsEnvelope(payload=weights.SerializeToString(), signature=b"s")
    request = svc.AdaptRequest(behavior_name="AvatarAgent", want_onnx=True)
    episode = request.episodes.add(steps=2, obs_size=1)
    episode.obs.extend([1.0, 2.0])
    response = svc.AdaptResponse(weights=envelope, onnx=b"onnx")

    assert pw.PolicyWeights.FromString(envelope.payload) == weights
    assert svc.AdaptRequest.FromString(request.SerializeToString()) == request
    assert svc.AdaptResponse.FromString(response.SerializeToString()) == response
    assert hasattr(svc_grpc, "AdaptationServiceStub")
    assert hasattr(svc_grpc, "add_AdaptationServiceServicer_to_server")

    message = UnityMessageProto()
    message.header.status = 200
    message.unity_output.rl_initialization_output.name = "w"
    assert UnityMessageProto.FromString(message.SerializeToString()) == message


def test_the_servicer_overrides_every_rpc_of_the_generated_base() -> None:
    """protoc's servicer base answers every RPC with UNIMPLEMENTED (`NotImplementedError`);
    `serve.service.AdaptationServicer` must replace each RPC the proto declares."""
    from avatar_meta.proto_gen.v1 import adaptation_service_pb2 as svc
    from avatar_meta.proto_gen.v1 import adaptation_service_pb2_grpc as svc_grpc
    from avatar_meta.serve.service import AdaptationServicer

    rpcs = [m.name for m in svc.DESCRIPTOR.services_by_name["AdaptationService"].methods]
    assert rpcs == ["Adapt", "Subscribe", "Stats"]
    base = svc_grpc.AdaptationServiceServicer
    for name in rpcs:
        assert getattr(AdaptationServicer, name) is not getattr(base, name), name
