from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

ACTIVATION_RELU: Activation
ACTIVATION_TANH: Activation
ACTIVATION_UNSPECIFIED: Activation
CONTINUOUS_OUTPUT_CLIP_UNIT: ContinuousOutput
CONTINUOUS_OUTPUT_MLAGENTS_CLIP3: ContinuousOutput
CONTINUOUS_OUTPUT_UNSPECIFIED: ContinuousOutput
DESCRIPTOR: _descriptor.FileDescriptor

class ActionSpec(_message.Message):
    __slots__ = ["continuous_output", "discrete_branches", "log_std_floor", "log_std_init", "num_continuous"]
    CONTINUOUS_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    DISCRETE_BRANCHES_FIELD_NUMBER: _ClassVar[int]
    LOG_STD_FLOOR_FIELD_NUMBER: _ClassVar[int]
    LOG_STD_INIT_FIELD_NUMBER: _ClassVar[int]
    NUM_CONTINUOUS_FIELD_NUMBER: _ClassVar[int]
    continuous_output: ContinuousOutput
    discrete_branches: _containers.RepeatedScalarFieldContainer[int]
    log_std_floor: float
    log_std_init: float
    num_continuous: int
    def __init__(self, num_continuous: _Optional[int] = ..., discrete_branches: _Optional[_Iterable[int]] = ..., continuous_output: _Optional[_Union[ContinuousOutput, str]] = ..., log_std_floor: _Optional[float] = ..., log_std_init: _Optional[float] = ...) -> None: ...

class ArchitectureDescriptor(_message.Message):
    __slots__ = ["action_spec", "activation", "contract_version", "has_critic", "hidden", "normalization", "obs_size", "parameter_order"]
    ACTION_SPEC_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    HAS_CRITIC_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    OBS_SIZE_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_ORDER_FIELD_NUMBER: _ClassVar[int]
    action_spec: ActionSpec
    activation: Activation
    contract_version: str
    has_critic: bool
    hidden: _containers.RepeatedScalarFieldContainer[int]
    normalization: ObservationNormalization
    obs_size: int
    parameter_order: str
    def __init__(self, contract_version: _Optional[str] = ..., obs_size: _Optional[int] = ..., hidden: _Optional[_Iterable[int]] = ..., activation: _Optional[_Union[Activation, str]] = ..., normalization: _Optional[_Union[ObservationNormalization, _Mapping]] = ..., action_spec: _Optional[_Union[ActionSpec, _Mapping]] = ..., parameter_order: _Optional[str] = ..., has_critic: bool = ...) -> None: ...

class ObservationNormalization(_message.Message):
    __slots__ = ["clip", "count", "enabled", "epsilon", "mean", "var"]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    VAR_FIELD_NUMBER: _ClassVar[int]
    clip: float
    count: float
    enabled: bool
    epsilon: float
    mean: _containers.RepeatedScalarFieldContainer[float]
    var: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, enabled: bool = ..., mean: _Optional[_Iterable[float]] = ..., var: _Optional[_Iterable[float]] = ..., clip: _Optional[float] = ..., epsilon: _Optional[float] = ..., count: _Optional[float] = ...) -> None: ...

class PolicyWeights(_message.Message):
    __slots__ = ["behavior_name", "created_at_unix_ms", "descriptor", "policy_version", "task_id", "weights"]
    BEHAVIOR_NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    behavior_name: str
    created_at_unix_ms: int
    descriptor: ArchitectureDescriptor
    policy_version: int
    task_id: str
    weights: bytes
    def __init__(self, descriptor: _Optional[_Union[ArchitectureDescriptor, _Mapping]] = ..., weights: _Optional[bytes] = ..., policy_version: _Optional[int] = ..., task_id: _Optional[str] = ..., created_at_unix_ms: _Optional[int] = ..., behavior_name: _Optional[str] = ...) -> None: ...

class PolicyWeightsEnvelope(_message.Message):
    __slots__ = ["key_id", "payload", "signature", "signature_algorithm"]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    payload: bytes
    signature: bytes
    signature_algorithm: str
    def __init__(self, payload: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., key_id: _Optional[str] = ..., signature_algorithm: _Optional[str] = ...) -> None: ...

class Activation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class ContinuousOutput(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
