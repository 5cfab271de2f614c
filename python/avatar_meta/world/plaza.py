"""The plaza: a vectorised numpy stand-in for the Unity sample scene.

A `Plaza` holds `num_areas` independent copies of the 20 m x 20 m plaza. Each area has one
scripted visitor (`visitor.Visitors`) and `agents_per_area` learning avatars, and runs one task
(a scenario family, its hidden parameters and a body, see `scenarios.py`) per episode. All
avatars of an area share the area's visitor and episode clock. Agent i lives in area
i // agents_per_area.

One `step` is one decision (contract.DECISION_DT seconds of simulated time) for every avatar at
once; nothing in it loops over avatars. Episodes last contract.MAX_EPISODE_STEPS decisions
(then done and interrupted); only greet_visitor ends early, on success. Finished areas are reset
inside `step`, like Unity agents that restart on their own.

Everything random comes from one `np.random.Generator` seeded by `seed`: the same seed and the
same calls give bit-identical observations and rewards.

The avatar body is a unicycle: forward command f in [-1, 1] gives speed f * top_speed
(backwards only at BACKWARD_SPEED_FRACTION of it), turn command t gives yaw rate
t * turn_rate (positive = clockwise seen from above, Unity's positive yaw). Gaussian noise of
std actuation_noise is added to both commands before they are clipped to [-1, 1]. The heading
turns first, then the body moves along the new heading, then collisions push it out of walls
and obstacles. Avatars do not collide with each other or with the visitor (the rewards
penalise crowding instead). Visitors move in the same decision, reacting to where the avatars
stood when it began; one collision pass then settles every body. Positions are complex numbers
x + 1j * z inside (see `geometry`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping

import numpy as np

from avatar_meta import contract
from avatar_meta.world import geometry
from avatar_meta.world.scenarios import (
    DEFAULT_PARAMS,
    SCENARIOS,
    VISITOR_BEHAVIOUR,
    Frame,
    Memory,
    Outcome,
    spawn_avatars,
)
from avatar_meta.world.types import EpisodeStats, StepResult, TaskSpec
from avatar_meta.world.visitor import Visitors

NUM_GESTURES = len(contract.GESTURES)
BACKWARD_SPEED_FRACTION = 0.5
"""A negative forward command walks backwards at most at this fraction of the top speed."""
VISITOR_VELOCITY_SCALE = 2.0
"""The visitor's velocity is divided by this (m/s) in observations (contract.py)."""
_ONE_HOT = np.eye(NUM_GESTURES, dtype=np.float32)
_OBS = contract.OBS
_TIME_LEFT = np.maximum(
    1.0 - np.arange(contract.MAX_EPISODE_STEPS + 1) / (contract.MAX_EPISODE_STEPS - 1), 0.0
).astype(np.float32)
"""time_left by decisions taken: 1 at the first decision, 0 at the last (and after it)."""
_LAST_LANDMARK = np.vstack(
    [np.eye(len(contract.LANDMARKS), dtype=np.float32), np.zeros(len(contract.LANDMARKS))]
).astype(np.float32)
"""last_landmark's one-hot by landmark index; row -1 (none touched yet) is all zeros."""


