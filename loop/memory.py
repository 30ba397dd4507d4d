"""A long campaign's memory, held near what it uses (glibc's allocator, set once per process).

Why. A BoTorch campaign run for hours in one process grew its resident memory with the trial
count, to 1.0–1.8 GB by trial 80–106 of a 2-D campaign whose planner, suggesting from the
same history in a fresh process, peaks at 350 MB (found in a review of long runs). Nothing
leaked: every fitted model is freed. glibc raises its mmap threshold each time a large block
is freed (up to 32 MB), so from then on the tensors of each fit and acquisition search (tens
of MB, allocated on the planner's and the slots' threads) come from per-thread heaps that
fragment and are not handed back. A fixed threshold of 1 MiB keeps every block that large
in its own mapping, returned to the system when it is freed.

Measured (``benchmarks/memory.py``: an 80-trial BoTorch campaign, each setting twice,
alternating): peak RSS **0.61 GB against 0.91 GB** (0.96–1.34 GB in ``closedloop run``s
of the same campaign); the system time of mapping fresh pages doubles (15.5 s against 8.0
s over the campaign), the wall time is within noise (ratio 1.04: 56.7–63.0 s against
56.9–58.5 s). A threshold of 128 KiB saved little more (0.61 GB) at 16 % more wall time
in a scratch run.

Only the command line sets it (``loop.cli.main``), for its own process: a notebook or a
program that drives a ``Runner`` owns its process's allocator and may call
:func:`steady_memory` itself. A ``MALLOC_MMAP_THRESHOLD_`` the user set wins, and on other
C libraries (macOS, musl) nothing is done.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: glibc's ``mallopt`` parameter for the mmap threshold (malloc.h: ``M_MMAP_THRESHOLD``).
_M_MMAP_THRESHOLD = -3
#: Blocks of this many bytes and more get a mapping of their own (see the module docstring).
MMAP_THRESHOLD = 1 << 20


def steady_memory() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD` for this process; whether it did.

    Not done where the user set ``MALLOC_MMAP_THRESHOLD_`` (their choice), nor off Linux, nor
    where the C library has no ``mallopt`` or refuses it.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        # the process's own symbols, the C library's among them (no ldconfig run, as
        # ctypes.util.find_library would: every command pays for this at start)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
