"""The reference evaluator of PolicyWeights: numpy only, the algorithm the C# evaluator mirrors.

It reads a verified `PolicyWeights` message directly (descriptor + flat float32 weights, see
policy_weights.py for the layout) and computes the deterministic action, step by step:

1. z = (obs - mean) / sqrt(var + epsilon), clamped to [-clip, clip]   (if normalisation enabled)
2. h = act(W_i h + b_i) for each hidden layer (tanh or relu), h_0 = z
3. continuous = clamp(W_mu h + b_mu, -1, 1)                           (CONTINUOUS_OUTPUT_CLIP_UNIT)
4. logits = W_l h + b_l; masked entries (mask True = not allowed) set to -1e8; per branch the
   index of the first maximum is the discrete action.

Arithmetic is float64 on float32 weights (C# `double`), so it matches torch's float32 to ~1e-6.
No torch and no `rl/` import: the headless world runs this for its `inference` areas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar_meta.proto_gen.v1 import policy_weights_pb2 as pw

MASKED_LOGIT = -1e8
SUPPORTED_ORDER = "mlp-actor-critic-v1"


@dataclass(frozen=True)
class ReferencePolicy:
    """Actor weights of one PolicyWeights, ready to evaluate."""

    obs_size: int
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    relu: bool
    mu: tuple[np.ndarray, np.ndarray]
    logits: tuple[np.ndarray, np.ndarray]
    branches: tuple[int, ...]
    norm: tuple[np.ndarray, np.ndarray, float] | None
    version: int
    task_id: str

    @staticmethod
    def from_weights(weights: pw.PolicyWeights) -> ReferencePolicy:
        """Slice the actor out of the flat weights; ValueError if the message is inconsistent."""
        desc = weights.descriptor
        if desc.parameter_order != SUPPORTED_ORDER:
            raise ValueError(f"unsupported parameter_order {desc.parameter_order!r}")
        if desc.activation not in (pw.ACTIVATION_TANH, pw.ACTIVATION_RELU):
            raise ValueError(f"unsupported activation {desc.activation}")
        if desc.action_spec.continuous_output != pw.CONTINUOUS_OUTPUT_CLIP_UNIT:
            raise ValueError("unsupported continuous_output")
        if desc.obs_size <= 0 or not desc.hidden or min(desc.hidden) <= 0:
            raise ValueError("descriptor needs obs_size > 0 and positive hidden widths")
        flat = np.frombuffer(weights.weights, dtype="<f4").astype(np.float64)
        offset = 0

        def take(*shape: int) -> np.ndarray:
            nonlocal offset
            size = int(np.prod(shape))
            if offset + size > flat.size:
                raise ValueError(f"weights end after {flat.size} floats; need more")
            out = flat[offset : offset + size].reshape(shape)
            offset += size
            return out

        layers = []
        width = desc.obs_size
        for h in desc.hidden:
            layers.append((take(h, width), take(h)))
            width = h
        cont = desc.action_spec.num_continuous
        branches = tuple(int(b) for b in desc.action_spec.discrete_branches)
        mu = (take(cont, width), take(cont))
        take(cont)  # raw log-std: only sampling needs it
        logits = (take(sum(branches), width), take(sum(branches)))
        norm_msg = desc.normalization
        norm = None
        if norm_msg.enabled:
            mean = np.asarray(norm_msg.mean, dtype=np.float32).astype(np.float64)
            var = np.asarray(norm_msg.var, dtype=np.float32).astype(np.float64)
            if mean.shape != (desc.obs_size,) or var.shape != (desc.obs_size,):
                raise ValueError("normalization mean/var must have obs_size entries")
            norm = (mean, 1.0 / np.sqrt(var + norm_msg.epsilon), float(norm_msg.clip))
        return ReferencePolicy(
            obs_size=desc.obs_size,
            layers=tuple(layers),
            relu=desc.activation == pw.ACTIVATION_RELU,
            mu=mu,
            logits=logits,
            branches=branches,
            norm=norm,
            version=int(weights.policy_version),
            task_id=weights.task_id,
        )

    def act(self, obs: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic (continuous [N, C] float32, discrete [N, B] int64) for obs [N, obs_size];
        `mask` [N, sum(branches)] bool, True = masked (the ML-Agents protocol convention)."""
        x = np.asarray(obs, dtype=np.float32).astype(np.float64)
        if x.ndim != 2 or x.shape[1] != self.obs_size:
            raise ValueError(f"obs must be [N, {self.obs_size}], got {list(x.shape)}")
        if self.norm is not None:
            mean, inv_std, clip = self.norm
            x = np.clip((x - mean) * inv_std, -clip, clip)
        for weight, bias in self.layers:
            x = x @ weight.T + bias
            x = np.maximum(x, 0.0) if self.relu else np.tanh(x)
        cont = np.clip(x @ self.mu[0].T + self.mu[1], -1.0, 1.0).astype(np.float32)
        logits = x @ self.logits[0].T + self.logits[1]
        if mask is not None:
            logits = np.where(np.asarray(mask, dtype=bool), MASKED_LOGIT, logits)
        choices, start = [], 0
        for size in self.branches:
            choices.append(np.argmax(logits[:, start : start + size], axis=1))
            start += size
        discrete = (
            np.stack(choices, axis=1).astype(np.int64)
            if choices
            else np.zeros((x.shape[0], 0), np.int64)
        )
        return cont, discrete
