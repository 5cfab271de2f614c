"""`avatar-meta`: the command line. The only module that reads sys.argv.

Subcommands mirror what users know from `mlagents-learn`; each one is a small function that
parses its flags and hands over to the package.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from avatar_meta.benchmarks import SUITES
from avatar_meta.runtime import keep_freed_memory

DESCRIPTION = """\
avatar-meta: meta-learn Unity ML-Agents avatar behaviour across scenarios, adapt to a new
scenario from a handful of episodes, and stream the adapted policy back into the engine.

Start here:
  avatar-meta train CONFIG --run-id ID  meta-train, adapt, compare with baselines (docs/training.md)
  avatar-meta evaluate --run-id ID      re-run the held-out evaluation of a run
  avatar-meta demo                      run the built-in headless world and show what avatars score
  avatar-meta world --print-path        path of the headless world, usable as `--env` anywhere
  avatar-meta bench protocol --out F    measure the ML-Agents protocol throughput
  avatar-meta serve --run-id ID         adaptation service over gRPC (docs/serving.md)
  avatar-meta generate --examples E --query Q   character attributes from a few examples
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
    bench.add_argument("suite", choices=sorted(SUITES), help="which suite to run")
    bench.add_argument("--out", required=True, help="where to write the JSON result")
    bench.add_argument("--quick", action="store_true", help="short run (for smoke tests)")
    bench.set_defaults(func=_cmd_bench, passthrough=False)
    _add_train_parsers(sub)
    _add_export_parsers(sub)
    _add_serve_parser(sub)
    _add_generate_parser(sub)
    _add_fit_parser(sub)
    return parser


def _train_overrides(args: argparse.Namespace) -> dict[str, object]:
    """CLI flags as dotted config overrides (None = keep the file's value)."""
    out: dict[str, object] = {
        "env.env_path": args.env,
        "env.num_envs": args.num_envs,
        "env.base_port": args.base_port,
        "env.seed": args.seed,
        "output.results_dir": args.results_dir,
    }
    if args.editor:
        out["env.editor"] = True
    if args.inprocess:
        out["env.inprocess"] = True
    if args.no_graphics:
        out["env.no_graphics"] = True
    return out


def _cmd_train(args: argparse.Namespace, rest: list[str]) -> int:
    from avatar_meta.config import ConfigError, load_config
    from avatar_meta.training.run import RunExistsError, train

    try:
        config = load_config(args.config, _train_overrides(args))
        run_dir = train(config, args.run_id, resume=args.resume, force=args.force)
    except (ConfigError, RunExistsError) as err:
        print(f"avatar-meta train: {err}", file=sys.stderr)
        return 2
    report = run_dir / "report.md"
    print(f"run folder: {run_dir}")
    if report.exists():
        print(f"report: {report}")
    return 0


def _cmd_evaluate(args: argparse.Namespace, rest: list[str]) -> int:
    from avatar_meta.config import ConfigError
    from avatar_meta.training.run import RunExistsError, evaluate_run

    try:
        run_dir = evaluate_run(args.results_dir or "results", args.run_id)
    except (ConfigError, RunExistsError) as err:
        print(f"avatar-meta evaluate: {err}", file=sys.stderr)
        return 2
    print(f"report: {run_dir / 'report.md'}")
    return 0


def _add_train_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    train = sub.add_parser(
        "train",
        help="meta-train, adapt to held-out scenarios, run baselines, write the run folder",
        description=(
            "Meta-train on the avatar scenarios (mlagents-learn style). Without --env and "
            "--editor it launches the built-in headless world. Writes results/<run-id>/: "
            "config.yaml, checkpoints/, TensorBoard events, metrics.json, report.md. "
            "See docs/training.md."
        ),
    )
    train.add_argument("config", nargs="?", help="YAML config (default: built-in defaults)")
    train.add_argument("--run-id", required=True, help="name of the run folder")
    train.add_argument("--env", help="path of a Unity build (default: the built-in world)")
    train.add_argument(
        "--editor", action="store_true", help="connect to the Unity Editor on port 5004"
    )
    train.add_argument("--num-envs", type=int, help="worlds run in parallel")
    train.add_argument("--base-port", type=int, help="first trainer port (default 5005)")
    train.add_argument("--seed", type=int, help="seed of worlds, sampling and torch")
    mode = train.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume", action="store_true", help="continue the run from its last checkpoint"
    )
    mode.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    train.add_argument(
        "--no-graphics", action="store_true", help="run Unity builds with -nographics"
    )
    train.add_argument("--results-dir", help="parent of run folders (default: results)")
    train.add_argument(
        "--inprocess",
        action="store_true",
        help="developer: step the world in this process (no protocol); fast, for tuning",
    )
    train.set_defaults(func=_cmd_train, passthrough=False)

    evaluate = sub.add_parser(
        "evaluate",
        help="re-run the held-out evaluation of a trained run from its checkpoints",
    )
    evaluate.add_argument("--run-id", required=True, help="name of the run folder")
    evaluate.add_argument("--results-dir", help="parent of run folders (default: results)")
    evaluate.set_defaults(func=_cmd_evaluate, passthrough=False)


