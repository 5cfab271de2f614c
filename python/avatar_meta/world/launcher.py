"""`avatar-meta-world`: the executable that UnityEnvironment and `mlagents-learn --env` launch.

A trainer starts a Unity build as `BUILD [-nographics -batchmode] --mlagents-port N
[-logFile PATH] [extra args]` in a new session, then waits for it to connect. This launcher
accepts exactly that command line (plus `--num-areas`, `--agents-per-area`, `--seed`), connects
to the trainer as `unity_client.UnityClient` and exits when the session ends.

Process lifetime: a world must never outlive its trainer. The trainer starts it with
`start_new_session=True`, so no terminal signal reaches it; it therefore exits on its own when
- the trainer sends header status 400 (its `close()`) or QUIT,
- the gRPC connection fails (the trainer's server went away: UNAVAILABLE, CANCELLED, ...),
- its parent process dies: a watchdog thread polls `os.getppid()`. We do not use
  `prctl(PR_SET_PDEATHSIG)`: Linux fires it when the *thread* that started the world exits, so
  a trainer that creates environments from a worker thread would lose its world early,
- SIGTERM or SIGINT arrives,
- no trainer accepts the connection within `--connect-timeout` seconds at startup (Unity gives
  up too; a trainer always listens before it launches its environment).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

# Read before the heavy imports below (grpc, numpy, protobuf take seconds on a loaded machine):
# if the trainer dies during that time, the world is reparented and would not know whom to watch.
PARENT_AT_START = os.getppid()

from avatar_meta.world import policy_receiver  # noqa: E402
from avatar_meta.world.unity_client import UnityClient, WorldSettings  # noqa: E402

logger = logging.getLogger("avatar_meta.world")

EXECUTABLE_NAME = "avatar-meta-world"
STOP_GRACE_SECONDS = 5.0
"""After a stop request, how long the protocol loop may take to unwind before a hard exit."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=EXECUTABLE_NAME,
        description=(
            "Headless avatar world: connects to an ML-Agents trainer the way a Unity build does. "
            "Normally a trainer starts it (UnityEnvironment(file_name=PATH) or "
            "mlagents-learn --env PATH, PATH from `avatar-meta world --print-path`)."
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "--mlagents-port", type=int, default=5004, help="trainer port to connect to (default 5004)"
    )
    parser.add_argument(
        "-nographics", action="store_true", help="accepted; the world never renders"
    )
    parser.add_argument(
        "-batchmode", action="store_true", help="accepted; the world is always batch"
    )
    parser.add_argument(
        "-logFile",
        "-logfile",
        dest="log_file",
        default=None,
        help="write the log to PATH ('-' = stdout; default stderr)",
    )
    parser.add_argument(
        "--num-areas",
        type=int,
        default=8,
        help="areas in this world unless the trainer's handshake asks for more than 1 (default 8)",
    )
    parser.add_argument("--agents-per-area", type=int, default=1, help="learning avatars per area")
    parser.add_argument(
        "--seed", type=int, default=0, help="world seed when the handshake's seed is 0 (default 0)"
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the trainer to listen at startup (default 30)",
    )
    parser.add_argument(
        "--no-stats",
        action="store_true",
        help="do not send per-family episode stats on the Stats side channel",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    policy_receiver.add_arguments(parser)  # --policy-public-key, --inference-areas
    return parser


def setup_logging(log_file: str | None, level: str) -> None:
    """Log to stderr, stdout ('-') or a file (overwritten), like a Unity player's -logFile."""
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    elif log_file == "-":
        handler = logging.StreamHandler(sys.stdout)
    else:
        Path(log_file).expanduser().parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(
            Path(log_file).expanduser(), mode="w", encoding="ascii", errors="replace"
        )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("avatar_meta")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


# ---------------------------------------------------------------------------------------------
# Never outlive the trainer
# ---------------------------------------------------------------------------------------------
def _request_stop(client: UnityClient, reason: str) -> None:
    """Stop the client from any thread, and hard-exit if the loop does not unwind in time."""

    def hard_exit() -> None:
        time.sleep(STOP_GRACE_SECONDS)
        logger.error(
            "world did not stop within %.0f s after: %s; exiting now", STOP_GRACE_SECONDS, reason
        )
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=hard_exit, name="hard-exit", daemon=True).start()
    client.stop(reason)


