"""Shared fixtures: free ports for trainers, the world executable, and worlds that close.

Tests start real processes on loopback. Every trainer port comes from `allocate_port()`, which
asks the OS for an unused port and never hands the same one out twice in a session, so tests (and
other test sessions on the same machine) do not collide on a fixed base port.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

_HANDED_OUT: set[int] = set()


def allocate_port() -> int:
    """A TCP port that is free on loopback right now and was not returned before."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("could not find a free port")


@pytest.fixture
def free_port() -> int:
    return allocate_port()


@pytest.fixture(scope="session")
def world_path() -> str:
    """What `UnityEnvironment(file_name=...)` needs to launch the headless world."""
    from avatar_meta.world.launcher import world_executable_path

    return world_executable_path()


OpenWorld = Callable[..., Any]


@pytest.fixture
def open_world(world_path: str, tmp_path: Path) -> Iterator[OpenWorld]:
    """Factory: `open_world(seed=0, side_channels=[...], args=[...], **UnityEnvironment kwargs)`.

    Each world logs to `tmp_path/world-<port>.log`; every world still open at teardown is closed,
    and the logs are printed (pytest shows them when the test failed).
    """
    from mlagents_envs.environment import UnityEnvironment

    opened: list[tuple[Any, Path]] = []

    def _open(
        *,
        seed: int = 0,
        side_channels: Sequence[Any] = (),
        args: Sequence[str] = (),
        **kwargs: Any,
    ) -> Any:
        port = allocate_port()
        log = tmp_path / f"world-{port}.log"
        env = UnityEnvironment(
            file_name=world_path,
            base_port=port,
            seed=seed,
            no_graphics=True,
            side_channels=list(side_channels),
            additional_args=["-logFile", str(log), *args],
            timeout_wait=60,
            **kwargs,
        )
        opened.append((env, log))
        return env

    yield _open
    for env, log in opened:
        with contextlib.suppress(Exception):  # already closed by the test
            env.close()
        if log.exists():
            print(f"--- {log.name}\n{log.read_text()}")
