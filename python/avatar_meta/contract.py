"""Contract v2: the observation, action and task layout shared by Python and Unity.

This module is the single source of truth. `python -m avatar_meta.codegen` writes the same
numbers into `AvatarContract.g.cs` in the Unity package, and a test fails when that file is
stale. It is a leaf: it imports nothing from the rest of the package.

Conventions
- Local frame: x = right of the avatar, z = forward (Unity's left-handed XZ plane). Positions
  are divided by `POSITION_SCALE`, speeds by the body's top speed, so observations stay ~[-1, 1].
- Action masks follow the ML-Agents protocol: True = masked (not allowed). The ONNX input
  `action_masks` uses the opposite convention (1 = allowed).
"""

from __future__ import annotations

from dataclasses import dataclass

CONTRACT_VERSION = "v2"
"""v2 (2026-12-06) added `last_landmark` to the observation (v1 had 32 floats); why:
docs/scenarios.md section 2."""
OBSERVATION_SIZE_BY_VERSION = {"v1": 32, "v2": 35}
"""The observation width of each contract version, for messages about old artefacts."""


def require_contract(version: str | None, source: str) -> None:
    """ValueError if `source` (a checkpoint, say) was made for another contract version than
    this CONTRACT_VERSION; None (not known) passes."""
    if version is not None and version != CONTRACT_VERSION:
        raise ValueError(
            f"{source} was trained for avatar contract {version} "
            f"({OBSERVATION_SIZE_BY_VERSION.get(version, '?')} observations); this avatar-meta "
            f"speaks {CONTRACT_VERSION} ({OBSERVATION_SIZE_BY_VERSION[CONTRACT_VERSION]}, "
            "docs/scenarios.md section 2): train it again"
        )


BEHAVIOR_NAME = "AvatarAgent"
"""Behaviour name as ML-Agents reports it; `?team=0` is appended by the world like Unity does."""

# ---------------------------------------------------------------------------------------------
# Plaza geometry and timing
# ---------------------------------------------------------------------------------------------
PLAZA_SIZE = 20.0
"""The plaza is a square PLAZA_SIZE x PLAZA_SIZE metres centred on the origin, with walls."""
POSITION_SCALE = 10.0
"""Distances in observations are divided by this (half the plaza)."""
DECISION_DT = 0.1
"""Simulated seconds between two decisions."""
MAX_EPISODE_STEPS = 200
"""Decisions per episode; the last one is reported as `max_step_reached` (interrupted)."""
AVATAR_RADIUS = 0.3
LANDMARKS: tuple[tuple[float, float], ...] = ((-6.0, 6.0), (6.0, 6.0), (0.0, -7.0))
"""(x, z) of the three landmarks, fixed in every area."""
LANDMARK_TOUCH_RADIUS = 1.0
"""An avatar within this many metres of a landmark's centre touches it (`last_landmark`)."""
OBSTACLES: tuple[tuple[float, float, float], ...] = (
    (-3.0, 0.0, 1.0),
    (3.5, 1.5, 0.8),
    (0.0, 3.5, 0.7),
    (2.5, -3.5, 0.9),
)
"""(x, z, radius) of the circular obstacles."""
NUM_RAYS = 8
RAY_LENGTH = 10.0
"""Rays start at the avatar's heading and go round in equal steps (counter-clockwise)."""

# ---------------------------------------------------------------------------------------------
# Actions v1
# ---------------------------------------------------------------------------------------------
NUM_CONTINUOUS_ACTIONS = 2
CONTINUOUS_ACTION_NAMES = ("forward", "turn")
"""forward in -1..1 scales the body's top speed; turn in -1..1 scales its turn rate."""
GESTURES = ("none", "wave", "bow", "dance")
DISCRETE_BRANCHES = (len(GESTURES),)
GESTURE_MASK_SPEED_FRACTION = 0.5
"""Gestures other than `none` are masked while |speed| > this fraction of the top speed."""


def gesture_allowed(speed: float, top_speed: float) -> tuple[bool, ...]:
    """Mask rule v1 (True = allowed). `none` is always allowed."""
    slow = abs(speed) <= GESTURE_MASK_SPEED_FRACTION * top_speed
    return (True,) + (slow,) * (len(GESTURES) - 1)


# ---------------------------------------------------------------------------------------------
# Observations v2: one vector sensor, this exact order
# ---------------------------------------------------------------------------------------------
SENSOR_NAME = "VectorSensor"
OBSERVATION_LAYOUT: tuple[tuple[str, int], ...] = (
    ("own_position", 2),  # (x, z) in the plaza / POSITION_SCALE
    ("own_velocity", 2),  # (lateral, forward) speed in the local frame / top speed
    ("visitor_position", 2),  # visitor (x, z) in the local frame / POSITION_SCALE
    ("visitor_distance", 1),  # metres / POSITION_SCALE
    ("visitor_velocity", 2),  # visitor velocity in the local frame / 2 m/s
    ("visitor_gesture", 4),  # one-hot cue of the visitor's current gesture
    ("landmarks", 6),  # 3 x (x, z) in the local frame / POSITION_SCALE
    ("rays", 8),  # hit distance / RAY_LENGTH, 1 = nothing within range
    ("own_gesture", 4),  # one-hot of the avatar's last gesture
    ("time_left", 1),  # 1 at episode start, 0 at the last decision
    ("last_landmark", 3),  # one-hot of the landmark touched last this episode; 0s before any
)


