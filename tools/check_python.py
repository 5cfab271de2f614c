"""Refuse Pythons the ML-Agents Release 22 stack cannot run on (see docs/install.md).

Usage: python tools/check_python.py [X.Y.Z]   (default: the running interpreter)
"""

from __future__ import annotations

import sys

SUPPORTED = ((3, 10), (3, 11))


def problem(version: tuple[int, ...]) -> str | None:
    """Why this Python cannot be used, or None when it can."""
    if tuple(version[:2]) in SUPPORTED:
        return None
    text = ".".join(str(v) for v in version)
    if tuple(version[:2]) >= (3, 12):
        return (
            f"Python {text}: mlagents 1.1.0 needs numpy < 1.24 (it uses np.float at import time), "
            "and numpy 1.23 has no wheel for 3.12+. Use Python 3.11 (or 3.10): "
            "make setup PYTHON=python3.11"
        )
    return f"Python {text} is too old: avatar-meta needs 3.10 or 3.11. Run make setup PYTHON=python3.11"


def main() -> int:
    if len(sys.argv) > 1:
        version = tuple(int(x) for x in sys.argv[1].split("."))
    else:
        version = tuple(sys.version_info[:3])
    reason = problem(version)
    if reason:
        print(reason, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
