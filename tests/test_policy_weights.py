"""PolicyWeights: exact round trip, signatures that refuse what they must, and the reference
evaluator that the C# evaluator mirrors (shared vectors in tests/vectors/policy_v1.json).

Regenerate the vectors (new key, same policy and inputs) with
    .venv/bin/python tests/test_policy_weights.py
"""

from __future__ import annotations

import base64
import json
import stat
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from avatar_meta import contract
from avatar_meta.export import policy_weights, signing
from avatar_meta.export.reference_eval import ReferencePolicy
from avatar_meta.proto_gen.v1 import policy_weights_pb2 as pw
from avatar_meta.rl.policy import Buffers, Params, Policy, PolicySpec, update_obs_stats

torch.set_num_threads(1)
VECTORS = Path(__file__).parent / "vectors" / "policy_v1.json"
VECTOR_SPEC = PolicySpec(hidden=(16, 16))
VECTOR_SEED = 11


def trained_like(spec: PolicySpec, seed: int) -> tuple[Params, Buffers]:
    """Deterministic weights and statistics far from init (clamps and masks matter)."""
    params, buffers = Policy(spec).init(seed)
    gen = torch.Generator().manual_seed(seed + 100)
    params = {k: v + 0.4 * torch.randn(v.shape, generator=gen) for k, v in params.items()}
    data = 0.3 + 0.8 * torch.randn(50, spec.obs_size, generator=gen)
    return params, update_obs_stats(buffers, data)


def vector_inputs(spec: PolicySpec) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(VECTOR_SEED)
    obs = rng.normal(size=(8, spec.obs_size)).astype(np.float32)
    masked = rng.random((8, spec.num_discrete)) < 0.5
    masked[:, 0] = False
    return obs, masked


@pytest.fixture(scope="module")
def key() -> Any:
    return signing.generate_private_key()


@pytest.fixture(scope="module")
def packed() -> pw.PolicyWeights:
    return policy_weights.pack(
        VECTOR_SPEC, *trained_like(VECTOR_SPEC, 1), version=3, task_id="greet/1", behavior_name="A"
    )


def test_round_trip_is_exact(packed: pw.PolicyWeights) -> None:
    params, buffers = trained_like(VECTOR_SPEC, 1)
    spec, got_params, got_buffers = policy_weights.unpack(
        pw.PolicyWeights.FromString(packed.SerializeToString())
    )
    assert spec == VECTOR_SPEC
    assert list(got_params) == list(params)
    for name in params:
        assert torch.equal(got_params[name], params[name]), name
    for name in buffers:
        assert torch.equal(got_buffers[name], buffers[name].to(got_buffers[name].dtype)), name
    assert packed.policy_version == 3 and packed.task_id == "greet/1"


def test_actor_only_packing_acts_the_same(packed: pw.PolicyWeights) -> None:
    params, buffers = trained_like(VECTOR_SPEC, 1)
    small = policy_weights.pack(VECTOR_SPEC, params, buffers, version=3, has_critic=False)
    assert len(small.weights) < len(packed.weights)
    obs, masked = vector_inputs(VECTOR_SPEC)
    a, b = ReferencePolicy.from_weights(small), ReferencePolicy.from_weights(packed)
    for x, y in zip(a.act(obs, masked), b.act(obs, masked), strict=True):
        np.testing.assert_array_equal(x, y)


def test_signature_accepts_and_refuses(key: Any, packed: pw.PolicyWeights) -> None:
    public = key.public_key()
    envelope = signing.sign(packed, key)
    assert signing.verify(envelope.SerializeToString(), public) == packed

    tampered = pw.PolicyWeightsEnvelope()
    tampered.CopyFrom(envelope)
    payload = bytearray(envelope.payload)
    payload[payload.index(packed.weights) + 5] ^= 0x01  # one byte of the weights
    tampered.payload = bytes(payload)
    with pytest.raises(signing.VerificationError, match="tampered"):
        signing.verify(tampered, public)

    other = signing.generate_private_key().public_key()
    with pytest.raises(signing.VerificationError, match="trusts key"):
        signing.verify(envelope, other)

    unsigned = pw.PolicyWeightsEnvelope(payload=envelope.payload)
    with pytest.raises(signing.VerificationError, match="unsigned"):
        signing.verify(unsigned, public)
    with pytest.raises(signing.VerificationError, match="not a PolicyWeightsEnvelope"):
        signing.verify(b"\xff\xff garbage", public)


