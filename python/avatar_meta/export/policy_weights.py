"""Pack an `rl.Policy`'s spec, params and buffers into PolicyWeights, and back, exactly.

Weights layout ("mlp-actor-critic-v1", `PARAMETER_ORDER`): the float32 values of every
parameter in `rl.policy.param_shapes` order, each tensor row-major, concatenated, little-endian:

    for net in (actor, critic):            # critic only when descriptor.has_critic
        for i in range(len(hidden)):
            {net}.{i}.weight [hidden[i], in_i]     in_0 = obs_size, in_i = hidden[i-1]
            {net}.{i}.bias   [hidden[i]]
        actor:  actor.mu.weight [C, h_last], actor.mu.bias [C], actor.log_std [C] (raw),
                actor.logits.weight [sum(branches), h_last], actor.logits.bias [sum(branches)]
        critic: critic.value.weight [1, h_last], critic.value.bias [1]

The actor comes first, so an evaluator that only acts reads the prefix and ignores the critic.
Normalisation statistics travel in the descriptor (float32 mean/var, float64 count), not in
`weights`. See signing.py for how an envelope is signed and verified.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from avatar_meta.proto_gen.v1 import policy_weights_pb2 as pw
from avatar_meta.rl.policy import Buffers, Params, PolicySpec, fold_context, param_shapes

PARAMETER_ORDER = "mlp-actor-critic-v1"
NORM_EPSILON = 1e-8
"""`Policy.normalize` uses rsqrt(var + 1e-8)."""
_ACTIVATIONS = {"tanh": pw.ACTIVATION_TANH, "relu": pw.ACTIVATION_RELU}


def packed_names(spec: PolicySpec, has_critic: bool) -> list[str]:
    """Parameter names in the flat order (actor prefix, then the critic if present)."""
    names = list(param_shapes(spec))
    return names if has_critic else [n for n in names if n.startswith("actor.")]


def descriptor_for(
    spec: PolicySpec, buffers: Buffers, has_critic: bool = True
) -> pw.ArchitectureDescriptor:
    """The architecture descriptor of `spec` with these normalisation statistics."""
    desc = pw.ArchitectureDescriptor(
        contract_version=spec.contract_version,
        obs_size=spec.obs_size,
        hidden=list(spec.hidden),
        activation=_ACTIVATIONS[spec.activation],
        parameter_order=PARAMETER_ORDER,
        has_critic=has_critic,
    )
    norm = desc.normalization
    norm.enabled = spec.normalize_obs
    norm.mean.extend(buffers["obs_mean"].detach().cpu().to(torch.float32).tolist())
    norm.var.extend(buffers["obs_var"].detach().cpu().to(torch.float32).tolist())
    norm.clip = float(spec.obs_clip)
    norm.epsilon = NORM_EPSILON
    norm.count = float(buffers["obs_count"])
    act = desc.action_spec
    act.num_continuous = spec.num_continuous
    act.discrete_branches.extend(spec.discrete_branches)
    act.continuous_output = pw.CONTINUOUS_OUTPUT_CLIP_UNIT
    act.log_std_floor = float(spec.log_std_floor)
    act.log_std_init = float(spec.log_std_init)
    return desc


def pack(
    spec: PolicySpec,
    params: Params,
    buffers: Buffers,
    *,
    version: int,
    task_id: str = "",
    behavior_name: str = "",
    has_critic: bool = True,
    created_at_ms: int | None = None,
) -> pw.PolicyWeights:
    """PolicyWeights for this policy. `has_critic=False` ships only what acting needs. A task
    context (`PolicySpec.context_size`) is folded into the first layer's bias first."""
    spec, params = fold_context(spec, params)
    names = packed_names(spec, has_critic)
    shapes = param_shapes(spec)
    parts = []
    for name in names:
        value = params[name].detach().cpu().to(torch.float32)
        if tuple(value.shape) != shapes[name]:
            raise ValueError(
                f"parameter {name} has shape {tuple(value.shape)}, want {shapes[name]}"
            )
        parts.append(value.reshape(-1).numpy())
    flat = np.concatenate(parts).astype("<f4", copy=False)
    return pw.PolicyWeights(
        descriptor=descriptor_for(spec, buffers, has_critic),
        weights=flat.tobytes(),
        policy_version=int(version),
        task_id=task_id,
        created_at_unix_ms=int(time.time() * 1000) if created_at_ms is None else created_at_ms,
        behavior_name=behavior_name,
    )


def spec_from_descriptor(desc: pw.ArchitectureDescriptor) -> PolicySpec:
    """Rebuild the PolicySpec; ValueError naming the field when the descriptor is unusable."""
    if desc.parameter_order != PARAMETER_ORDER:
        raise ValueError(f"descriptor.parameter_order {desc.parameter_order!r} is not supported")
    names = {v: k for k, v in _ACTIVATIONS.items()}
    if desc.activation not in names:
        raise ValueError(f"descriptor.activation {desc.activation} is not supported")
    if desc.action_spec.continuous_output != pw.CONTINUOUS_OUTPUT_CLIP_UNIT:
        raise ValueError("descriptor.action_spec.continuous_output must be CLIP_UNIT")
    act, norm = desc.action_spec, desc.normalization
    return PolicySpec(
        obs_size=desc.obs_size,
        hidden=tuple(desc.hidden),
        activation=names[desc.activation],
        num_continuous=act.num_continuous,
        discrete_branches=tuple(act.discrete_branches),
        normalize_obs=norm.enabled,
        obs_clip=norm.clip,
        log_std_init=act.log_std_init,
        log_std_floor=act.log_std_floor,
        contract_version=desc.contract_version,
    )


def unpack(weights: pw.PolicyWeights) -> tuple[PolicySpec, Params, Buffers]:
    """(spec, params, buffers) with the exact float32 values that were packed."""
    desc = weights.descriptor
    spec = spec_from_descriptor(desc)
    shapes = param_shapes(spec)
    names = packed_names(spec, desc.has_critic)
    flat = np.frombuffer(weights.weights, dtype="<f4")
    sizes = [math.prod(shapes[n]) for n in names]
    if flat.size != sum(sizes):
        raise ValueError(f"weights hold {flat.size} floats; the descriptor needs {sum(sizes)}")
    params: Params = {}
    offset = 0
    for name, size in zip(names, sizes, strict=True):
        chunk = flat[offset : offset + size].astype(np.float32).reshape(shapes[name])
        params[name] = torch.from_numpy(chunk.copy())
        offset += size
    norm = desc.normalization
    if len(norm.mean) != spec.obs_size or len(norm.var) != spec.obs_size:
        raise ValueError("descriptor.normalization mean/var must have obs_size entries")
    buffers: Buffers = {
        "obs_mean": torch.tensor(np.asarray(norm.mean, dtype=np.float32)),
        "obs_var": torch.tensor(np.asarray(norm.var, dtype=np.float32)),
        "obs_count": torch.tensor(norm.count, dtype=torch.float64),
    }
    return spec, params, buffers
