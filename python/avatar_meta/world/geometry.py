"""Plaza geometry shared by the simulation, the scenarios and the scripted controllers.

Conventions (the same as Unity's XZ plane, see `contract.py`):
- A heading (yaw) of 0 faces +z; a positive yaw turns toward +x, i.e. clockwise seen from
  above, exactly like `Quaternion.Euler(0, yaw, 0)` in Unity.
- Forward vector of heading h: (sin h, cos h); right vector: (cos h, -sin h).
- The local frame of an avatar: x = lateral (right positive), z = forward.

Internally a planar point or vector (x, z) is the complex number `x + 1j * z`. This is only a
compact notation that keeps the number of numpy calls per step small (the simulation is bound
by call overhead, not arithmetic): `abs(a - b)` is a distance, and going to the local frame is
one multiplication, `local = world * exp(1j * heading)`, whose real part is the lateral and
imaginary part the forward coordinate. `to_xz` turns complex arrays back into [..., 2] floats.

Everything is vectorised over a leading batch axis; nothing loops over avatars.
"""

from __future__ import annotations

import numpy as np

from avatar_meta import contract

HALF_SIZE = contract.PLAZA_SIZE / 2.0
"""Walls are at x = +-HALF_SIZE and z = +-HALF_SIZE."""
OBSTACLE_XZ = np.array([complex(x, z) for x, z, _ in contract.OBSTACLES])  # [O]
OBSTACLE_R = np.array([r for _, _, r in contract.OBSTACLES])  # [O]
LANDMARK_XZ = np.array([complex(x, z) for x, z in contract.LANDMARKS])  # [L]
RAY_TURNS = np.exp(1j * np.arange(contract.NUM_RAYS) * (2.0 * np.pi / contract.NUM_RAYS))
"""Multiply a forward vector by RAY_TURNS[k] to get ray k. The rays go counter-clockwise seen
from above, i.e. toward the left: ray 0 looks forward, ray 2 left, ray 4 back, ray 6 right."""


def to_xz(points: np.ndarray) -> np.ndarray:
    """Complex points [...] -> float array [..., 2] of (x, z)."""
    return np.stack([points.real, points.imag], axis=-1)


