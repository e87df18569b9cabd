"""The runner's progress lines and records, driven by hand-made states and a fake clock."""

from __future__ import annotations

from typing import Any

from convoy.observe.progress import Progress
from convoy.rollout.runner import ProgressLog
from convoy.rollout.status import RolloutState


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(updated: int, ready: int, *, observed: bool = True, desired: int = 3) -> RolloutState:
    done = observed and updated == ready == desired
    return RolloutState(done, "", desired, updated, ready, ready, observed)


def make(
    clock: FakeClock, interval: float = 0.0
) -> tuple[ProgressLog, list[str], list[dict[str, Any]]]:
    lines: list[str] = []
    records: list[dict[str, Any]] = []
    log = ProgressLog(
        "cart", lines.append, 0.0, clock, sink=records.append, sink_interval_s=interval
    )
    return log, lines, records


def test_old_revision_counts_are_not_reported_as_done() -> None:
    clock = FakeClock()
    log, lines, records = make(clock)
    log.report(state(3, 3, observed=False), force=True)
    assert records == []
    assert lines == ["cart: 3/3 updated, 3/3 ready (100%)"]


def test_done_is_updated_and_ready_with_rate_and_eta_from_the_observation() -> None:
    clock = FakeClock()
    log, lines, records = make(clock)
    log.report(state(0, 3), pods=3)
    clock.now += 2.0
    log.report(state(1, 3), pods=4)  # the surge pod is not ready: the 3 ready are old
    clock.now += 2.0
    log.report(state(2, 3), pods=3)
    assert [r["done"] for r in records] == [0, 0, 2]
    assert records[-1]["rate"] == 0.5
    assert records[-1]["eta_seconds"] == 2.0
    assert records[-1]["pct"] == 66.7
    assert records[-1]["total"] == 3
    assert records[-1]["unit"] == "replicas"
    assert records[-1]["label"] == "cart"
    assert lines[-1] == "cart: 2/3 updated, 3/3 ready (66%) 0.5 replicas/s ETA 2s"


def test_without_a_pod_count_done_is_the_smaller_of_updated_and_ready() -> None:
    assert ProgressLog.done(state(2, 1)) == 1
    assert ProgressLog.done(state(1, 3)) == 1
    assert ProgressLog.done(state(4, 4)) == 3  # never above the desired replicas


def test_sink_is_bounded_by_its_interval_and_always_gets_the_end() -> None:
    clock = FakeClock()
    log, _, records = make(clock, interval=5.0)
    for updated in (0, 1, 2, 3):
        clock.now += 2.0
        log.report(state(updated, updated))
    log.finish(state(3, 3))
    # the first record, one 6 s later (>= 5 s), the end
    assert [r["done"] for r in records] == [0, 3, 3]
    assert records[-1]["eta_seconds"] == 0.0


def test_update_sets_a_measured_count_that_may_drop() -> None:
    clock = FakeClock()
    records: list[dict[str, Any]] = []
    p = Progress(4, "cart", lambda _: None, unit="replicas", clock=clock, sink=records.append)
    p.update(2)
    p.update(1)
    assert p.done == 1
    assert records[0]["done"] == 2
