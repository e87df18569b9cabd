"""Python's cyclic garbage collector, paused while the DAG file imports convoy and builds.

A module of its own, with nothing else in it, so that the DAG file can pause
the collector before it imports the rest of convoy.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the collector for the block; resume it after unless it was already off.

    Building a thousand DAGs keeps every operator alive, and each full
    collection walks all of them again without finding garbage: about a quarter
    of the parse (measured: about 120 objects freed afterwards, the same peak
    memory; ``benchmarks/RESULTS.md``). Importing convoy set off one more,
    which walked every object Airflow had made so far. Reference counting
    still frees everything else at once; the collector runs again as soon as
    it is resumed. Nested blocks leave the resuming to the outermost.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
