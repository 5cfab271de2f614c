"""Check an ONNX policy against the contract ML-Agents 3.x (Sentis) expects of a model.

What the Unity side does with a model (com.unity.ml-agents, Runtime/Inference): it imports the
graph with Sentis (ONNX opsets 7-15), runs it once on zero inputs and reads the constant outputs
as float tensors (``version_number`` must be 3 for the ``obs_i`` naming, ``memory_size``,
``continuous_action_output_shape`` = number of continuous actions, ``discrete_action_output_shape``
= one entry per branch holding the branch size), then checks every model input against the
agent's sensors (``obs_<sensor index>`` with the sensor's shape behind a batch dimension;
``action_masks`` with 1 = allowed; ``recurrent_in`` when ``memory_size`` > 0) and rejects inputs it
does not know. Actions come from ``continuous_actions`` / ``discrete_actions`` (or the
``deterministic_*`` pair when deterministic inference is ticked), ``[batch, size]`` each.

`check_sentis_contract` verifies all of that statically and by running the model in onnxruntime
with a batch of 2, and returns a list of human-readable problems (empty = the model is fine).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto

MODEL_API_VERSION = 3
"""``version_number`` of ML-Agents 2.x/3.x models (all observations named ``obs_i``)."""
MIN_OPSET = 7
MAX_OPSET = 15
"""Sentis 2.x imports ONNX opsets 7 to 15 of the default domain."""
TEST_BATCH = 2

OBS_PREFIX = "obs_"
ACTION_MASKS = "action_masks"
RECURRENT_IN = "recurrent_in"
RECURRENT_OUT = "recurrent_out"
VERSION_NUMBER = "version_number"
MEMORY_SIZE = "memory_size"
CONTINUOUS_ACTIONS = "continuous_actions"
CONTINUOUS_SHAPE = "continuous_action_output_shape"
DETERMINISTIC_CONTINUOUS = "deterministic_continuous_actions"
DISCRETE_ACTIONS = "discrete_actions"
DISCRETE_SHAPE = "discrete_action_output_shape"
DETERMINISTIC_DISCRETE = "deterministic_discrete_actions"

CONTINUOUS_OUTPUTS = (CONTINUOUS_ACTIONS, CONTINUOUS_SHAPE, DETERMINISTIC_CONTINUOUS)
DISCRETE_OUTPUTS = (DISCRETE_ACTIONS, DISCRETE_SHAPE, DETERMINISTIC_DISCRETE)
LEGACY_INPUTS = ("prev_action", "epsilon", "sequence_length")
"""Inputs the Unity loader still tolerates (it fills them itself); we never export them."""

_FLOAT_TYPES = {TensorProto.FLOAT}
_ACTION_INDEX_TYPES = {TensorProto.INT64, TensorProto.INT32, TensorProto.FLOAT}
_DEFAULT_DOMAINS = ("", "ai.onnx")

ModelSource = str | os.PathLike[str] | bytes | onnx.ModelProto


def _load(source: ModelSource) -> onnx.ModelProto:
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, bytes):
        return onnx.load_from_string(source)
    return onnx.load(os.fspath(source))


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str | None]:
    """Static size, symbolic name, or None (unknown) for every dimension."""
    out: list[int | str | None] = []
    for dim in value_info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            out.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            out.append(dim.dim_param)
        else:
            out.append(None)
    return out


def _elem_type(value_info: onnx.ValueInfoProto) -> int:
    return int(value_info.type.tensor_type.elem_type)


def _type_name(elem_type: int) -> str:
    try:
        return str(TensorProto.DataType.Name(elem_type))
    except ValueError:
        return str(elem_type)


def _check_batched_input(
    problems: list[str],
    value_info: onnx.ValueInfoProto,
    expected: Sequence[int],
) -> None:
    name = value_info.name
    if _elem_type(value_info) not in _FLOAT_TYPES:
        problems.append(
            f"input {name!r} has type {_type_name(_elem_type(value_info))}, expected FLOAT"
        )
    dims = _dims(value_info)
    want = ["batch", *expected]
    if len(dims) != len(want):
        problems.append(f"input {name!r} has shape {dims}, expected {want}")
        return
    if isinstance(dims[0], int):
        problems.append(
            f"input {name!r} has a fixed batch dimension {dims[0]}; it must be dynamic "
            "(ML-Agents batches all agents that requested a decision)"
        )
    for axis, (got, size) in enumerate(zip(dims[1:], expected, strict=True), start=1):
        if got != size:
            problems.append(f"input {name!r} dimension {axis} is {got}, expected {size}")


def _static_checks(
    model: onnx.ModelProto,
    obs_shapes: Sequence[Sequence[int]],
    continuous_size: int,
    discrete_branches: Sequence[int],
) -> list[str]:
    problems: list[str] = []
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        problems.append(f"onnx.checker rejects the model: {str(err).splitlines()[0]}")

    # Opsets: only the default domain, 7..15; no ONNX functions (the dynamo exporter's output).
    default_opset = None
    for opset in model.opset_import:
        if opset.domain in _DEFAULT_DOMAINS:
            default_opset = int(opset.version)
        else:
            problems.append(
                f"model imports opset domain {opset.domain!r} (v{opset.version}); Sentis only "
                "reads the default ONNX domain"
            )
    if default_opset is None:
        problems.append("model declares no default-domain opset")
    elif not MIN_OPSET <= default_opset <= MAX_OPSET:
        problems.append(
            f"opset {default_opset} is outside the {MIN_OPSET}-{MAX_OPSET} range Sentis imports "
            "(export with the TorchScript exporter, dynamo=False, opset 9)"
        )
    if len(model.functions) > 0:
        names = sorted({f.name for f in model.functions})[:5]
        problems.append(f"model contains ONNX local functions {names}; Sentis cannot import them")

    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = {vi.name: vi for vi in graph.input if vi.name not in initializers}
    outputs = {vi.name: vi for vi in graph.output}

    # Inputs.
    for index, shape in enumerate(obs_shapes):
        name = f"{OBS_PREFIX}{index}"
        if name not in inputs:
            problems.append(f"missing input {name!r} (observation {index}, shape {list(shape)})")
        else:
            _check_batched_input(problems, inputs[name], [int(s) for s in shape])
    num_masks = int(sum(discrete_branches))
    if discrete_branches:
        if ACTION_MASKS not in inputs:
            problems.append(
                f"missing input {ACTION_MASKS!r} [batch, {num_masks}] for the discrete branches"
            )
        else:
            _check_batched_input(problems, inputs[ACTION_MASKS], [num_masks])
    allowed = {f"{OBS_PREFIX}{i}" for i in range(len(obs_shapes))}
    allowed |= {ACTION_MASKS, RECURRENT_IN, *LEGACY_INPUTS}
    for name in inputs:
        if name not in allowed:
            problems.append(f"unexpected input {name!r} (Unity rejects inputs it does not know)")

    # Outputs that must be graph outputs.
    required = [VERSION_NUMBER, MEMORY_SIZE]
    if continuous_size > 0:
        required += list(CONTINUOUS_OUTPUTS)
    if discrete_branches:
        required += list(DISCRETE_OUTPUTS)
    for name in required:
        if name not in outputs:
            problems.append(f"missing graph output {name!r}")
    if continuous_size == 0:
        for name in CONTINUOUS_OUTPUTS:
            if name in outputs:
                problems.append(f"output {name!r} present but the spec has no continuous actions")
    if not discrete_branches:
        for name in DISCRETE_OUTPUTS:
            if name in outputs:
                problems.append(f"output {name!r} present but the spec has no discrete branches")

    for name in (VERSION_NUMBER, MEMORY_SIZE, CONTINUOUS_SHAPE, DISCRETE_SHAPE):
        if name in outputs and _elem_type(outputs[name]) not in _FLOAT_TYPES:
            problems.append(
                f"output {name!r} has type {_type_name(_elem_type(outputs[name]))}; Unity reads "
                "it as a FLOAT tensor"
            )
    for name in (CONTINUOUS_ACTIONS, DETERMINISTIC_CONTINUOUS):
        if name in outputs and _elem_type(outputs[name]) not in _FLOAT_TYPES:
            problems.append(
                f"output {name!r} has type {_type_name(_elem_type(outputs[name]))}, expected FLOAT"
            )
    for name in (DISCRETE_ACTIONS, DETERMINISTIC_DISCRETE):
        if name in outputs and _elem_type(outputs[name]) not in _ACTION_INDEX_TYPES:
            problems.append(
                f"output {name!r} has type {_type_name(_elem_type(outputs[name]))}, expected "
                "INT64, INT32 or FLOAT action indices"
            )
    return problems


def _feed_value(
    value_info: onnx.ValueInfoProto, fill: float, mask: NDArray[Any] | None
) -> NDArray[Any]:
    if value_info.name == ACTION_MASKS and mask is not None:
        return mask
    dims = [d if isinstance(d, int) and d > 0 else TEST_BATCH for d in _dims(value_info)]
    if dims:
        dims[0] = TEST_BATCH
    value = 1.0 if value_info.name == ACTION_MASKS else fill
    if value_info.name in (RECURRENT_IN, *LEGACY_INPUTS):
        value = 0.0
    return np.full(dims, value, dtype=np.float32)


def _run(session: Any, feeds: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def _check_constant(
    problems: list[str], results: dict[str, NDArray[Any]], name: str, expected: Sequence[float]
) -> None:
    if name not in results:
        return
    got = np.asarray(results[name], dtype=np.float64).reshape(-1)
    if got.shape != (len(expected),) or not np.allclose(got, expected):
        problems.append(f"output {name!r} is {got.tolist()}, expected {list(expected)}")


def _runtime_checks(
    model: onnx.ModelProto,
    continuous_size: int,
    discrete_branches: Sequence[int],
) -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a package dependency
        return ["onnxruntime is not installed: cannot run the model"]

    problems: list[str] = []
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # onnxruntime raises several unrelated exception types
        return [f"onnxruntime cannot load the model: {err}"]

    initializers = {init.name for init in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in initializers]
    branches = [int(b) for b in discrete_branches]
    only_first = None
    if branches:
        only_first = np.zeros((TEST_BATCH, sum(branches)), dtype=np.float32)
        start = 0
        for size in branches:
            only_first[:, start] = 1.0  # allow only option 0 of every branch
            start += size

    cases: list[tuple[str, float, NDArray[Any] | None]] = [
        ("zeros", 0.0, None),
        ("ones", 1.0, None),
    ]
    if only_first is not None:
        cases.append(("ones, only option 0 allowed", 1.0, only_first))

    for label, fill, mask in cases:
        feeds = {vi.name: _feed_value(vi, fill, mask) for vi in inputs}
        try:
            results = _run(session, feeds)
        except Exception as err:
            problems.append(f"onnxruntime fails on {label} with batch {TEST_BATCH}: {err}")
            continue

        _check_constant(problems, results, VERSION_NUMBER, [MODEL_API_VERSION])
        if MEMORY_SIZE in results:
            memory = np.asarray(results[MEMORY_SIZE]).reshape(-1)
            if memory.size != 1 or memory[0] < 0:
                problems.append(
                    f"output {MEMORY_SIZE!r} is {memory.tolist()}, expected one value >= 0"
                )
            elif memory[0] > 0:
                for kind, name, present in (
                    ("input", RECURRENT_IN, RECURRENT_IN in feeds),
                    ("output", RECURRENT_OUT, RECURRENT_OUT in results),
                ):
                    if not present:
                        problems.append(
                            f"memory_size is {memory[0]:g} but there is no {name!r} {kind}"
                        )
        if continuous_size > 0:
            _check_constant(problems, results, CONTINUOUS_SHAPE, [continuous_size])
        if branches:
            _check_constant(problems, results, DISCRETE_SHAPE, branches)

        for name in (CONTINUOUS_ACTIONS, DETERMINISTIC_CONTINUOUS):
            if name not in results or continuous_size == 0:
                continue
            value = np.asarray(results[name])
            if value.shape != (TEST_BATCH, continuous_size):
                problems.append(
                    f"output {name!r} on {label} has shape {list(value.shape)}, "
                    f"expected [{TEST_BATCH}, {continuous_size}]"
                )
            elif not np.all(np.isfinite(value)):
                problems.append(f"output {name!r} on {label} is not finite: {value.tolist()}")
        for name in (DISCRETE_ACTIONS, DETERMINISTIC_DISCRETE):
            if name not in results or not branches:
                continue
            value = np.asarray(results[name])
            if value.shape != (TEST_BATCH, len(branches)):
                problems.append(
                    f"output {name!r} on {label} has shape {list(value.shape)}, "
                    f"expected [{TEST_BATCH}, {len(branches)}]"
                )
                continue
            for b, size in enumerate(branches):
                column = value[:, b]
                if (
                    np.any(column < 0)
                    or np.any(column >= size)
                    or np.any(column != np.round(column))
                ):
                    problems.append(
                        f"output {name!r} on {label}, branch {b}: {column.tolist()} are not "
                        f"action indices in 0..{size - 1}"
                    )
            if mask is not None and np.any(value != 0):
                problems.append(
                    f"output {name!r} picks masked actions {value.tolist()} when only option 0 is "
                    f"allowed ({ACTION_MASKS} must use 1 = allowed)"
                )
    return problems


def check_sentis_contract(
    path_or_model: ModelSource,
    obs_shapes: Sequence[Sequence[int]],
    continuous_size: int,
    discrete_branches: Sequence[int],
) -> list[str]:
    """Problems that would stop ML-Agents 3.x (Sentis) from running this policy; [] if none.

    ``obs_shapes`` are the sensors' shapes without the batch dimension, in sensor order
    (``[[contract.OBSERVATION_SIZE]]`` for the avatar). ``path_or_model`` is a file path, the
    serialised bytes or an ``onnx.ModelProto``.
    """
    try:
        model = _load(path_or_model)
    except Exception as err:  # unreadable file, not ONNX, ...
        return [f"cannot load the ONNX model: {err}"]
    problems = _static_checks(model, obs_shapes, continuous_size, discrete_branches)
    problems += _runtime_checks(model, continuous_size, discrete_branches)
    return list(dict.fromkeys(problems))  # the same fault seen on several inputs counts once