def from_xz(xz: np.ndarray) -> np.ndarray:
    """Float array [..., 2] of (x, z) -> complex points [...]."""
    xz = np.asarray(xz, dtype=np.float64)
    return xz[..., 0] + 1j * xz[..., 1]


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Wrap angles to [-pi, pi) so heading differences stay small numbers."""
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


def local_rotation(heading: np.ndarray) -> np.ndarray:
    """`exp(1j * heading)`: multiply a world vector by it to get (lateral + 1j * forward)."""
    return np.exp(1j * heading)


def forward_of(heading: np.ndarray) -> np.ndarray:
    """Unit forward vector (sin h, cos h) as a complex number."""
    return 1j * np.exp(-1j * heading)


def yaw_of(vec: np.ndarray) -> np.ndarray:
    """The heading that faces along `vec` (complex); inverse of `forward_of`."""
    return np.arctan2(vec.real, vec.imag)


def push_out(pos: np.ndarray, radius: float) -> np.ndarray:
    """Resolve collisions of discs of `radius` centred at `pos` [n] with obstacles and walls.

    A disc that moved into an obstacle is pushed back radially to its surface, which keeps the
    tangential part of the motion (the body slides along the obstacle instead of sticking).
    Walls clamp the centre `radius` away from them. Obstacles do not overlap each other or the
    walls, so one pass is exact. Returns a new array.
    """
    away = pos[None, :] - OBSTACLE_XZ[:, None]  # [O, n]: obstacle-major keeps reductions fast
    dist = np.abs(away)
    reach = OBSTACLE_R[:, None] + radius
    if (dist < reach).any():  # rare: skip the push arithmetic on most steps
        excess = np.maximum(reach / np.maximum(dist, 1e-9) - 1.0, 0.0)  # 0 when not touching
        pos = pos + (away * excess).sum(axis=0)
    else:
        pos = pos.copy()
    limit = HALF_SIZE - radius
    xz = pos.view(np.float64)  # (x, z) interleaved: both axes share the same limits
    np.minimum(np.maximum(xz, -limit, out=xz), limit, out=xz)
    return pos


LOCAL_RAY_MATRIX = np.stack([(1j * RAY_TURNS).real, (1j * RAY_TURNS).imag])
"""[2, R]: a local vector (lateral, forward) @ LOCAL_RAY_MATRIX = its projection on each ray."""
WALL_NORMALS = np.array([1.0, -1.0, 1j, -1j])
"""Outward normals of the four walls; each wall is at distance HALF_SIZE from the origin."""
_WALL_TOWARD = np.concatenate(
    [
        np.stack([((w * np.conj(1j * RAY_TURNS)).real), -((w * np.conj(1j * RAY_TURNS)).imag)])
        for w in WALL_NORMALS
    ],
    axis=1,
)
"""[2, W*R]: local rotation (cos h, sin h) @ this = each wall normal projected on each ray."""
_WALL_XZ = np.stack([WALL_NORMALS.real, WALL_NORMALS.imag])  # [2, W]
_OBSTACLE_R2 = OBSTACLE_R[:, None] ** 2


def cast_rays(pos: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Distance (metres, from the body's centre) along each ray to the nearest wall or obstacle.

    `pos` and `rot` (= local_rotation(heading)) are complex [n]. Returns [n, NUM_RAYS],
    capped at RAY_LENGTH ("nothing within range"). Rays only see the static scene (walls and
    obstacles), not people. Everything is computed in the avatar's local frame, where the ray
    directions are constants, so projecting onto all rays is one small matrix product (much
    cheaper here than many broadcast numpy operations).
    """
    n, length = len(pos), contract.RAY_LENGTH
    # Walls: a ray going toward a wall (the wall's normal projects positively on it) meets it
    # after gap / projection metres. Walls behind give a huge distance, capped below.
    toward = (_as_xz(rot) @ _WALL_TOWARD).reshape(n, len(WALL_NORMALS), -1)  # [n, W, R]
    gap = HALF_SIZE - _as_xz(pos) @ _WALL_XZ  # [n, W]
    t_walls = gap[:, :, None] / np.maximum(toward, 1e-12)
    # (Pairwise minima: numpy reduces a short middle axis much more slowly.)
    t_wall = np.minimum(
        np.minimum(t_walls[:, 0], t_walls[:, 1]), np.minimum(t_walls[:, 2], t_walls[:, 3])
    )
    # Obstacles: with q the obstacle centre in the local frame and u a ray direction, the ray
    # meets the circle at t = b - sqrt(b^2 - c), where b = q.u and c = |q|^2 - r^2 > 0 (a
    # body is never inside an obstacle); it hits when b >= sqrt(c). No NaN or inf anywhere:
    # they are slow on some CPUs.
    q = (OBSTACLE_XZ[:, None] - pos[None, :]) * rot[None, :]  # [O, n]
    b = (_as_xz(q.ravel()) @ LOCAL_RAY_MATRIX).reshape(len(OBSTACLE_R), n, -1)  # [O, n, R]
    c = ((q * np.conj(q)).real - _OBSTACLE_R2)[:, :, None]
    t_hit = np.where(b >= np.sqrt(c), b - np.sqrt(np.maximum(b * b - c, 0.0)), length)
    return np.minimum(np.minimum.reduce(t_hit, axis=0), np.minimum(t_wall, length))


def _as_xz(points: np.ndarray) -> np.ndarray:
    """Contiguous complex [n] viewed as float [n, 2] (x, z), without copying."""
    return points.view(np.float64).reshape(-1, 2)


def random_free_points(
    rng: np.random.Generator, n: int, extent: float, clearance: float
) -> np.ndarray:
    """`n` uniform points in [-extent, extent]^2 (complex), moved out of obstacles by `clearance`.

    Used for spawns and wander goals: one batch of draws, no rejection loop, so the number of
    random numbers consumed is fixed (runs stay reproducible and cheap).
    """
    xz = rng.uniform(-extent, extent, size=(n, 2))
    return push_out(from_xz(xz), clearance)
