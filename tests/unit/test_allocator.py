"""The pinned mmap threshold: big blocks keep coming from mmap after one is freed.

Each case runs in a fresh interpreter (the threshold is process-wide and one-way) and reads
glibc's ``mallinfo2().hblks``, the number of blocks currently held by ``mmap``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from amperity_signal.allocator import ENV_OVERRIDE

PROBE = """
import ctypes, sys
from amperity_signal.allocator import fix_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
pinned = fix_mmap_threshold() if sys.argv[1] == "pin" else False
big = bytearray(4 << 20)  # mmapped; freeing it is what raises an unpinned threshold
del big
before = mallinfo2().hblks
blocks = [bytearray(1 << 20) for _ in range(4)]  # 1 MiB each: over 128 KiB, under 4 MiB
print(pinned, mallinfo2().hblks - before)
"""


def _probe(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, check=True
    )
    pinned, mmapped = done.stdout.split()
    return pinned, int(mmapped)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_after_a_big_free_blocks_over_128_kib_still_come_from_mmap_once_pinned() -> None:
    assert _probe("pin") == ("True", 4)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_unpinned_glibc_serves_them_from_the_heap_which_is_what_the_pin_is_for() -> None:
    assert _probe("leave") == ("False", 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_an_operators_malloc_mmap_threshold_is_left_as_set() -> None:
    env = {**os.environ, ENV_OVERRIDE: "1048576"}
    assert _probe("pin", env)[0] == "False"


def test_each_service_process_pins_the_threshold_before_its_loop_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``runner._run`` (one per worker) pins first: the benchmark's RSS is the service's."""
    import uvloop

    from amperity_signal import runner

    order: list[str] = []

    def pin() -> bool:
        order.append("pin")
        return True

    monkeypatch.setattr(runner, "fix_mmap_threshold", pin)

    def run(coroutine: Any) -> int:
        coroutine.close()  # not started: only the order matters here
        order.append("loop")
        return 0  # the served loop's exit status, which _run passes on

    monkeypatch.setattr(uvloop, "run", run)
    settings: Any = object()
    assert runner._run(settings, gateway=False, reuse_port=False) == 0
    assert order == ["pin", "loop"]