def _cmd_keygen(args: argparse.Namespace, rest: list[str]) -> int:
    from avatar_meta.export import signing

    try:
        private, public = signing.write_keypair(args.out_dir)
    except FileExistsError as err:
        print(f"avatar-meta keygen: {err}", file=sys.stderr)
        return 2
    key_id = signing.key_id(signing.load_public_key(public))
    print(f"private key (keep secret, trainer/service only): {private}")
    print(f"public key (ship with games, --policy-public-key): {public}  key id {key_id}")
    return 0


def _cmd_export(args: argparse.Namespace, rest: list[str]) -> int:
    from avatar_meta.export.checkpoint import export_checkpoint

    try:
        result = export_checkpoint(
            args.checkpoint,
            args.out_dir,
            sign_key=args.sign_key,
            version=args.policy_version,
            task_id=args.task_id or (args.family or ""),
            behavior=args.behavior,
            family=args.family,
        )
    except (OSError, ValueError) as err:
        print(f"avatar-meta export: {err}", file=sys.stderr)
        return 2
    print(f"ONNX (Sentis, import as a ModelAsset): {result.onnx}")
    if result.weights is not None:
        print(f"signed PolicyWeights: {result.weights}")
    else:
        print("no --sign-key: signed PolicyWeights not written")
    return 0


def _add_export_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keygen = sub.add_parser(
        "keygen", help="create the RSA-2048 key pair that signs policies (docs/exports.md)"
    )
    keygen.add_argument("--out-dir", required=True, help="writes private.pem (0600), public.pem")
    keygen.set_defaults(func=_cmd_keygen, passthrough=False)

    export = sub.add_parser(
        "export", help="checkpoint -> Sentis ONNX and signed PolicyWeights (docs/exports.md)"
    )
    export.add_argument("checkpoint", help="results/<run>/checkpoints/<algorithm>.pt")
    export.add_argument("--out-dir", required=True, help="folder for <behavior>.onnx/.weights.bin")
    export.add_argument("--sign-key", help="private.pem from `avatar-meta keygen`")
    export.add_argument("--policy-version", type=int, default=1, help="version to stamp")
    export.add_argument("--task-id", default="", help="task id to stamp")
    export.add_argument("--behavior", default="AvatarAgent", help="behaviour name")
    export.add_argument(
        "--family", help="scenario family whose meta-policy to export (per-family runs)"
    )
    export.set_defaults(func=_cmd_export, passthrough=False)


def _cmd_serve(args: argparse.Namespace, rest: list[str]) -> int:
    from avatar_meta.serve.server import ServeOptions, serve

    opts = ServeOptions(
        **{k: v for k, v in vars(args).items() if k in ServeOptions.__dataclass_fields__}
    )
    try:
        return serve(opts)
    except (FileNotFoundError, ValueError) as err:
        print(f"avatar-meta serve: {err}", file=sys.stderr)
        return 2


def _add_serve_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser(
        "serve", help="gRPC adaptation service: episodes in, signed weights out (docs/serving.md)"
    )
    serve.add_argument("--run-id", help="serve results/<run-id>/checkpoints/<algorithm>.pt")
    serve.add_argument("--results-dir", default="results", help="folder holding the runs")
    serve.add_argument("--checkpoint", help="serve this checkpoint file instead of a run")
    serve.add_argument(
        "--family",
        help="scenario family whose meta-policy to adapt (runs with one meta-policy per family)",
    )
    serve.add_argument("--port", type=int, default=50061, help="0 = any free port")
    serve.add_argument("--token-file", help="file holding the bearer token clients must send")
    serve.add_argument(
        "--tls-cert", help="PEM certificate chain (with --tls-key: TLS, all interfaces)"
    )
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument("--sign-key", help="private.pem from `avatar-meta keygen`")
    serve.add_argument("--max-workers", type=int, default=2, help="adaptations computing at once")
    serve.add_argument(
        "--max-queue", type=int, default=64, help="adaptations waiting; more: RESOURCE_EXHAUSTED"
    )
    serve.add_argument("--max-subscribers", type=int, default=64, help="open Subscribe streams")
    serve.add_argument(
        "--max-message-bytes", type=int, default=4 * 1024 * 1024, help="request size cap"
    )
    serve.add_argument("--max-steps", type=int, default=20_000, help="steps per request cap")
    serve.add_argument("--max-episodes", type=int, default=64, help="episodes per request cap")
    serve.add_argument("--grace-s", type=float, default=10.0, help="drain time on SIGTERM")
    serve.add_argument(
        "--max-batch", type=int, default=8, help="Adapt requests adapted together, at most"
    )
    serve.add_argument(
        "--batch-window-ms",
        type=float,
        default=2.0,
        help="wait this long for requests still being parsed to join a batch (0 = never)",
    )
    serve.add_argument(
        "--rate-limit",
        type=_rate,
        default=100.0,
        metavar="R/s",
        help="Adapt requests per second per client (peer host + bearer token); 0 = off",
    )
    serve.add_argument(
        "--rate-burst", type=float, default=None, help="token-bucket size (default: R, >= 1)"
    )
    serve.set_defaults(func=_cmd_serve, passthrough=False)


