"""Allocator settings for the build, a batch job that allocates and frees many large arrays.

glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh
``mmap`` and returns it with ``munmap`` on free. The build allocates and frees hundreds of
such NumPy/Arrow buffers (one 12M-row column is ~100 MB), so each one is faulted in page by
page again, and every ``munmap`` in a threaded process costs TLB shootdowns on all cores:
at 1M prompts that was ~3.5 s of system time. Serving them from the heap and keeping freed
memory for reuse removes most of it, at the price of the process keeping its high-water
mark of memory until it exits or trims (``tso-data build`` is a short batch process).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_applied = False


def use_batch_allocator() -> bool:
    """Tune glibc malloc for the build (once per process); False where it does not apply
    (not Linux/glibc). Allocations no longer use mmap; freed memory stays for reuse.
    Tested in a subprocess (tests/pairs/test_build_memory.py): it changes the whole process.
    """
    global _applied
    if _applied:
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
    _applied = ok
    return ok
