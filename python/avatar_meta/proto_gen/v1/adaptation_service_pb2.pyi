from avatar_meta.proto_gen.v1 import policy_weights_pb2 as _policy_weights_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AdaptRequest(_message.Message):
    __slots__ = ["behavior_name", "episodes", "seed", "task_hint", "want_onnx"]
    BEHAVIOR_NAME_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TASK_HINT_FIELD_NUMBER: _ClassVar[int]
    WANT_ONNX_FIELD_NUMBER: _ClassVar[int]
    behavior_name: str
    episodes: _containers.RepeatedCompositeFieldContainer[Episode]
    seed: int
    task_hint: str
    want_onnx: bool
    def __init__(self, behavior_name: _Optional[str] = ..., task_hint: _Optional[str] = ..., episodes: _Optional[_Iterable[_Union[Episode, _Mapping]]] = ..., want_onnx: bool = ..., seed: _Optional[int] = ...) -> None: ...

class AdaptResponse(_message.Message):
    __slots__ = ["adapt_ms", "onnx", "weights"]
    ADAPT_MS_FIELD_NUMBER: _ClassVar[int]
    ONNX_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    adapt_ms: float
    onnx: bytes
    weights: _policy_weights_pb2.PolicyWeightsEnvelope
    def __init__(self, weights: _Optional[_Union[_policy_weights_pb2.PolicyWeightsEnvelope, _Mapping]] = ..., onnx: _Optional[bytes] = ..., adapt_ms: _Optional[float] = ...) -> None: ...

class Episode(_message.Message):
    __slots__ = ["action_masks", "continuous_actions", "discrete_actions", "dones", "interrupted", "mask_size", "num_branches", "num_continuous", "obs", "obs_size", "rewards", "steps"]
    ACTION_MASKS_FIELD_NUMBER: _ClassVar[int]
    CONTINUOUS_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    DISCRETE_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    DONES_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    MASK_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_BRANCHES_FIELD_NUMBER: _ClassVar[int]
    NUM_CONTINUOUS_FIELD_NUMBER: _ClassVar[int]
    OBS_FIELD_NUMBER: _ClassVar[int]
    OBS_SIZE_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    action_masks: _containers.RepeatedScalarFieldContainer[float]
    continuous_actions: _containers.RepeatedScalarFieldContainer[float]
    discrete_actions: _containers.RepeatedScalarFieldContainer[float]
    dones: _containers.RepeatedScalarFieldContainer[float]
    interrupted: bool
    mask_size: int
    num_branches: int
    num_continuous: int
    obs: _containers.RepeatedScalarFieldContainer[float]
    obs_size: int
    rewards: _containers.RepeatedScalarFieldContainer[float]
    steps: int
    def __init__(self, steps: _Optional[int] = ..., obs_size: _Optional[int] = ..., obs: _Optional[_Iterable[float]] = ..., num_continuous: _Optional[int] = ..., continuous_actions: _Optional[_Iterable[float]] = ..., num_branches: _Optional[int] = ..., discrete_actions: _Optional[_Iterable[float]] = ..., mask_size: _Optional[int] = ..., action_masks: _Optional[_Iterable[float]] = ..., rewards: _Optional[_Iterable[float]] = ..., dones: _Optional[_Iterable[float]] = ..., interrupted: bool = ...) -> None: ...

class LatencyHistogram(_message.Message):
    __slots__ = ["count", "counts", "name", "sum_ms", "upper_bounds_ms"]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUM_MS_FIELD_NUMBER: _ClassVar[int]
    UPPER_BOUNDS_MS_FIELD_NUMBER: _ClassVar[int]
    count: int
    counts: _containers.RepeatedScalarFieldContainer[int]
    name: str
    sum_ms: float
    upper_bounds_ms: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., upper_bounds_ms: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ..., count: _Optional[int] = ..., sum_ms: _Optional[float] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ["counters", "latency", "uptime_ms"]
    class CountersEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    UPTIME_MS_FIELD_NUMBER: _ClassVar[int]
    counters: _containers.ScalarMap[str, int]
    latency: _containers.RepeatedCompositeFieldContainer[LatencyHistogram]
    uptime_ms: int
    def __init__(self, counters: _Optional[_Mapping[str, int]] = ..., latency: _Optional[_Iterable[_Union[LatencyHistogram, _Mapping]]] = ..., uptime_ms: _Optional[int] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ["after_version", "behavior_name", "task_id"]
    AFTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    BEHAVIOR_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    after_version: int
    behavior_name: str
    task_id: str
    def __init__(self, behavior_name: _Optional[str] = ..., task_id: _Optional[str] = ..., after_version: _Optional[int] = ...) -> None: ...
