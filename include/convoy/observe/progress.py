"""Progress lines with done/total, rate and ETA, logged at a bounded frequency.

Generic: used by the PostgreSQL transforms, the rollout runner and the mongo
engine. ``Progress(total, label, log)`` then ``advance(n)`` per unit of work and
``finish()`` at the end::

    orders/backfill-status: 120000/500000 rows (24.0%) 41000 rows/s ETA 9s
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


def format_duration(seconds: float) -> str:
    """``9s``, ``2m05s``, ``1h02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """Counts work done and logs a line at most every ``min_interval_s`` seconds.

    ``total`` may be ``None`` (unknown: no percentage or ETA) and may be
    corrected later with :meth:`set_total`. ``done`` may start above zero
    (resumed work); the rate only counts work done by this instance.
    """

    def __init__(
        self,
        total: int | None,
        label: str,
        log: Callable[[str], None],
        *,
        unit: str = "rows",
        min_interval_s: float = 5.0,
        done: int = 0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.done = done
        self._log = log
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._start_done = done
        self._started = clock()
        self._last_logged: float | None = None

    def set_total(self, total: int | None) -> None:
        self.total = total

    def rate(self) -> float:
        """Units per second since this instance started."""
        elapsed = self._clock() - self._started
        return (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        if self.total is None or rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / rate)

    def line(self) -> str:
        parts = [f"{self.label}: {self.done}"]
        if self.total is not None:
            parts[0] += f"/{self.total}"
        parts[0] += f" {self.unit}"
        if self.total:
            parts.append(f"({100.0 * self.done / self.total:.1f}%)")
        parts.append(f"{self.rate():.0f} {self.unit}/s")
        eta = self.eta_s()
        if eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
        return " ".join(parts)

    def advance(self, n: int = 1) -> bool:
        """Add ``n`` done; log if the interval has passed. Returns whether it logged."""
        self.done += n
        now = self._clock()
        if self._last_logged is None:
            # first line after the interval, measured from the start
            due = now - self._started >= self._min_interval_s
        else:
            due = now - self._last_logged >= self._min_interval_s
        if due:
            self._last_logged = now
            self._log(self.line())
        return due

    def finish(self, message: str = "done") -> str:
        """Always logs the final line (with ``message``) and returns it."""
        elapsed = self._clock() - self._started
        text = f"{self.line()} {message} in {format_duration(elapsed)}"
        self._last_logged = self._clock()
        self._log(text)
        return text
