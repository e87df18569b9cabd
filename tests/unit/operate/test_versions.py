"""Flyway-style version states from files and attempts (pure)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from convoy.operate.model import DatastoreState
from convoy.operate.versions import Attempt, judge_datastore, judge_versions, version_rows
from convoy.policy.migrations import MigrationFile

AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def f(version: str, checksum: str = "c") -> MigrationFile:
    key = tuple(int(p) for p in version.split("."))
    return MigrationFile(key, version, f"m{version}", "V", Path(f"V{version}__m.sql"), checksum)


def a(
    version: str, state: str, checksum: str | None = "c", run: str = "r1", by: str | None = None
) -> Attempt:
    return Attempt(version, f"m{version}", state, checksum, run, AT, by)  # type: ignore[arg-type]


def states(files: list[MigrationFile], attempts: list[Attempt]) -> list[tuple[str, str]]:
    return [(r.version, r.state) for r in version_rows(files, attempts)]


def test_applied_pending_edited_missing() -> None:
    files = [f("1"), f("2", "new"), f("4")]
    attempts = [a("1", "applied"), a("2", "applied", "old"), a("3", "applied")]
    assert states(files, attempts) == [
        ("1", "applied"),
        ("2", "edited"),
        ("3", "missing"),
        ("4", "pending"),
    ]
    verdict, reasons = judge_versions(version_rows(files, attempts))
    assert verdict == "drift"
    assert reasons == [
        "edited after they were applied: 2",
        "applied but missing on disk: 3",
        "pending: 4",
    ]


def test_latest_attempt_decides() -> None:
    attempts = [
        a("1", "applied"),
        a("2", "applied"),
        a("2", "reverted", by="r2"),
        a("3", "rolled-back"),
    ]
    rows = version_rows([f("1"), f("2"), f("3")], attempts)
    assert [(r.version, r.state) for r in rows] == [
        ("1", "applied"),
        ("2", "reverted"),
        ("3", "pending"),
    ]
    assert rows[1].reverted_by == "r2"
    assert rows[2].note == "attempt in run r1 failed and was rolled back"
    assert rows[2].checksum is None
    assert judge_versions(rows) == ("pending", ["pending: 3", "reverted: 2 (by run r2)"])


def test_failed_and_out_of_order_are_degraded() -> None:
    rows = version_rows([f("1"), f("2"), f("3")], [a("2", "applied"), a("3", "failed")])
    assert [(r.version, r.state) for r in rows] == [
        ("1", "out of order"),
        ("2", "applied"),
        ("3", "failed"),
    ]
    assert judge_versions(rows)[0] == "degraded"


def test_baseline() -> None:
    rows = version_rows([f("1"), f("2"), f("3")], [a("2", "baseline", None)])
    assert [(r.version, r.state) for r in rows] == [
        ("2", "baseline"),
        ("1", "below baseline"),
        ("2", "below baseline"),
        ("3", "pending"),
    ]


def test_unfinished_checkpoints_without_a_lock_are_degraded() -> None:
    from convoy.operate.model import Checkpoint

    cp = Checkpoint("fill", "all", "run:r1", "r1", 10, AT)
    state = DatastoreState("orders", "postgres", "in sync", (), unfinished=(cp,))
    judged = judge_datastore(state)
    assert judged.verdict == "degraded"
    assert judged.reasons == ("unfinished transform checkpoints: fill (run r1)",)
    import dataclasses

    live = judge_datastore(dataclasses.replace(state, lock="pid 1 (convoy:shop/orders:transform)"))
    assert live.verdict == "pending"
