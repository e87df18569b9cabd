from __future__ import annotations

import datetime as dt

import pytest

from convoy.observe.progress import (
    SINK_INTERVAL_ENV,
    Progress,
    default_sink_interval_s,
    format_duration,
    progress_value,
)


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


def test_sink_gets_the_first_advance_then_at_most_one_value_per_interval() -> None:
    clock, sent = FakeClock(), []
    p = Progress(
        1000, "orders/fill", lambda _: None, clock=clock, sink=sent.append, sink_interval_s=5
    )
    for _ in range(80):
        clock.now += 0.125
        p.advance(10)
    # 10 s of work: the first advance at once (t=0.125), then at most one every 5 s.
    assert [v["done"] for v in sent] == [10, 410]
    first = sent[0]
    assert first["total"] == 1000
    assert first["pct"] == 1.0
    assert first["unit"] == "rows"
    assert first["label"] == "orders/fill"
    assert first["rate"] == pytest.approx(80.0)
    assert first["eta_seconds"] == pytest.approx(12.4)
    assert dt.datetime.fromisoformat(first["updated_at"]).tzinfo is not None
    p.finish()
    assert sent[-1]["done"] == 800
    assert sent[-1]["eta_seconds"] == 0.0
    assert len(sent) == 3


def test_sink_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SINK_INTERVAL_ENV, "0")
    clock, sent = FakeClock(), []
    p = Progress(3, "t", lambda _: None, clock=clock, sink=sent.append)
    for _ in range(3):
        p.advance(1)
    assert [v["done"] for v in sent] == [1, 2, 3]
    monkeypatch.setenv(SINK_INTERVAL_ENV, "soon")
    assert default_sink_interval_s() == 5.0
    monkeypatch.delenv(SINK_INTERVAL_ENV)
    assert default_sink_interval_s() == 5.0


def test_a_failing_sink_never_fails_the_work(caplog: pytest.LogCaptureFixture) -> None:
    def broken(_: object) -> None:
        raise ConnectionError("execution API unreachable")

    lines: list[str] = []
    p = Progress(2, "t", lines.append, sink=broken, sink_interval_s=0)
    assert p.advance(1) is False
    p.finish()
    assert p.done == 1
    assert "progress not published" in caplog.text


def test_progress_value_is_json_ready() -> None:
    at = dt.datetime(2026, 11, 25, 12, 0, 0, 400_000, tzinfo=dt.UTC)
    assert progress_value(
        done=3, total=0, unit="docs", rate=None, eta_seconds=None, label="x", updated_at=at
    ) == {
        "done": 3,
        "total": 0,
        "pct": None,
        "unit": "docs",
        "rate": None,
        "eta_seconds": None,
        "label": "x",
        "updated_at": "2026-11-25T12:00:00+00:00",
    }
