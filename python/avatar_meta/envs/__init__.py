"""Trainer-side access to worlds (the headless world or a Unity build) over ML-Agents.

- `task_channel.TaskChannel`: the side channel that assigns a scenario to each area.
"""

from avatar_meta.envs.task_channel import ALL_AREAS, TaskChannel

__all__ = ["ALL_AREAS", "TaskChannel"]
