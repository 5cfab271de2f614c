"""`avatar-meta export`: a training checkpoint to a Sentis ONNX model and signed PolicyWeights.

Checkpoints are the meta-training job's `results/<run>/checkpoints/<algorithm>.pt` (a dict
with `params`, `buffers` and the run's `config`, whose `policy` section holds the PolicySpec
fields; runs with one meta-policy per family also hold `params_by_key`, keyed by family
name, and `params` repeats the first). The exported policy is the meta-learned
initialisation itself; adapted policies leave the trainer through the PolicyChannel or the
adaptation service instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from avatar_meta import contract
from avatar_meta.export import policy_weights, signing
from avatar_meta.export.onnx_export import export_policy
from avatar_meta.rl.policy import Buffers, Params, PolicySpec

_SPEC_FIELDS = (
    "hidden",
    "activation",
    "normalize_obs",
    "obs_clip",
    "log_std_init",
    "context_size",
    "log_std_floor",
)


def policy_keys(path: str | Path) -> list[str]:
    """The meta-policies a checkpoint holds (family names, or ["all"]); [] if it has one
    unnamed policy."""
    payload: dict[str, Any] = torch.load(Path(path), map_location="cpu", weights_only=False)
    return list(payload.get("policy_keys") or []) if isinstance(payload, dict) else []


def trained_contract(payload: dict[str, Any]) -> str | None:
    """The avatar contract a checkpoint payload was trained for: as recorded, else (checkpoints
    from before v2 did not record it) read off its first layer's input width; None if neither
    tells."""
    if payload.get("contract"):
        return str(payload["contract"])
    weight = (payload.get("params") or {}).get("actor.0.weight")
    if weight is None:
        return None
    policy = (payload.get("config") or {}).get("policy") or {}
    width = int(weight.shape[1]) - int(policy.get("context_size") or 0)
    by_width = {size: v for v, size in contract.OBSERVATION_SIZE_BY_VERSION.items()}
    return by_width.get(width)


def load_payload(path: str | Path) -> Any:
    """A checkpoint's payload, on the CPU; ValueError if it was trained for another avatar
    contract (every reader of run checkpoints goes through here)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    if isinstance(payload, dict):
        contract.require_contract(trained_contract(payload), str(path))
    return payload


def load_policy(path: str | Path, key: str | None = None) -> tuple[PolicySpec, Params, Buffers]:
    """(spec, params, buffers) of a checkpoint; `key` picks one meta-policy of a per-family
    checkpoint (None = its first). ValueError naming what is missing."""
    payload = load_payload(path)
    if not isinstance(payload, dict) or "params" not in payload or "buffers" not in payload:
        raise ValueError(f"{path} is not an avatar-meta checkpoint (no params/buffers)")
    params = payload["params"]
    if key is not None:
        by_key = payload.get("params_by_key") or {}
        if key not in by_key:
            raise ValueError(
                f"{path} has no meta-policy {key!r}; it holds {sorted(by_key) or ['one']} "
                "(pass one of those as --family)"
            )
        params = by_key[key]
    section = dict((payload.get("config") or {}).get("policy") or {})
    fields = {k: section[k] for k in _SPEC_FIELDS if k in section}
    if "hidden" in fields:
        fields["hidden"] = tuple(fields["hidden"])
    return PolicySpec(**fields), dict(params), dict(payload["buffers"])


@dataclass(frozen=True)
class ExportResult:
    onnx: Path
    weights: Path | None


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    sign_key: str | Path | None = None,
    version: int = 1,
    task_id: str = "",
    behavior: str = contract.BEHAVIOR_NAME,
    family: str | None = None,
    stem: str | None = None,
) -> ExportResult:
    """Write `<stem>.onnx` and, with a private key, `<stem>.weights.bin` (a signed
    PolicyWeightsEnvelope; stem defaults to the behaviour name). `family` picks one
    meta-policy of a per-family checkpoint. Unsigned weights are never written: clients
    would refuse them."""
    spec, params, buffers = load_policy(checkpoint, family)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = stem or behavior
    onnx_path = folder / f"{stem}.onnx"
    onnx_path.write_bytes(export_policy(spec, params, buffers).SerializeToString())
    weights_path = None
    if sign_key is not None:
        packed = policy_weights.pack(
            spec,
            params,
            buffers,
            version=version,
            task_id=task_id,
            behavior_name=behavior,
            has_critic=False,
        )
        envelope = signing.sign(packed, signing.load_private_key(sign_key))
        weights_path = folder / f"{stem}.weights.bin"
        weights_path.write_bytes(envelope.SerializeToString())
    return ExportResult(onnx_path, weights_path)
