"""Peak resident memory of this process over a block of work (a pipeline stage).

On Linux the kernel keeps the process's high-water mark (``VmHWM`` in ``/proc/self/status``) and
lets the process reset it (write ``5`` to ``/proc/self/clear_refs``), so each stage's peak is exact
and independent of the stages before it. Where that is not possible (other systems, a locked-down
``/proc``) the peak is ``getrusage``'s ``ru_maxrss``, the whole process's peak so far, and is marked
``"scope": "process"`` so that nobody reads it as the stage's own.
"""

from __future__ import annotations

import re
import resource
import sys
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def current_rss_mb() -> float | None:
    """Resident memory now, in MiB (None where the system does not say)."""
    kib = _status_kib("VmRSS")
    return round(kib / 1024, 1) if kib is not None else None


def _ru_maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def reset_peak() -> bool:
    """Reset the kernel's high-water mark to the current resident size; False where it cannot."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def release_freed_memory() -> bool:
    """Collect garbage and hand memory the allocator keeps after frees back to the system.

    glibc's malloc keeps freed heap pages for reuse: after training, ~0.9 GB of freed activations
    stayed resident (measured) until ``malloc_trim``. False where there is no glibc.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


class PeakRss:
    """``with PeakRss() as m: ...`` then ``m.result()``: ``{"peak_rss_mb", "scope"}``.

    ``scope`` is ``"stage"`` when the peak covers only the block, ``"process"`` when it is the
    process's peak since it started (the block's peak is at most that).
    """

    def __init__(self) -> None:
        self.scope = "process"
        self.peak_mb: float | None = None

    def __enter__(self) -> PeakRss:
        self.scope = "stage" if reset_peak() else "process"
        return self

    def __exit__(self, *exc: object) -> None:
        kib = _status_kib("VmHWM") if self.scope == "stage" else None
        self.peak_mb = round(kib / 1024, 1) if kib is not None else _ru_maxrss_mb()

    def result(self) -> dict[str, Any]:
        return {"peak_rss_mb": self.peak_mb, "scope": self.scope}
