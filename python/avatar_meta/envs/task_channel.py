"""TaskChannel, trainer side: tell a world (headless or Unity) which scenario each area runs.

Register it with `UnityEnvironment(side_channels=[TaskChannel(), ...])`; every `assign` is
queued and travels with the next `reset()` or `step()`. The world applies an assignment at that
area's next episode start, so assign before `reset()` to have every area start on its task.

Payload (little-endian, ASCII strings, see docs/world-protocol.md):
    int32 area            index of the area, or -1 (ALL_AREAS) for every area of the world
    string family         a contract family name; "" clears the assignment (area falls back
                          to the EnvironmentParameters defaults)
    float32 list params   the family's hidden parameters, contract order
    float32 list body     top_speed, turn_rate, actuation_noise; [] = default body

A world that cannot use a record (unknown family, wrong parameter count, bad area) logs one line
and ignores it; out-of-range values are clipped to the contract ranges.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from mlagents_envs.side_channel import IncomingMessage, OutgoingMessage, SideChannel

from avatar_meta import contract

logger = logging.getLogger("avatar_meta.envs.task_channel")

ALL_AREAS = -1


class TaskChannel(SideChannel):
    """Sends task assignments to the world; the world sends nothing back on this channel."""

    def __init__(self) -> None:
        super().__init__(uuid.UUID(contract.TASK_CHANNEL_ID))

    def assign(
        self,
        area: int,
        family: str,
        params: Sequence[float] = (),
        body: Sequence[float] = (),
    ) -> None:
        """Queue "area runs `family` with `params` and `body`" for the next exchange.

        Only the encoding is done here (ASCII family name, float32 values); validation against
        the contract happens in the world, which is the side that must survive bad input.
        """
        msg = OutgoingMessage()
        msg.write_int32(int(area))
        msg.write_string(family)
        msg.write_float32_list([float(v) for v in params])
        msg.write_float32_list([float(v) for v in body])
        self.queue_message_to_send(msg)

    def assign_all(
        self, family: str, params: Sequence[float] = (), body: Sequence[float] = ()
    ) -> None:
        """The same task in every area of the world."""
        self.assign(ALL_AREAS, family, params, body)

    def clear(self, area: int = ALL_AREAS) -> None:
        """Drop the assignment: the area (or all) returns to the EnvironmentParameters defaults."""
        self.assign(area, "")

    def on_message_received(self, msg: IncomingMessage) -> None:
        # Nothing is defined world -> trainer; do not crash a training run over it.
        logger.warning("TaskChannel: unexpected %d bytes from the world; ignored", len(msg.buffer))
