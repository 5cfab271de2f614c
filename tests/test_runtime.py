"""avatar_meta.runtime: the trainer's processes keep freed heap memory instead of returning it."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import numpy as np
from avatar_meta.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
block = np.ones(20_000_000 // 8)  # 20 MB: above glibc's default mmap threshold
held = rss()
del block
print(held - rss())
"""


def _returned_bytes(mode: str) -> int:
    """Bytes of resident memory the process gives back when it frees a 20 MB array."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def test_freed_blocks_stay_resident_only_when_kept() -> None:
    assert _returned_bytes("default") > 15_000_000  # glibc unmaps the block at once
    assert _returned_bytes("keep") < 2_000_000  # kept: the next allocation reuses it