def _offsets() -> dict[str, slice]:
    out, start = {}, 0
    for name, size in OBSERVATION_LAYOUT:
        out[name] = slice(start, start + size)
        start += size
    return out


OBS = _offsets()
"""Slice of each named field inside the observation vector."""
OBSERVATION_SIZE = sum(size for _, size in OBSERVATION_LAYOUT)
assert OBSERVATION_SIZE_BY_VERSION[CONTRACT_VERSION] == OBSERVATION_SIZE


# ---------------------------------------------------------------------------------------------
# Bodies and scenario families (the tasks)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamSpec:
    """One hidden task parameter: its name, range and whether it is an integer choice."""

    name: str
    low: float
    high: float
    integer: bool = False
    doc: str = ""

    def clip(self, value: float) -> float:
        """Clamp into [low, high] (rounded for integer choices); NaN becomes the midpoint."""
        value = float(value)
        if value != value:  # NaN compares unequal to itself
            value = (self.low + self.high) / 2
        value = min(max(value, self.low), self.high)
        return float(round(value)) if self.integer else value


BODY_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("top_speed", 1.0, 3.0, doc="top forward speed, m/s"),
    ParamSpec("turn_rate", 1.5, 4.0, doc="top turn rate, rad/s"),
    ParamSpec("actuation_noise", 0.0, 0.2, doc="std of Gaussian noise added to both commands"),
)
DEFAULT_BODY = (2.0, 3.0, 0.05)


@dataclass(frozen=True)
class FamilySpec:
    """A scenario family: an index on the wire, a name, and its hidden parameters."""

    index: int
    name: str
    params: tuple[ParamSpec, ...]
    doc: str


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        0,
        "reach_landmark",
        (ParamSpec("landmark", 0, 2, integer=True, doc="index of the target landmark"),),
        "walk to one of the three landmarks and stay there",
    ),
    FamilySpec(
        1,
        "follow_visitor",
        (ParamSpec("follow_distance", 1.0, 4.0, doc="preferred distance to the visitor, m"),),
        "follow a walking visitor at the visitor's preferred distance",
    ),
    FamilySpec(
        2,
        "greet_visitor",
        (
            ParamSpec("greet_gesture", 1, 3, integer=True, doc="1 wave, 2 bow, 3 dance"),
            ParamSpec("comfort_distance", 0.8, 2.5, doc="distance at which to stop and greet, m"),
        ),
        "approach an idle visitor, stop at their comfort distance and greet with their gesture",
    ),
    FamilySpec(
        3,
        "keep_distance",
        (
            ParamSpec("space_min", 1.0, 2.5, doc="inner edge of the personal-space band, m"),
            ParamSpec("space_width", 0.5, 2.0, doc="width of the band, m"),
        ),
        "stay inside a personal-space band while the visitor approaches",
    ),
    FamilySpec(
        4,
        "pace_match",
        (
            ParamSpec("side", 0, 1, integer=True, doc="0 = walk on the visitor's left, 1 = right"),
            ParamSpec("side_gap", 0.8, 2.0, doc="lateral gap to keep, m"),
            ParamSpec("visitor_speed", 0.4, 1.2, doc="the visitor's walking speed, m/s"),
        ),
        "walk alongside a walking visitor on their preferred side and gap",
    ),
    FamilySpec(
        5,
        "patrol",
        (ParamSpec("route", 0, 5, integer=True, doc="index of a permutation of the 3 landmarks"),),
        "visit the three landmarks in a hidden order, repeatedly",
    ),
)
FAMILY_BY_NAME = {f.name: f for f in FAMILIES}
MAX_FAMILY_PARAMS = max(len(f.params) for f in FAMILIES)
PATROL_ROUTES: tuple[tuple[int, int, int], ...] = (
    (0, 1, 2),
    (0, 2, 1),
    (1, 0, 2),
    (1, 2, 0),
    (2, 0, 1),
    (2, 1, 0),
)

# ---------------------------------------------------------------------------------------------
# Side channels (GUIDs as Unity's System.Guid strings; bytes on the wire are Guid.ToByteArray())
# ---------------------------------------------------------------------------------------------
TASK_CHANNEL_ID = "6f1a4c1e-2b7d-4e59-9a0c-1d8e3b5a7c21"
"""TaskChannel message: int32 area, string family, float list params, float list body."""
POLICY_CHANNEL_ID = "b3c2e7d4-5a61-4f8e-8d2b-0e9f7a6c5d43"
"""PolicyChannel: chunked signed PolicyWeights (issue 4)."""
STATS_CHANNEL_ID = "a1d8f7b7-cec8-50f9-b78b-d3e165a78520"
ENV_PARAMS_CHANNEL_ID = "534c891e-810f-11ea-a9d0-822485860400"
ENGINE_CONFIG_CHANNEL_ID = "e951342c-4f7e-11ea-b238-784f4387d1f7"

ENV_PARAM_FAMILY = "family"
"""EnvironmentParameters key: family index for areas without a TaskChannel assignment
(-1 or absent = a random family per episode). Other keys are parameter names above."""
