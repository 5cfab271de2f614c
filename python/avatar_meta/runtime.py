"""Process-wide settings for the trainer's processes.

`keep_freed_memory()`: glibc's malloc hands large freed blocks back to the kernel (munmap, or
trimming the heap top), and the next allocation of the same size page-faults its memory back
in. A meta-iteration allocates and frees the same tensors (tens of MB, batched over tasks)
every time, so that round trip repeats each iteration. Measured on the 2-core machine
(`bench training`, second-order MAML at 40 tasks x 400 transitions, one torch thread, 16
runs): the vmap path took 0.091-0.146 s with glibc's defaults, spikes included, and
0.089-0.093 s with the largest mmap threshold (32 MB) and no trimming. Setting only the trim
threshold is worse than the defaults (it freezes the mmap threshold at 128 kB, so every
batched tensor is mapped afresh): 0.165 s. This is what PyTorch's CPU performance guide gets
from swapping in jemalloc or tcmalloc, without a new dependency. The cost: the process keeps
its peak heap instead of returning it, which for a trainer is the size it needs anyway.
A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""mallopt parameter numbers (glibc <malloc.h>)."""
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
"""glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)."""
NEVER_TRIM = 2**31 - 1


def keep_freed_memory() -> bool:
    """Keep freed heap memory in the process (see the module docstring). True if applied."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    # Order matters: fixing the trim threshold first would freeze the mmap threshold low.
    applied = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
    return applied and libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
