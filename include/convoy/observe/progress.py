"""Progress lines with done/total, rate and ETA, logged at a bounded frequency.

Generic: used by every datastore stage (backup, migrate, transform, validation,
revert) of both engines and by the rollout runner. ``Progress(total, label, log)``
then ``advance(n)`` per unit of work and ``finish()`` at the end::

    orders/backfill-status: 120000/500000 rows (24.0%) 41000 rows/s ETA 9s

A ``sink`` also receives the latest progress as a plain mapping
(:func:`progress_value`: done, total, pct, rate, eta_seconds, updated_at) while
the work runs, at most every ``sink_interval_s`` seconds, and always at the
end. The Airflow layer pushes it to the task's XCom ``progress`` for the
Upgrades page; the engines only see a callable, so they stay Airflow-free.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from convoy.redaction import get_logger

Clock = Callable[[], float]
#: Receives :func:`progress_value` mappings; must not block for long.
ProgressSink = Callable[[Mapping[str, Any]], None]

#: Seconds between two sink calls of one step (``0``: every advance; tests use it).
SINK_INTERVAL_ENV = "CONVOY_PROGRESS_PUSH_INTERVAL_S"
DEFAULT_SINK_INTERVAL_S = 5.0

_logger = get_logger(__name__)


def default_sink_interval_s() -> float:
    """``$CONVOY_PROGRESS_PUSH_INTERVAL_S``, else 5 s; a bad value falls back to the default."""
    raw = os.environ.get(SINK_INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_SINK_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        _logger.warning(
            "%s=%r is not a number; using %gs", SINK_INTERVAL_ENV, raw, DEFAULT_SINK_INTERVAL_S
        )
        return DEFAULT_SINK_INTERVAL_S
    return max(0.0, value)


def progress_value(
    *,
    done: int,
    total: int | None,
    unit: str,
    rate: float | None,
    eta_seconds: float | None,
    label: str,
    updated_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """The JSON-able ``progress`` record (XCom ``progress``, docs/ui.md)."""
    when = updated_at or dt.datetime.now(dt.UTC)
    return {
        "done": int(done),
        "total": None if total is None else int(total),
        "pct": round(min(100.0, 100.0 * done / total), 1) if total else None,
        "unit": unit,
        "rate": None if rate is None else round(float(rate), 3),
        "eta_seconds": None if eta_seconds is None else round(float(eta_seconds), 1),
        "label": label,
        "updated_at": when.astimezone(dt.UTC).isoformat(timespec="seconds"),
    }


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

    ``sink`` gets :meth:`value` on the first :meth:`advance`, then at most every
    ``sink_interval_s`` seconds (default: :func:`default_sink_interval_s`), and
    from :meth:`finish`. An exception from the sink is logged, never raised.
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
        sink: ProgressSink | None = None,
        sink_interval_s: float | None = None,
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
        self._sink = sink
        self._sink_interval_s = (
            default_sink_interval_s() if sink_interval_s is None else sink_interval_s
        )
        self._last_sunk: float | None = None

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
        # The first advance is sent at once so a reader sees the step moving
        # (and its total) without waiting a whole interval.
        if self._last_sunk is None or now - self._last_sunk >= self._sink_interval_s:
            self._send(now)
        return due

    def update(self, done: int) -> bool:
        """Set ``done`` to a measured count (e.g. ready replicas, which may also drop).

        Same logging and sink limits as :meth:`advance`; returns whether it logged.
        """
        return self.advance(done - self.done)

    def value(self, *, eta_seconds: float | None = None) -> dict[str, Any]:
        """The current :func:`progress_value` (``eta_seconds`` overrides the estimate)."""
        rate = self.rate()
        return progress_value(
            done=self.done,
            total=self.total,
            unit=self.unit,
            rate=rate if rate > 0 else None,
            eta_seconds=self.eta_s() if eta_seconds is None else eta_seconds,
            label=self.label,
        )

    def _send(self, now: float, *, final: bool = False) -> None:
        if self._sink is None:
            return
        self._last_sunk = now
        try:
            self._sink(self.value(eta_seconds=0.0 if final else None))
        except Exception:
            # Reporting progress must never fail the work it reports on.
            _logger.warning("%s: progress not published", self.label, exc_info=True)

    def finish(self, message: str = "done") -> str:
        """Always logs the final line (with ``message``), publishes it, and returns it."""
        elapsed = self._clock() - self._started
        text = f"{self.line()} {message} in {format_duration(elapsed)}"
        self._last_logged = self._clock()
        self._log(text)
        self._send(self._last_logged, final=True)
        return text
