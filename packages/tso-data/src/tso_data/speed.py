"""tso_data's process-wide performance switches, in one place.

Each switch changes the whole process, so library functions never apply one: a command does,
once, before its work (``tso-data build`` calls :func:`apply` through its CLI), and so do the
benchmarks that time what the command does. Measurements: benchmarks/results and docs.

``batch_allocator``: glibc serves every allocation above its mmap threshold with a fresh
``mmap`` and returns it with ``munmap`` on free. The build allocates and frees hundreds of
large NumPy/Arrow buffers, so each one is faulted in page by page again, and every
``munmap`` in a threaded process costs TLB shootdowns on all cores. Serving them from the
heap and keeping freed memory for reuse avoids both, at the price of the process keeping its
high-water mark of memory until it exits (a build is a short batch process).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from dataclasses import dataclass

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_applied: set[str] = set()


@dataclass(frozen=True)
class Switches:
    """The switches a command turns on."""

    batch_allocator: bool = False


BUILD = Switches(batch_allocator=True)  # `tso-data build`: a batch job over large arrays


def apply(switches: Switches) -> dict[str, bool]:
    """Turn on ``switches`` for this process (each once); returns which ones took effect."""
    applied = {}
    if switches.batch_allocator:
        applied["batch_allocator"] = use_batch_allocator()
    return applied


def use_batch_allocator() -> bool:
    """Tune glibc malloc for a batch job (once per process); False where it does not apply
    (not Linux/glibc). Allocations no longer use mmap; freed memory stays for reuse.
    Tested in a subprocess (tests/pairs/test_build_memory.py): it changes the whole process.
    """
    if "batch_allocator" in _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1  # every allocation from the heap, reusable after free
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1  # keep freed memory (until exit or malloc_trim)
    ok &= mallopt(_M_TOP_PAD, 512 << 20) == 1  # grow the heap in 512 MB steps (fewer brk calls)
    if ok:
        _applied.add("batch_allocator")
    return ok
