"""The retention rule of ``convoy db backups --prune`` (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from convoy.operate.model import BackupItem, BackupRun
from convoy.operate.retention import parse_duration, protect, select

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def run(run_id: str, days_ago: int) -> BackupRun:
    item = BackupItem("snapshot", f"convoy_backup.{run_id}", "public.orders", 100)
    return BackupRun("orders", run_id, "shop", NOW - dt.timedelta(days=days_ago), (item,))


RUNS = [run("r1", 30), run("r2", 20), run("r3", 10), run("r4", 1)]


def test_newest_and_unfinished_runs_are_always_kept() -> None:
    runs = protect(RUNS, {"r2": "run not finished in Airflow"})
    assert [r.protected for r in runs] == [
        None,
        "run not finished in Airflow",
        None,
        "newest run of the datastore (its rollback may still be needed)",
    ]
    every = select(runs, keep=None, older_than=dt.timedelta(0), now=NOW)
    assert [r.run_id for r in every] == ["r3", "r1"]  # newest first


def test_keep_and_older_than() -> None:
    runs = protect(RUNS, {})
    assert [r.run_id for r in select(runs, keep=2, older_than=None, now=NOW)] == ["r2", "r1"]
    assert [
        r.run_id for r in select(runs, keep=None, older_than=dt.timedelta(days=15), now=NOW)
    ] == ["r2", "r1"]
    assert [r.run_id for r in select(runs, keep=3, older_than=dt.timedelta(days=15), now=NOW)] == [
        "r1"
    ]
    # --keep 1 never removes the newest, and nothing at all from a single run
    assert select(protect(RUNS[:1], {}), keep=None, older_than=dt.timedelta(0), now=NOW) == []


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("30m", dt.timedelta(minutes=30)),
        ("7d", dt.timedelta(days=7)),
        ("2w", dt.timedelta(weeks=2)),
        ("0s", dt.timedelta(0)),
    ],
)
def test_parse_duration(text: str, delta: dt.timedelta) -> None:
    assert parse_duration(text) == delta


@pytest.mark.parametrize("text", ["", "7", "d7", "1.5d", "-1d", "7 days"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)