def test_keypair_files(tmp_path: Path, packed: pw.PolicyWeights) -> None:
    private_path, public_path = signing.write_keypair(tmp_path / "keys")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    envelope = signing.sign(packed, signing.load_private_key(private_path))
    assert signing.verify(envelope, signing.load_public_key(public_path)) == packed
    with pytest.raises(FileExistsError):
        signing.write_keypair(tmp_path / "keys")


@pytest.mark.parametrize(
    "spec",
    [
        VECTOR_SPEC,
        PolicySpec(hidden=(64, 64)),
        PolicySpec(obs_size=5, hidden=(8,), activation="relu", discrete_branches=(2, 3)),
        PolicySpec(obs_size=5, hidden=(8, 4), normalize_obs=False, num_continuous=3),
    ],
)
def test_reference_evaluator_equals_torch(spec: PolicySpec) -> None:
    params, buffers = trained_like(spec, 2)
    ref = ReferencePolicy.from_weights(policy_weights.pack(spec, params, buffers, version=1))
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(256, spec.obs_size)).astype(np.float32)
    masked = rng.random((256, spec.num_discrete)) < 0.4
    cont, disc = ref.act(obs, masked)
    want = Policy(spec).act(
        params, buffers, torch.from_numpy(obs), torch.from_numpy(masked), deterministic=True
    )
    np.testing.assert_allclose(cont, want.cont_action.clamp(-1, 1).numpy(), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(disc, want.gesture.numpy())


def test_cli_keygen_and_export(tmp_path: Path) -> None:
    from avatar_meta.cli import main
    from avatar_meta.export import check_sentis_contract

    assert main(["keygen", "--out-dir", str(tmp_path / "k")]) == 0
    assert main(["keygen", "--out-dir", str(tmp_path / "k")]) == 2  # never overwrites
    spec = PolicySpec(hidden=(16, 16), activation="relu")
    params, buffers = trained_like(spec, 5)
    config = {"policy": {"hidden": [16, 16], "activation": "relu", "normalize_obs": True}}
    checkpoint = tmp_path / "maml.pt"
    torch.save({"params": params, "buffers": buffers, "config": config}, checkpoint)
    out = tmp_path / "out"
    args = ["export", str(checkpoint), "--out-dir", str(out), "--sign-key"]
    assert main([*args, str(tmp_path / "k" / "private.pem"), "--policy-version", "9"]) == 0
    assert check_sentis_contract(out / "AvatarAgent.onnx", [[spec.obs_size]], 2, [4]) == []
    public = signing.load_public_key(tmp_path / "k" / "public.pem")
    weights = signing.verify((out / "AvatarAgent.weights.bin").read_bytes(), public)
    assert weights.policy_version == 9 and not weights.descriptor.has_critic


# ------------------------------------------------------------------------------------------------
# Shared test vectors for the C# evaluator
# ------------------------------------------------------------------------------------------------
def build_vectors(private_key: Any) -> dict[str, Any]:
    """The vector file's content for `private_key` (deterministic given the key)."""
    params, buffers = trained_like(VECTOR_SPEC, VECTOR_SEED)
    weights = policy_weights.pack(
        VECTOR_SPEC,
        params,
        buffers,
        version=1,
        task_id="greet_visitor/vectors",
        behavior_name=contract.BEHAVIOR_NAME,
        created_at_ms=1_800_000_000_000,
    )
    envelope = signing.sign(weights, private_key)
    tampered = bytearray(envelope.SerializeToString())
    tampered[len(tampered) // 3] ^= 0x10
    obs, masked = vector_inputs(VECTOR_SPEC)
    cont, disc = ReferencePolicy.from_weights(weights).act(obs, masked)
    return {
        "description": "PolicyWeights v1 vectors; see docs/exports.md and tests/test_policy_weights.py",
        "public_key_pem": signing.public_pem(private_key.public_key()).decode("ascii"),
        "key_id": envelope.key_id,
        "envelope_b64": base64.b64encode(envelope.SerializeToString()).decode("ascii"),
        "tampered_envelope_b64": base64.b64encode(bytes(tampered)).decode("ascii"),
        "spec": VECTOR_SPEC.to_dict(),
        "obs": obs.tolist(),
        "action_mask_masked": masked.astype(int).tolist(),
        "expected_continuous": cont.astype(float).tolist(),
        "expected_discrete": disc.tolist(),
        "tolerance": 1e-5,
    }


def test_vectors_are_consistent_and_current() -> None:
    data = json.loads(VECTORS.read_text())
    public = signing.load_public_key(data["public_key_pem"].encode("ascii"))
    weights = signing.verify(base64.b64decode(data["envelope_b64"]), public)
    with pytest.raises(signing.VerificationError):
        signing.verify(base64.b64decode(data["tampered_envelope_b64"]), public)
    # Current: the envelope holds exactly today's vector policy and spec.
    spec, params, buffers = policy_weights.unpack(weights)
    want_params, want_buffers = trained_like(VECTOR_SPEC, VECTOR_SEED)
    assert spec == VECTOR_SPEC and data["spec"] == VECTOR_SPEC.to_dict()
    # orthogonal init goes through a QR decomposition whose last bit depends on the CPU's
    # LAPACK code path, so today's weights match the stored ones to float32 rounding only
    for k in want_params:
        torch.testing.assert_close(params[k], want_params[k], atol=1e-6, rtol=0)
    assert torch.equal(buffers["obs_mean"], want_buffers["obs_mean"])
    obs = np.asarray(data["obs"], dtype=np.float32)
    masked = np.asarray(data["action_mask_masked"], dtype=bool)
    np.testing.assert_array_equal((obs, masked)[0], vector_inputs(VECTOR_SPEC)[0])
    cont, disc = ReferencePolicy.from_weights(weights).act(obs, masked)
    np.testing.assert_allclose(cont, data["expected_continuous"], atol=1e-6, rtol=0)
    np.testing.assert_array_equal(disc, data["expected_discrete"])
    torch_act = Policy(spec).act(
        params, buffers, torch.from_numpy(obs), torch.from_numpy(masked), deterministic=True
    )
    np.testing.assert_allclose(
        data["expected_continuous"], torch_act.cont_action.clamp(-1, 1).numpy(), atol=1e-5
    )
    np.testing.assert_array_equal(data["expected_discrete"], torch_act.gesture.numpy())


if __name__ == "__main__":
    VECTORS.parent.mkdir(parents=True, exist_ok=True)
    VECTORS.write_text(json.dumps(build_vectors(signing.generate_private_key()), indent=1) + "\n")
    print(f"wrote {VECTORS}", file=sys.stderr)


def test_a_task_context_is_folded_before_packing() -> None:
    """A CAVIA policy packs as the plain MLP the C# evaluator runs, acting identically."""
    spec = PolicySpec(hidden=(16, 16), context_size=3)
    params, buffers = trained_like(spec, 4)
    weights = policy_weights.pack(spec, params, buffers, version=1)
    got_spec, got_params, got_buffers = policy_weights.unpack(weights)
    assert got_spec.context_size == 0 and "actor.context" not in got_params
    obs, masked = vector_inputs(spec)
    cont, disc = ReferencePolicy.from_weights(weights).act(obs, masked)
    want = Policy(spec).act(
        params, buffers, torch.from_numpy(obs), torch.from_numpy(masked), deterministic=True
    )
    np.testing.assert_allclose(cont, want.cont_action.clamp(-1, 1).numpy(), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(disc, want.gesture.numpy())
