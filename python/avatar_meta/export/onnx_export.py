"""Export an `rl.Policy` (spec + params + buffers) as an ML-Agents 3.x (Sentis) ONNX model.

The graph honours the contract `onnx_contract.check_sentis_contract` checks (the same names,
shapes and constant outputs as mlagents' own `ModelSerializer` export):

inputs   obs_0 [batch, obs_size] float32; action_masks [batch, sum(branches)] float32, 1 = allowed
outputs  version_number [1] = 3, memory_size [1] = 0,
         continuous_actions [batch, C], continuous_action_output_shape [1] = C,
         deterministic_continuous_actions [batch, C],
         discrete_actions [batch, B], discrete_action_output_shape [B] = branch sizes,
         deterministic_discrete_actions [batch, B]

Continuous convention (`CONTINUOUS_CONVENTION`, also written into PolicyWeights): our trainer
sends the *raw* Gaussian action and the avatar clips it to [-1, 1] (contract v2; the headless
world and the Unity agent do the same). ML-Agents' own export instead emits clamp(x, -3, 3) / 3,
because its trainer squashes that way before the env sees the action. Emitting that here would
shrink every command by 3x, so the graph emits `clamp(action, -1, 1)`: exactly what the agent
applies after its own clip, and inside the [-1, 1] range designers expect in ActionBuffers.
`deterministic_continuous_actions` = clamp(mean, -1, 1); `continuous_actions` adds
exp(log_std) * N(0, 1) noise before the clamp (RandomNormalLike, as ML-Agents' sampling does).

Masks: our policy uses True = masked; the graph computes `logits * m + (1 - m) * MASKED_LOGIT`
from the allowed-mask `m`, which is bit-identical to `masked_fill(~m, MASKED_LOGIT)` for 0/1
masks, so the deterministic gesture equals torch's argmax exactly.

Adaptation never re-exports: `OnnxTemplate` exports one graph per `PolicySpec` (constant
folding off, so every parameter and normalisation buffer stays a named initializer) and makes
the model for new weights by replacing initializer tensors only.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Mapping

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import Tensor

from avatar_meta.rl.policy import (
    MASKED_LOGIT,
    Buffers,
    Params,
    PolicySpec,
    fold_context,
    param_shapes,
)

OPSET = 9
"""The opset mlagents exports with (Sentis imports 7-15)."""
MODEL_API_VERSION = 3
CONTINUOUS_CONVENTION = "clip_unit"
"""Continuous outputs are clamp(action, -1, 1); see the module docstring."""
BUFFER_NAMES = ("obs_mean", "obs_var")
"""Normalisation buffers that become initializers (obs_count is not part of inference)."""


def initializer_name(name: str) -> str:
    """ONNX initializer name of a parameter or buffer (`actor.0.weight` -> `actor__0__weight`)."""
    return name.replace(".", "__")


class _ExportModule(torch.nn.Module):
    """The inference graph as an nn.Module, so the TorchScript exporter keeps the parameters as
    named initializers. Mirrors `Policy.forward` + `Policy.act(deterministic=True)`."""

    def __init__(self, spec: PolicySpec, params: Params, buffers: Buffers) -> None:
        super().__init__()
        self.spec = spec
        for name in param_shapes(spec):
            tensor = params[name].detach().to(torch.float32).clone()
            self.register_parameter(
                initializer_name(name), torch.nn.Parameter(tensor, requires_grad=False)
            )
        if spec.normalize_obs:
            for name in BUFFER_NAMES:
                self.register_buffer(name, buffers[name].detach().to(torch.float32).clone())
        # Constant outputs: buffers, so that they are initializers behind Identity nodes.
        self.register_buffer("version_number", torch.tensor([float(MODEL_API_VERSION)]))
        self.register_buffer("memory_size", torch.tensor([0.0]))
        self.register_buffer("cont_shape", torch.tensor([float(spec.num_continuous)]))
        self.register_buffer(
            "disc_shape", torch.tensor([[float(b) for b in spec.discrete_branches]])
        )

    def _p(self, name: str) -> Tensor:
        """A parameter or buffer by its policy name (typed: nn.Module attributes are not)."""
        value: Tensor = getattr(self, initializer_name(name))
        return value

    def _trunk(self, net: str, x: Tensor) -> Tensor:
        for i in range(len(self.spec.hidden)):
            x = F.linear(x, self._p(f"{net}.{i}.weight"), self._p(f"{net}.{i}.bias"))
            x = torch.tanh(x) if self.spec.activation == "tanh" else torch.relu(x)
        return x

    def forward(self, obs: Tensor, masks: Tensor | None = None) -> tuple[Tensor, ...]:
        spec = self.spec
        x = obs
        if spec.normalize_obs:
            x = (x - self._p("obs_mean")) / torch.sqrt(self._p("obs_var") + 1e-8)
            x = torch.clamp(x, -spec.obs_clip, spec.obs_clip)
        h = self._trunk("actor", x)
        outputs: list[Tensor] = [self._p("version_number") * 1.0, self._p("memory_size") * 1.0]
        if spec.num_continuous > 0:
            mean = F.linear(h, self._p("actor.mu.weight"), self._p("actor.mu.bias"))
            floor = spec.log_std_floor
            log_std = floor + F.softplus(self._p("actor.log_std") - floor)
            sample = mean + torch.exp(log_std) * torch.randn_like(mean)
            outputs += [
                torch.clamp(sample, -1.0, 1.0),
                self._p("cont_shape") * 1.0,
                torch.clamp(mean, -1.0, 1.0),
            ]
        if spec.discrete_branches:
            assert masks is not None
            logits = F.linear(h, self._p("actor.logits.weight"), self._p("actor.logits.bias"))
            logits = logits * masks + (1.0 - masks) * MASKED_LOGIT
            sampled, greedy = [], []
            for chunk in logits.split(list(spec.discrete_branches), dim=1):
                probs = torch.softmax(chunk, dim=1)
                sampled.append(torch.multinomial(probs, 1))
                greedy.append(torch.argmax(chunk, dim=1, keepdim=True))
            outputs += [torch.cat(sampled, 1), self._p("disc_shape") * 1.0, torch.cat(greedy, 1)]
        return tuple(outputs)


def output_names(spec: PolicySpec) -> list[str]:
    """Graph outputs in the order ML-Agents' ModelSerializer writes them."""
    names = ["version_number", "memory_size"]
    if spec.num_continuous > 0:
        names += [
            "continuous_actions",
            "continuous_action_output_shape",
            "deterministic_continuous_actions",
        ]
    if spec.discrete_branches:
        names += [
            "discrete_actions",
            "discrete_action_output_shape",
            "deterministic_discrete_actions",
        ]
    return names


