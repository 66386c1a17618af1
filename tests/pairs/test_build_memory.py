"""The build's allocator tuning: after it, a large buffer freed and allocated again reuses
memory already faulted in instead of a fresh mmap faulted page by page. Run in a
subprocess because the setting is process-wide."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from tso_data.speed import use_batch_allocator

    def refault_pages() -> int:
        a = np.ones(400_000_000 // 8)  # 400 MB: far above glibc's (dynamic) mmap and trim thresholds
        del a
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        b = np.ones(400_000_000 // 8)
        del b
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    tune = sys.argv[1] == "tuned"
    applied = use_batch_allocator() if tune else False
    print(applied, refault_pages())
""")


def _probe(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, timeout=60)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_batch_allocator_reuses_freed_buffers_instead_of_refaulting_them() -> None:
    plain_applied, plain_faults = _probe("plain")
    tuned_applied, tuned_faults = _probe("tuned")
    assert not plain_applied and tuned_applied
    # untuned, the second buffer is a fresh mmap faulted in again (in 2 MB pages where NumPy asks
    # for transparent huge pages, so ~200 faults or more); tuned, the heap's pages are reused
    assert plain_faults > 150
    assert tuned_faults < plain_faults // 10
