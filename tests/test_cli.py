"""The `avatar-meta` command line, run as a real subprocess like a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

AVATAR_META = str(Path(sys.executable).parent / "avatar-meta")


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AVATAR_META, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_help_lists_subcommands_for_a_newcomer() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    for word in ("world", "demo", "bench", "Start here"):
        assert word in out.stdout


def test_no_command_prints_help_and_fails() -> None:
    out = run_cli()
    assert out.returncode == 2
    assert "usage" in out.stdout.lower()


def test_unknown_flag_names_it() -> None:
    out = run_cli("demo", "--no-such-flag")
    assert out.returncode != 0
    assert "--no-such-flag" in out.stderr


def test_world_print_path_is_launchable_by_unity_environment() -> None:
    out = run_cli("world", "--print-path")
    assert out.returncode == 0
    path = out.stdout.strip()
    assert "/" in path and os.access(path, os.X_OK)
    for bad in (".x86", ".exe", ".app"):
        assert bad not in path
    from mlagents_envs.env_utils import validate_environment_path

    assert validate_environment_path(path) == path


def test_version_lists_stack() -> None:
    out = run_cli("--version")
    assert out.returncode == 0
    assert "mlagents-envs 1.1.0" in out.stdout


@pytest.mark.slow
def test_bench_protocol_quick_writes_json(tmp_path: Path) -> None:
    out_file = tmp_path / "protocol.json"
    out = run_cli("bench", "protocol", "--out", str(out_file), "--quick", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out_file.read_text())
    assert doc["suite"] == "protocol" and doc["machine"]["cores"]
    for n in (1, 8, 32, 64):
        row = doc["results"][f"agents_{n}"]
        assert row["protocol_steps_per_s"] > 0 and row["inprocess_steps_per_s"] > 0
        assert row["baseline"] == "inprocess_steps_per_s"
        parts = row["breakdown_ms"]
        assert parts["total_per_step"] > 0
        assert parts["trainer_decode"] > 0 and parts["world_encode"] > 0


def test_demo_tour_runs_every_family_through_the_protocol(free_port: int) -> None:
    out = run_cli("demo", "--episodes", "1", "--base-port", str(free_port), timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    table = [line for line in out.stdout.splitlines() if line.split()[:1]]
    for family in (
        "reach_landmark",
        "follow_visitor",
        "greet_visitor",
        "keep_distance",
        "pace_match",
        "patrol",
    ):
        rows = [line for line in table if line.startswith(family)]
        assert len(rows) == 2, out.stdout
        random_ret, scripted_ret = (float(x) for x in rows[0].split()[-2:])
        assert scripted_ret > random_ret