def input_names(spec: PolicySpec) -> list[str]:
    return ["obs_0", "action_masks"] if spec.discrete_branches else ["obs_0"]


def _actor_names(spec: PolicySpec) -> list[str]:
    """Parameters the inference graph uses (the critic is not exported, as in ML-Agents)."""
    return [n for n in param_shapes(spec) if n.startswith("actor.")]


def _distinct_placeholders(spec: PolicySpec) -> tuple[Params, Buffers]:
    """Weights with pairwise different values: the TorchScript exporter merges initializers
    with equal contents (e.g. two zero biases), which would make them impossible to swap."""
    gen = torch.Generator().manual_seed(12345)
    params = {n: torch.rand(s, generator=gen) + 1.0 for n, s in param_shapes(spec).items()}
    buffers = {n: torch.rand(spec.obs_size, generator=gen) + 1.0 for n in BUFFER_NAMES}
    return params, buffers


def export_policy(spec: PolicySpec, params: Params, buffers: Buffers) -> onnx.ModelProto:
    """A fresh TorchScript export (dynamo=False, opset 9) of the deterministic+stochastic graph.

    Slow (tens to hundreds of ms): use `OnnxTemplate.model_for` for new weights of one spec.
    The graph is traced with distinct placeholder weights (see `_distinct_placeholders`) and the
    real tensors are written into its initializers afterwards.
    """
    spec, params = fold_context(spec, params)
    model = _export_graph(spec)
    replace_initializers(model, _tensors(spec, params, buffers))
    return model


