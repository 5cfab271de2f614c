"""`avatar-meta`: the command line. The only module that reads sys.argv.

Subcommands mirror what users know from `mlagents-learn`; each one is a small function that
parses its flags and hands over to the package.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

DESCRIPTION = """\
avatar-meta: meta-learn Unity ML-Agents avatar behaviour across scenarios, adapt to a new
scenario from a handful of episodes, and stream the adapted policy back into the engine.

Start here:
  avatar-meta demo                      run the built-in headless world and show what avatars score
  avatar-meta world --print-path        path of the headless world, usable as `--env` anywhere
  avatar-meta bench protocol --out F    measure the ML-Agents protocol throughput
"""


def _cmd_world(args: argparse.Namespace, rest: list[str]) -> int:
    from avatar_meta.world import launcher

    if args.print_path:
        print(launcher.world_executable_path())
        return 0
    return launcher.main(rest)


def _cmd_demo(args: argparse.Namespace, rest: list[str]) -> int:
    from avatar_meta import demo

    return demo.run(episodes=args.episodes, seed=args.seed, base_port=args.base_port)


def _cmd_bench(args: argparse.Namespace, rest: list[str]) -> int:
    from avatar_meta import benchmarks

    return benchmarks.run_suite(args.suite, out=args.out, quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avatar-meta",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print versions and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    world = sub.add_parser(
        "world",
        help="run the headless avatar world (the stand-in for a Unity build)",
        description=(
            "Run the headless avatar world. It connects to a trainer exactly like a Unity build "
            "does (it is the gRPC client; the trainer listens). Normally the trainer starts it "
            "for you: pass the path from --print-path as `--env` to mlagents-learn or as "
            "`file_name` to UnityEnvironment. Other flags (--mlagents-port, -nographics, "
            "-batchmode, -logFile, --num-areas, --seed) are passed to the world."
        ),
    )
    world.add_argument(
        "--print-path",
        action="store_true",
        help="print the executable path that UnityEnvironment / mlagents-learn --env accept",
    )
    world.set_defaults(func=_cmd_world, passthrough=True)

    demo = sub.add_parser(
        "demo",
        help="run every scenario family on the built-in world and print episode statistics",
    )
    demo.add_argument("--episodes", type=int, default=2, help="episodes per area (default 2)")
    demo.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    demo.add_argument(
        "--base-port", type=int, default=5005, help="trainer port; the world connects to it"
    )
    demo.set_defaults(func=_cmd_demo, passthrough=False)

    bench = sub.add_parser(
        "bench",
        help="run a benchmark suite and write its JSON",
        description="Run a benchmark suite; results compare against a baseline in the same run.",
    )
    bench.add_argument("suite", choices=["protocol"], help="which suite to run")
    bench.add_argument("--out", required=True, help="where to write the JSON result")
    bench.add_argument("--quick", action="store_true", help="short run (for smoke tests)")
    bench.set_defaults(func=_cmd_bench, passthrough=False)
    return parser


def _print_versions() -> None:
    import importlib.metadata as md

    for name in ("avatar-meta", "mlagents", "mlagents-envs", "torch", "protobuf", "grpcio"):
        try:
            print(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            print(f"{name} (not installed)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, rest = parser.parse_known_args(argv)
    if args.version:
        _print_versions()
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    if rest and not args.passthrough:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    func: Callable[[argparse.Namespace, list[str]], int] = args.func
    return int(func(args, rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