def _rate(text: str) -> float:
    """`--rate-limit` value: `R` or `R/s` (requests per second), >= 0."""
    value = text[:-2] if text.endswith("/s") else text
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected R or R/s, e.g. 50/s") from None
    if rate < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 0 (0 = no limit)")
    return rate


def _cmd_generate(args: argparse.Namespace, rest: list[str]) -> int:
    import json
    from pathlib import Path

    import torch

    from avatar_meta.meta import character

    torch.set_num_threads(1)  # small network: one thread is fastest, and kind to shared cores
    try:
        model = None
        if args.model:
            if not Path(args.model).exists():
                raise character.InputError(
                    f"--model {args.model} does not exist; omit --model to meta-train now, "
                    "or create it with --save-model"
                )
            model = character.CharacterModel.load(args.model)
        result = character.generate(
            args.examples,
            args.query,
            model,
            iterations=args.iterations,
            seed=args.seed,
            save_model=args.save_model,
        )
    except (character.InputError, OSError, ValueError) as err:
        print(f"avatar-meta generate: {err}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(f"wrote {len(result['generated'])} characters to {args.out}")
    else:
        print(text)
    return 0


def _add_generate_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    gen = sub.add_parser(
        "generate",
        help="few-shot character attributes from a designer's examples (docs/algorithms.md)",
        description=(
            "Adapt the meta-learned attribute generator to a designer's examples "
            "(style descriptor -> attributes) and generate attributes for new descriptors. "
            "Without --model it meta-trains first (seconds). See config/character_examples.json "
            "and config/character_query.json for the file formats."
        ),
    )
    gen.add_argument("--examples", required=True, help="JSON: the designer's examples")
    gen.add_argument("--query", required=True, help="JSON: descriptors to generate for")
    gen.add_argument("--model", help="load this meta-trained model (from --save-model)")
    gen.add_argument("--save-model", help="after meta-training, save the model here")
    gen.add_argument("--out", help="write the JSON result here (default: print it)")
    gen.add_argument(
        "--iterations", type=int, default=1500, help="meta-iterations when training (1500)"
    )
    gen.add_argument("--seed", type=int, default=0, help="seed of meta-training (0)")
    gen.set_defaults(func=_cmd_generate, passthrough=False)


def _cmd_fit(args: argparse.Namespace, rest: list[str]) -> int:
    from avatar_meta.config import ConfigError
    from avatar_meta.training import fit
    from avatar_meta.training.fit_config import load_learners_config

    try:
        config = load_learners_config(args.config)
        model = fit.fit(args.learner, config, args.out, force=args.force)
    except (ConfigError, FileExistsError) as err:
        print(f"avatar-meta fit: {err}", file=sys.stderr)
        return 2
    print(f"wrote {model} and {model.parent / 'metrics.json'}")
    return 0


def _add_fit_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from avatar_meta.training.fit_config import LEARNERS

    fit = sub.add_parser(
        "fit",
        help="train one of " + ", ".join(LEARNERS) + " (docs/algorithms.md)",
        description=(
            "Train one of the learners that do not run in the meta-RL loop, with its section "
            "of a learners config (see config/learners.yaml), evaluate it on held-out data and "
            "save the model: OUT/<learner>.pt, OUT/metrics.json, OUT/config.yaml. "
            "maml, fomaml, reptile, metasgd and encoder train with `avatar-meta train`."
        ),
    )
    fit.add_argument("learner", metavar="LEARNER", help="one of: " + ", ".join(LEARNERS))
    fit.add_argument("--config", help="learners YAML (default: every section's defaults)")
    fit.add_argument("--out", required=True, help="result folder")
    fit.add_argument("--force", action="store_true", help="overwrite an existing model")
    fit.set_defaults(func=_cmd_fit, passthrough=False)


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
    keep_freed_memory()  # large tensors freed each iteration stay mapped (avatar_meta.runtime)
    return int(func(args, rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