def _export_graph(spec: PolicySpec) -> onnx.ModelProto:
    module = _ExportModule(spec, *_distinct_placeholders(spec)).eval()
    obs = torch.zeros(1, spec.obs_size)
    args: tuple[Tensor, ...] = (obs,)
    if spec.discrete_branches:
        args = (obs, torch.ones(1, spec.num_discrete))
    ins, outs = input_names(spec), output_names(spec)
    batched = [n for n in outs if not n.endswith(("_number", "_size", "_shape"))]
    dynamic_axes = {name: {0: "batch"} for name in ins + batched}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            buffer,  # type: ignore[arg-type]  # file-likes work (TorchScript exporter)
            input_names=ins,
            output_names=outs,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=False,  # keep every parameter a named initializer
            export_params=True,
            dynamo=False,
        )
    model = onnx.load_from_string(buffer.getvalue())
    _check_initializers(model, spec)
    return model


def _check_initializers(model: onnx.ModelProto, spec: PolicySpec) -> None:
    """The swap path relies on every parameter being an initializer under its own name."""
    present = {t.name for t in model.graph.initializer}
    wanted = {initializer_name(n) for n in _actor_names(spec)}
    if spec.normalize_obs:
        wanted |= set(BUFFER_NAMES)
    missing = sorted(wanted - present)
    if missing:
        raise RuntimeError(f"exported graph lost initializers {missing[:5]}; cannot swap weights")


def _tensors(spec: PolicySpec, params: Params, buffers: Buffers) -> dict[str, np.ndarray]:
    """Initializer name -> float32 array for every swappable tensor, shape-checked."""
    out: dict[str, np.ndarray] = {}
    shapes = param_shapes(spec)
    for name in _actor_names(spec):
        shape = shapes[name]
        value = params[name].detach().cpu().to(torch.float32).numpy()
        if tuple(value.shape) != shape:
            raise ValueError(f"parameter {name} has shape {value.shape}, spec says {shape}")
        out[initializer_name(name)] = value
    if spec.normalize_obs:
        for name in BUFFER_NAMES:
            value = buffers[name].detach().cpu().to(torch.float32).numpy()
            if value.shape != (spec.obs_size,):
                raise ValueError(f"buffer {name} has shape {value.shape}, want ({spec.obs_size},)")
            out[name] = value
    return out


class OnnxTemplate:
    """One exported graph per PolicySpec; new weights only replace initializer tensors.

    Thread-safe (the adaptation service calls it from worker threads): the export of a spec
    happens once under a lock, and `model_for` works on a copy of the cached graph.
    """

    def __init__(self) -> None:
        self._graphs: dict[PolicySpec, onnx.ModelProto] = {}
        self._lock = threading.Lock()

    def template(self, spec: PolicySpec) -> onnx.ModelProto:
        """The cached graph for `spec` (placeholder weights; do not run it as is)."""
        with self._lock:
            cached = self._graphs.get(spec)
            if cached is None:
                cached = _export_graph(spec)
                self._graphs[spec] = cached
            return cached

    def model_for(self, spec: PolicySpec, params: Params, buffers: Buffers) -> onnx.ModelProto:
        """A model equal to `export_policy(spec, params, buffers)`, without exporting."""
        spec, params = fold_context(spec, params)
        model = onnx.ModelProto()
        model.CopyFrom(self.template(spec))
        replace_initializers(model, _tensors(spec, params, buffers))
        return model

    def bytes_for(self, spec: PolicySpec, params: Params, buffers: Buffers) -> bytes:
        """Serialised model (what the service returns as `onnx`)."""
        return self.model_for(spec, params, buffers).SerializeToString()


def replace_initializers(model: onnx.ModelProto, tensors: Mapping[str, np.ndarray]) -> None:
    """Overwrite the named initializers in place; raises if a name or a shape does not match."""
    seen = set()
    for init in model.graph.initializer:
        value = tensors.get(init.name)
        if value is None:
            continue
        if tuple(init.dims) != tuple(value.shape):
            raise ValueError(f"initializer {init.name}: shape {tuple(init.dims)} != {value.shape}")
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), init.name))
        seen.add(init.name)
    missing = sorted(set(tensors) - seen)
    if missing:
        raise ValueError(f"model has no initializers {missing[:5]}")
