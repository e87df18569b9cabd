from __future__ import annotations

import pytest

from convoy.observe.progress import Progress, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (9.4, "9s"), (59.6, "1m00s"), (125, "2m05s"), (3720, "1h02m"), (-3, "0s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_line_has_done_total_percent_rate_and_eta() -> None:
    clock, lines = FakeClock(), []
    p = Progress(500_000, "orders/backfill-status", lines.append, clock=clock, min_interval_s=1)
    clock.now += 2.0
    p.advance(82_000)
    assert lines == ["orders/backfill-status: 82000/500000 rows (16.4%) 41000 rows/s ETA 10s"]


def test_logging_frequency_is_bounded() -> None:
    clock, lines = FakeClock(), []
    p = Progress(1000, "x", lines.append, clock=clock, min_interval_s=5)
    for _ in range(80):
        clock.now += 0.125
        p.advance(1)
    # 10 s of work, at most one line every 5 s -> 2 lines
    assert len(lines) == 2
    assert p.done == 80


def test_unknown_total_has_no_percentage_or_eta() -> None:
    clock, lines = FakeClock(), []
    p = Progress(None, "rollout/cart", lines.append, unit="pods", clock=clock, min_interval_s=0)
    clock.now += 1
    p.advance(3)
    assert lines == ["rollout/cart: 3 pods 3 pods/s"]


def test_resumed_work_rate_counts_only_new_work_and_finish_always_logs() -> None:
    clock, lines = FakeClock(), []
    p = Progress(100, "t", lines.append, clock=clock, done=50, min_interval_s=60)
    clock.now += 5
    assert p.advance(10) is False
    assert p.rate() == pytest.approx(2.0)
    assert p.eta_s() == pytest.approx(20.0)
    final = p.finish()
    assert final == "t: 60/100 rows (60.0%) 2 rows/s ETA 20s done in 5s"
    assert lines == [final]


def test_zero_total_and_no_elapsed_time() -> None:
    lines: list[str] = []
    p = Progress(0, "t", lines.append, clock=lambda: 1.0, min_interval_s=0)
    p.advance(0)
    assert lines == ["t: 0/0 rows 0 rows/s"]