class Plaza:
    """`num_areas` plaza areas with `agents_per_area` avatars each; see the module docstring.

    A new plaza has already started its first episodes (so `state()` and `step` work at
    once); `reset()` starts fresh ones everywhere.
    """

    def __init__(self, num_areas: int = 8, agents_per_area: int = 1, seed: int = 0) -> None:
        if int(num_areas) < 1 or int(agents_per_area) < 1:
            raise ValueError(
                f"a plaza needs at least one area and one avatar per area, got "
                f"num_areas={num_areas}, agents_per_area={agents_per_area}"
            )
        self.num_areas = int(num_areas)
        self.agents_per_area = int(agents_per_area)
        self.n_agents = n = self.num_areas * self.agents_per_area
        self._rng = np.random.default_rng(seed)
        self._area_of = np.repeat(np.arange(self.num_areas), self.agents_per_area)
        self._rows = np.arange(n)

        # Avatars: body state, body parameters, task and bookkeeping, one row per avatar.
        self._pos = np.zeros(n, dtype=complex)
        self._heading = np.zeros(n)  # yaw, not wrapped inside an episode (state() wraps it)
        self._rot = np.ones(n, dtype=complex)  # exp(1j * heading): world -> local frame
        self._forward = np.full(n, 1j)
        self._vel = np.zeros(n, dtype=complex)
        self._speed = np.zeros(n)  # signed forward speed achieved, m/s
        self._slow = np.ones(n, dtype=bool)  # slow enough to gesture (the mask rule)
        self._last_gesture = np.zeros(n, dtype=np.int64)
        self._last_landmark = np.full(n, -1, dtype=np.int64)  # -1: none touched this episode
        self._top_speed = np.ones(n)
        self._turn_rate = np.ones(n)
        self._noise = np.zeros(n)
        self._top_speed_dt = np.ones(n)  # metres per decision at full forward command
        self._turn_rate_dt = np.ones(n)  # radians per decision at full turn command
        self._gesture_speed_limit = np.ones(n)  # the mask rule's speed threshold, m/s
        self._family = np.zeros(n, dtype=np.int64)
        self._params = np.zeros((n, contract.MAX_FAMILY_PARAMS))
        self._memories = [Memory.zeros(n) for _ in SCENARIOS]  # one per family, see scenarios
        self._return = np.zeros(n)
        self._on_target_steps = np.zeros(n, dtype=np.int64)
        self._last_on_target = np.zeros(n, dtype=bool)
        self._completed = np.zeros(n, dtype=bool)
        self._world_vectors = np.zeros((n, 2 + len(contract.LANDMARKS) + 1), dtype=complex)
        # Families present, each with its parameter matrix (see scenarios module docstring).
        self._groups: list[tuple[int, np.ndarray, np.ndarray]] = []
        self._group_of = np.zeros(n, dtype=np.int64)
        self._merge = np.zeros((2, 1, n))
        self._no_success = np.zeros(n, dtype=bool)

        # Areas: episode clock, task, and where the next task comes from.
        self._steps = np.zeros(self.num_areas, dtype=np.int64)
        self._visitors = Visitors(self.num_areas)
        self._tasks: list[TaskSpec] = []
        self._assigned: list[TaskSpec | None] = [None] * self.num_areas
        self._pending: dict[int, TaskSpec | None] = {}
        self._default_family: int | None = None
        self._default_values: dict[str, float] = {}
        self.reset()

    # ================================================================================ task control
    def assign_task(self, area: int, task: TaskSpec | None) -> None:
        """Run `task` in `area` from its next episode start on (None: back to default sampling).

        The assignment sticks for every later episode until it is replaced. The episode that is
        running now is not touched, so an assignment never changes a task mid-episode.
        """
        area = self._check_area(area)
        if task is not None and not isinstance(task, TaskSpec):
            raise TypeError(f"assign_task takes a TaskSpec or None, got {type(task).__name__}")
        if task is not None:  # re-validate: a TaskSpec built by hand may hold any values
            task = TaskSpec.make(task.family, task.params, task.body)
        self._pending[area] = task

    def set_defaults(self, values: Mapping[str, float]) -> list[str]:
        """Merge EnvironmentParameters into the defaults used when an area samples its task.

        Key contract.ENV_PARAM_FAMILY picks the family by index (-1 = random per episode); any
        other key is a parameter name from the contract (family or body), whose value is clipped
        to its range and then used instead of a uniform draw. Values stay until overwritten,
        like Unity's EnvironmentParameters. Returns the keys that were ignored (unknown names,
        values that are not finite numbers, a family index out of range).
        """
        known = {p.name: p for f in contract.FAMILIES for p in f.params}
        known.update({p.name: p for p in contract.BODY_PARAMS})
        ignored = []
        for key, raw in values.items():
            try:
                value = float(raw)
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value):
                ignored.append(key)
            elif key == contract.ENV_PARAM_FAMILY:
                index = round(value)
                if index >= len(contract.FAMILIES):
                    ignored.append(key)
                else:
                    self._default_family = index if index >= 0 else None
            elif key in known:
                self._default_values[key] = known[key].clip(value)
            else:
                ignored.append(key)
        return ignored

    def current_tasks(self) -> list[TaskSpec]:
        """The task each area runs in its current episode."""
        return list(self._tasks)

    # ================================================================================ episodes
    def reset(self) -> tuple[np.ndarray, np.ndarray]:
        """Start a new episode in every area (applying pending assignments).

        Episodes cut short by a reset are not reported in any `StepResult.finished`.
        Returns (obs [N, OBSERVATION_SIZE] float32, mask [N, 4] bool, True = masked).
        """
        if not self._tasks:
            self._tasks = [TaskSpec.make(contract.FAMILIES[0].name)] * self.num_areas
        self._start_episodes(np.arange(self.num_areas))
        return self._observe(), self._gesture_mask()

    def step(self, continuous: np.ndarray, gesture: np.ndarray) -> StepResult:
        """Apply one decision for every avatar; see the module docstring for the semantics."""
        commands, gestures = self._sanitise(continuous, gesture)
        self._move_everyone(commands)
        self._steps += 1
        self._last_gesture = gestures
        reward, success = self._rewards(gestures)

        area_done = self._steps >= contract.MAX_EPISODE_STEPS
        if success.any():
            area_done |= success.reshape(self.num_areas, self.agents_per_area).any(axis=1)
        done = self._per_agent(area_done)
        obs = self._observe()
        terminal_obs = obs.copy()
        finished: list[EpisodeStats] = []
        if area_done.any():
            ended = np.flatnonzero(area_done)
            finished = self._episode_stats(ended)
            self._start_episodes(ended)
            obs[done] = self._observe()[done]
        return StepResult(
            obs=obs,
            reward=reward.astype(np.float32),
            done=done,
            interrupted=done & ~success,
            terminal_obs=terminal_obs,
            mask=self._gesture_mask(),
            finished=finished,
        )

    def state(self) -> dict[str, np.ndarray]:
        """Copies of the internal state, for scripted controllers, tests and debugging.

        Per avatar: pos [n, 2] (x, z), heading (yaw, rad), vel [n, 2], speed (signed forward,
        m/s), last_gesture, last_landmark (index, -1 before any), family (index), params
        [n, MAX_FAMILY_PARAMS], top_speed, turn_rate, actuation_noise, patrol_slot, greeted,
        episode_return, area, step.
        Per area: visitor_pos [a, 2], visitor_vel [a, 2], visitor_heading, visitor_gesture,
        area_step.
        """
        v = self._visitors
        return {
            "pos": geometry.to_xz(self._pos),
            "heading": geometry.wrap_angle(self._heading),
            "vel": geometry.to_xz(self._vel),
            "speed": self._speed.copy(),
            "last_gesture": self._last_gesture.copy(),
            "last_landmark": self._last_landmark.copy(),
            "family": self._family.copy(),
            "params": self._params.copy(),
            "top_speed": self._top_speed.copy(),
            "turn_rate": self._turn_rate.copy(),
            "actuation_noise": self._noise.copy(),
            "patrol_slot": self._own_memory("slot"),
            "greeted": self._own_memory("greeted"),
            "episode_return": self._return.copy(),
            "area": self._area_of.copy(),
            "step": self._steps[self._area_of],
            "visitor_pos": geometry.to_xz(v.pos),
            "visitor_vel": geometry.to_xz(v.vel),
            "visitor_heading": geometry.yaw_of(v.forward),
            "visitor_gesture": v.cue.copy(),
            "area_step": self._steps.copy(),
        }

    def place_avatar(self, agent: int, x: float, z: float, heading: float) -> None:
        """Put an avatar at (x, z) facing `heading` (yaw, rad), at rest. For tests and debugging:
        the episode clock, task and rewards' progress memory are left as they are."""
        if not 0 <= operator.index(agent) < self.n_agents:
            raise IndexError(f"agent {agent} does not exist: this plaza has {self.n_agents}")
        self._pos[agent] = complex(x, z)
        self._heading[agent] = heading
        self._rot[agent] = geometry.local_rotation(np.array(heading))
        self._forward[agent] = geometry.forward_of(np.array(heading))
        self._vel[agent], self._speed[agent], self._slow[agent] = 0.0, 0.0, True

    # ================================================================================ tasks
    def _check_area(self, area: int) -> int:
        try:
            index = operator.index(area)
        except TypeError:
            raise IndexError(f"area must be an integer, got {area!r}") from None
        if not 0 <= index < self.num_areas:
            raise IndexError(
                f"area {index} does not exist: this plaza has {self.num_areas} areas "
                f"(0..{self.num_areas - 1})"
            )
        return index

    def _next_task(self, area: int) -> TaskSpec:
        if area in self._pending:
            self._assigned[area] = self._pending.pop(area)
        assigned = self._assigned[area]
        return assigned if assigned is not None else self._sample_task()

    def _sample_task(self) -> TaskSpec:
        """Family from the defaults or uniform; each value from the defaults or uniform.

        One batch of uniforms per task (family, params, body), used or not, so the random
        stream does not depend on which defaults are set.
        """
        u = self._rng.random(1 + contract.MAX_FAMILY_PARAMS + len(contract.BODY_PARAMS))
        index = self._default_family
        if index is None:
            index = min(int(u[0] * len(contract.FAMILIES)), len(contract.FAMILIES) - 1)
        family = contract.FAMILIES[index]
        params = tuple(self._value(p, x) for p, x in zip(family.params, u[1:], strict=False))
        body_u = u[1 + contract.MAX_FAMILY_PARAMS :]
        body = tuple(self._value(p, x) for p, x in zip(contract.BODY_PARAMS, body_u, strict=True))
        return TaskSpec(family.name, params, body)

    def _value(self, spec: contract.ParamSpec, u: float) -> float:
        """The default for `spec` if one is set, else uniform in its range (from `u` in [0, 1))."""
        if spec.name in self._default_values:
            return self._default_values[spec.name]
        if spec.integer:
            return spec.clip(math.floor(spec.low + u * (spec.high - spec.low + 1)))
        return spec.low + u * (spec.high - spec.low)

    def _start_episodes(self, areas: np.ndarray) -> None:
        """Pick each area's task, place its visitor and avatars, clear the bookkeeping.

        Only picking the tasks loops over areas (TaskSpecs are Python objects); placing is
        vectorised, because at the end of the 200th step every area restarts at once.
        """
        tasks = [self._next_task(int(area)) for area in areas]
        for area, task in zip(areas, tasks, strict=True):
            self._tasks[area] = task
        family = np.array([task.family_index for task in tasks], dtype=np.int64)
        params = np.zeros((len(tasks), contract.MAX_FAMILY_PARAMS))
        for i, task in enumerate(tasks):
            params[i, : len(task.params)] = task.params
        speed = np.array(
            [SCENARIOS[f].visitor_speed_for(p) for f, p in zip(family, params, strict=True)]
        )
        self._visitors.start(areas, VISITOR_BEHAVIOUR[family], speed, self._rng)

        k = self.agents_per_area
        rows = (areas[:, None] * k + np.arange(k)[None, :]).ravel()
        agent_family = np.repeat(family, k)
        visitor_pos = np.repeat(self._visitors.pos[areas], k)
        pos, heading = spawn_avatars(agent_family, visitor_pos, self._rng)
        self._pos[rows], self._heading[rows] = pos, heading
        self._rot[rows] = geometry.local_rotation(heading)
        self._forward[rows] = geometry.forward_of(heading)
        self._vel[rows], self._speed[rows], self._slow[rows] = 0.0, 0.0, True
        self._last_gesture[rows] = 0
        self._last_landmark[rows] = -1
        self._touch_landmarks()
        self._family[rows] = agent_family
        self._params[rows] = np.repeat(params, k, axis=0)
        body = np.repeat(np.array([task.body for task in tasks]), k, axis=0)
        self._top_speed[rows], self._turn_rate[rows], self._noise[rows] = body.T
        self._top_speed_dt[rows] = body[:, 0] * contract.DECISION_DT
        self._turn_rate_dt[rows] = body[:, 1] * contract.DECISION_DT
        # A hair over the contract's threshold, so that walking backwards at full command
        # (exactly half the top speed) is not masked or unmasked by rounding.
        self._gesture_speed_limit[rows] = body[:, 0] * contract.GESTURE_MASK_SPEED_FRACTION + 1e-9
        self._return[rows], self._on_target_steps[rows] = 0.0, 0
        self._last_on_target[rows], self._completed[rows] = False, False
        self._steps[areas] = 0
        self._start_memories(rows, agent_family, visitor_pos)
        self._regroup()

    def _start_memories(
        self, rows: np.ndarray, family: np.ndarray, visitor_pos: np.ndarray
    ) -> None:
        """Fresh family memories for the avatars in `rows` (their shaping starts from here)."""
        frame = Frame(
            pos=self._pos[rows],
            vel=self._vel[rows],
            gesture=self._last_gesture[rows],
            visitor_pos=visitor_pos,
            visitor_vel=np.zeros(len(rows), dtype=complex),
            visitor_forward=np.repeat(self._visitors.forward, self.agents_per_area)[rows],
            visitor_dist=np.abs(self._pos[rows] - visitor_pos),
        )
        for index in np.unique(family):
            mine = family == index
            memory, empty = self._memories[index], Memory.zeros(int(mine.sum()))
            sub = Frame(**{name: value[mine] for name, value in vars(frame).items()})
            params = self._params[rows[mine]].T
            memory.prev_dist[rows[mine]] = SCENARIOS[index].shaping_distance(sub, params, empty)
            memory.slot[rows[mine]], memory.greeted[rows[mine]] = 0, False

    def _own_memory(self, name: str) -> np.ndarray:
        """Field `name` of each avatar's own family memory."""
        return np.choose(self._family, [getattr(m, name) for m in self._memories])

    def _regroup(self) -> None:
        """Note which families run now, once per episode start, so `step` can run each one's
        reward on all rows with valid parameters and keep each avatar's own family's result."""
        present = [int(f) for f in np.unique(self._family)]
        self._groups = []
        for slot, index in enumerate(present):
            mine = self._family == index
            self._group_of[mine] = slot
            params = np.where(mine[None, :], self._params.T, DEFAULT_PARAMS[index][:, None])
            self._groups.append((index, params, mine))
        self._merge = np.zeros((2, len(present), self.n_agents))

    # ================================================================================ per step
    def _per_agent(self, per_area: np.ndarray) -> np.ndarray:
        """Spread a per-area array to avatars (no copy when each area has one avatar)."""
        return per_area if self.agents_per_area == 1 else per_area[self._area_of]

    def _sanitise(
        self, continuous: np.ndarray, gesture: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Non-finite -> 0, clip to [-1, 1]; unknown or masked gestures -> 0 (none)."""
        n = self.n_agents
        cont = np.asarray(continuous, dtype=np.float64)
        if cont.shape != (n, contract.NUM_CONTINUOUS_ACTIONS):
            raise ValueError(f"continuous actions must have shape ({n}, 2), got {cont.shape}")
        finite = np.isfinite(cont)
        if not finite.all():
            cont = np.where(finite, cont, 0.0)
        cont = np.minimum(np.maximum(cont.T, -1.0), 1.0)  # [2, n]: forward, turn
        raw = np.asarray(gesture)
        if raw.shape == (n, 1):
            raw = raw[:, 0]
        if raw.shape != (n,):
            raise ValueError(f"gestures must have shape ({n},), got {raw.shape}")
        if raw.dtype != np.int64:
            raw = np.where(np.isfinite(raw), raw, -1).astype(np.int64)
        # As unsigned, negative gestures wrap to huge numbers: one comparison checks both ends.
        allowed = (raw.view(np.uint64) < NUM_GESTURES) & self._slow
        return cont, raw * allowed

    def _move_everyone(self, commands: np.ndarray) -> None:
        """Move avatars (unicycle with actuation noise) and visitors, then resolve collisions
        for all bodies in one pass. `commands` is [2, n]: forward and turn, sanitised."""
        n = self.n_agents
        visitor_to = self._visitors.plan(self._rng, self._pos.reshape(self.num_areas, -1))
        noise = self._rng.standard_normal((2, n)) * self._noise
        forward, turn = np.minimum(np.maximum(commands + noise, -1.0), 1.0)
        # max(f, f/2) is f when walking forward and f/2 when walking backward.
        step_len = np.maximum(forward, BACKWARD_SPEED_FRACTION * forward) * self._top_speed_dt
        self._heading = self._heading + turn * self._turn_rate_dt
        self._rot = geometry.local_rotation(self._heading)
        self._forward = 1j * np.conj(self._rot)  # = forward_of(heading), reusing the exp
        moved = np.concatenate([self._pos + self._forward * step_len, visitor_to])
        settled = geometry.push_out(moved, contract.AVATAR_RADIUS)
        self._visitors.settle(settled[n:])
        self._vel = (settled[:n] - self._pos) * (1.0 / contract.DECISION_DT)
        self._pos = settled[:n]
        self._speed = (self._vel * self._rot).imag  # forward component of the velocity
        self._slow = np.abs(self._speed) <= self._gesture_speed_limit
        self._touch_landmarks()

    def _touch_landmarks(self) -> None:
        """Remember, per avatar, the landmark it stands within LANDMARK_TOUCH_RADIUS of, if any.
        Idempotent for avatars that have not moved, so an episode start can call it for all."""
        dist = np.abs(self._pos[:, None] - geometry.LANDMARK_XZ[None, :])  # [n, L]
        nearest = dist.argmin(axis=1)
        touching = dist[self._rows, nearest] <= contract.LANDMARK_TOUCH_RADIUS
        self._last_landmark = np.where(touching, nearest, self._last_landmark)

    def _rewards(self, gestures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run each present family's reward, keep each avatar's own, update the bookkeeping."""
        v = self._visitors
        visitor_pos = self._per_agent(v.pos)
        frame = Frame(
            pos=self._pos,
            vel=self._vel,
            gesture=gestures,
            visitor_pos=visitor_pos,
            visitor_vel=self._per_agent(v.vel),
            visitor_forward=self._per_agent(v.forward),
            visitor_dist=np.abs(self._pos - visitor_pos),
        )
        outs = []
        success = self._no_success
        for index, params, mine in self._groups:
            out = SCENARIOS[index].reward(frame, params, self._memories[index])
            self._memories[index] = out.memory
            outs.append(out)
            if out.success is not None:
                success = out.success & mine
        reward, on_target = outs[0].reward, outs[0].on_target
        if len(outs) > 1:
            reward, on_target = self._merge_outcomes(outs)
        self._return += reward
        self._on_target_steps += on_target
        self._last_on_target = on_target
        self._completed |= success
        return reward, success

    def _merge_outcomes(self, outs: list[Outcome]) -> tuple[np.ndarray, np.ndarray]:
        """Pick, for each avatar, the outcome of its own family: one gather for all fields."""
        buf = self._merge
        for slot, out in enumerate(outs):
            buf[0, slot], buf[1, slot] = out.reward, out.on_target
        mine = buf[:, self._group_of, self._rows]  # [2, n]
        return mine[0], mine[1] > 0.5

    def _gesture_mask(self) -> np.ndarray:
        """contract.gesture_allowed, vectorised: True = masked (proto convention)."""
        mask = np.empty((self.n_agents, NUM_GESTURES), dtype=bool)
        mask[:, 0] = False
        mask[:, 1:] = ~self._slow[:, None]
        return mask

    def _observe(self) -> np.ndarray:
        """The observation vector of every avatar, in contract.OBSERVATION_LAYOUT order.

        All local-frame vectors are rotated in one complex multiplication; the result viewed
        as floats is (lateral, forward) pairs, which is the order the contract wants.
        """
        n, scale = self.n_agents, contract.POSITION_SCALE
        v = self._visitors
        to_visitor = self._per_agent(v.pos) - self._pos
        world = self._world_vectors
        world[:, 0] = self._vel / self._top_speed
        world[:, 1] = to_visitor / scale
        world[:, 2] = self._per_agent(v.vel) / VISITOR_VELOCITY_SCALE
        world[:, 3:] = (geometry.LANDMARK_XZ[None, :] - self._pos[:, None]) / scale
        local = (world * self._rot[:, None]).view(np.float64)  # [n, 12]

        obs = np.empty((n, contract.OBSERVATION_SIZE), dtype=np.float32)
        obs[:, _OBS["own_position"]] = (self._pos / scale).view(np.float64).reshape(n, 2)
        obs[:, _OBS["own_velocity"]] = local[:, 0:2]
        obs[:, _OBS["visitor_position"]] = local[:, 2:4]
        obs[:, _OBS["visitor_distance"]] = np.abs(to_visitor)[:, None] / scale
        obs[:, _OBS["visitor_velocity"]] = local[:, 4:6]
        obs[:, _OBS["visitor_gesture"]] = _ONE_HOT[self._per_agent(v.cue)]
        obs[:, _OBS["landmarks"]] = local[:, 6:]
        obs[:, _OBS["rays"]] = geometry.cast_rays(self._pos, self._rot) / contract.RAY_LENGTH
        obs[:, _OBS["own_gesture"]] = _ONE_HOT[self._last_gesture]
        obs[:, _OBS["time_left"]] = _TIME_LEFT[self._per_agent(self._steps)][:, None]
        obs[:, _OBS["last_landmark"]] = _LAST_LANDMARK[self._last_landmark]
        return obs

    def _episode_stats(self, areas: np.ndarray) -> list[EpisodeStats]:
        """One EpisodeStats per avatar of each area whose episode just ended."""
        stats = []
        for area in areas:
            task = self._tasks[area]
            scenario = SCENARIOS[task.family_index]
            length = int(self._steps[area])
            for agent in range(area * self.agents_per_area, (area + 1) * self.agents_per_area):
                success = scenario.episode_success(
                    int(self._on_target_steps[agent]),
                    length,
                    bool(self._last_on_target[agent]),
                    int(self._memories[task.family_index].slot[agent]),
                    bool(self._completed[agent]),
                )
                stats.append(
                    EpisodeStats(
                        area=int(area),
                        agent=agent,
                        family=task.family,
                        episode_return=float(self._return[agent]),
                        success=success,
                        length=length,
                    )
                )
        return stats