def watch_parent(client: UnityClient, parent_pid: int, interval: float = 0.5) -> None:
    """Stop the world when its parent (the trainer) dies; `os.getppid()` changes on reparenting."""

    def loop() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent_pid:
                _request_stop(client, f"parent process {parent_pid} is gone")
                return

    if parent_pid <= 1:
        logger.info("started without a parent to watch; relying on the gRPC connection")
        return
    threading.Thread(target=loop, name="parent-watchdog", daemon=True).start()


def install_signal_handlers(client: UnityClient) -> None:
    """SIGTERM/SIGINT end the session cleanly. The handler only starts a thread: closing the
    gRPC channel inside a signal handler could deadlock on a lock the main thread holds."""

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        threading.Thread(
            target=_request_stop, args=(client, f"received {name}"), daemon=True
        ).start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def main(argv: list[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    policy_receiver.apply_arguments(args)
    setup_logging(args.log_file, args.log_level)
    if unknown:
        logger.info("ignoring arguments the world does not use: %s", " ".join(unknown))
    if args.num_areas < 1 or args.agents_per_area < 1:
        logger.error("--num-areas and --agents-per-area must be >= 1")
        return 2
    settings = WorldSettings(
        port=args.mlagents_port,
        num_areas=args.num_areas,
        agents_per_area=args.agents_per_area,
        seed=args.seed,
        connect_timeout=args.connect_timeout,
        send_stats=not args.no_stats,
    )
    logger.info("avatar-meta world pid %d connecting to port %d", os.getpid(), settings.port)
    client = UnityClient(settings)
    watch_parent(client, PARENT_AT_START)
    install_signal_handlers(client)
    try:
        return client.run()
    except Exception:
        logger.exception("the world failed")
        return 2
    finally:
        logging.shutdown()


# ---------------------------------------------------------------------------------------------
# A path that UnityEnvironment(file_name=...) accepts
# ---------------------------------------------------------------------------------------------
_FORBIDDEN_SUBSTRINGS = (".x86", ".exe", ".app", "*", "?", "[")
"""mlagents' `validate_environment_path` deletes the first three anywhere in the path and then
globs it, so any of these would make it look for a different file."""


def _acceptable(path: str) -> bool:
    return os.path.isabs(path) and not any(s in path for s in _FORBIDDEN_SUBSTRINGS)


def world_executable_path() -> str:
    """A path to pass as `file_name` to UnityEnvironment or as `--env` to mlagents-learn.

    Normally the `avatar-meta-world` console script next to the running Python. If that does not
    exist (package not installed as a distribution) or its path would be mangled by mlagents
    (see `_FORBIDDEN_SUBSTRINGS`), a small shell launcher is written into a cache directory.
    On macOS, mlagents only launches `NAME.app/Contents/MacOS/NAME`, so the launcher goes there.
    """
    script = os.path.join(os.path.dirname(sys.executable), EXECUTABLE_NAME)
    if sys.platform.startswith("linux") and _acceptable(script) and os.access(script, os.X_OK):
        return script
    return _write_launcher()


def _cache_dirs() -> list[Path]:
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return [base / "avatar-meta", Path(tempfile.gettempdir()) / f"avatar-meta-{os.getuid()}"]


def _write_launcher() -> str:
    """Write (atomically, idempotently) a /bin/sh launcher that execs this Python's world."""
    import avatar_meta

    package_root = str(Path(avatar_meta.__file__).resolve().parent.parent)
    text = (
        "#!/bin/sh\n"
        "# Written by avatar-meta: starts the headless world with the Python that wrote it.\n"
        f"PYTHONPATH={shlex.quote(package_root)}${{PYTHONPATH:+:$PYTHONPATH}}\n"
        "export PYTHONPATH\n"
        f'exec {shlex.quote(sys.executable)} -m avatar_meta.world "$@"\n'
    )
    tag = hashlib.sha256(f"{sys.executable}\n{package_root}".encode()).hexdigest()[:10]
    for cache in _cache_dirs():
        folder = cache / f"world-{tag}"
        if sys.platform == "darwin":
            path = folder / "AvatarMetaWorld.app" / "Contents" / "MacOS" / "AvatarMetaWorld"
            returned = str(folder / "AvatarMetaWorld")
        else:
            path = folder / EXECUTABLE_NAME
            returned = str(path)
        if not _acceptable(str(folder)):
            continue
        if not (path.is_file() and path.read_text() == text):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text)
            tmp.chmod(0o755)
            os.replace(tmp, path)
        return returned
    raise RuntimeError(
        "cannot find a launcher path that mlagents accepts (paths must not contain "
        f"{', '.join(_FORBIDDEN_SUBSTRINGS)}); set XDG_CACHE_HOME to a plain directory"
    )
