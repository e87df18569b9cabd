"""Peak resident memory of the running benchmark worker."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program (``VmHWM``), in MB.

    ``ru_maxrss`` also counts what the parent had resident when it forked the
    worker (Linux keeps the larger of the two across ``exec``), so a worker
    that ``make bench`` starts would report ``run_all``'s own size instead of
    its peak whenever that is larger.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
