"""The C allocator's mmap threshold, fixed so a full cache's RSS stays flat.

glibc serves allocations over the mmap threshold (128 KiB) with ``mmap`` and gives them back
on ``free``; but each time such a block is freed it raises the threshold to that block's
size (up to 32 MiB). From then on the big tables of a churning cache (an ``OrderedDict``
of 200,000 entries is resized under eviction every few thousand inserts) come from the
heap instead, whose fragments RSS keeps. Measured with the memory benchmark's visitors
(``tests/benchmarks/bench_memory.py``, default bound): RSS rose in 8-15 MB steps for
375,000 visitors after the store was full (peak 202 MB); with the threshold fixed it is
flat from the first turnover (179 MB).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3
"""``mallopt``'s parameter number for the threshold (``malloc.h``)."""
MMAP_THRESHOLD_BYTES = 128 * 1024
"""glibc's own starting value; setting it explicitly turns the raising off."""
ENV_OVERRIDE = "MALLOC_MMAP_THRESHOLD_"
"""glibc's environment tunable: an operator who sets it keeps their value."""


def fix_mmap_threshold() -> bool:
    """Pin the threshold on glibc; whether it was pinned (not elsewhere, nor if set by env)."""
    if not sys.platform.startswith("linux") or ENV_OVERRIDE in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own libc
    except (OSError, AttributeError):  # a libc without mallopt: nothing to pin
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
