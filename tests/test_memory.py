"""Per-stage peak memory: the kernel's high-water mark, reset per block."""

import sys

import pytest

from dartkit.memory import PeakRss, current_rss_mb, release_freed_memory

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc high-water mark")


@linux
def test_each_block_measures_its_own_peak():
    with PeakRss() as big:
        block = bytearray(300 * 1024 * 1024)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
        del block
    with PeakRss() as small:
        pass
    assert big.result()["scope"] == small.result()["scope"] == "stage"
    assert big.peak_mb >= current_rss_mb() + 250
    # The second block starts from a reset mark: the 300 MB of the first one is not its peak.
    assert small.peak_mb < big.peak_mb - 250


@linux
def test_freed_heap_memory_goes_back_to_the_system():
    chunks = [bytes(64 * 1024) for _ in range(3000)]  # ~190 MB of heap below the mmap threshold
    keep = chunks[-1]  # pins the top of the heap, so free() alone cannot shrink it
    del chunks
    held = current_rss_mb()
    assert release_freed_memory()
    assert current_rss_mb() < held - 100
    assert keep
