"""Backup, migrate and revert publish their progress through ``RunContext.progress``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pg_engine_helpers import PgDb

from convoy.engines.base import RunContext
from convoy.observe.progress import SINK_INTERVAL_ENV

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE orders (id serial PRIMARY KEY, total int NOT NULL);
CREATE TABLE order_items (id int PRIMARY KEY, order_id int NOT NULL REFERENCES orders (id));
INSERT INTO orders (total) SELECT g FROM generate_series(1, 200) g;
INSERT INTO order_items SELECT g, 1 + g % 200 FROM generate_series(1, 400) g;
CREATE TABLE untouched (id int);
"""
MIGRATIONS = {
    "V1__status.sql": "ALTER TABLE orders ADD COLUMN status text NOT NULL DEFAULT 'open';\n",
    "V2__data.sql": "UPDATE orders SET total = total * 2;\n",
    "V3__audit.sql": "CREATE TABLE audit (id int PRIMARY KEY, order_id int REFERENCES orders);\n",
}
UNDO = {
    "U1__status.sql": "ALTER TABLE orders DROP COLUMN status;\n",
    "U2__data.sql": "UPDATE orders SET total = total / 2;\n",
}
#: orders and order_items (it references orders) exist; audit is created by V3.
BACKED_UP = 3


@pytest.fixture(autouse=True)
def every_update(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SINK_INTERVAL_ENV, "0")


def _reporting(pg: PgDb, files: dict[str, str], **datastore: Any) -> tuple[RunContext, list[Any]]:
    pg.execute(SCHEMA)
    pg.write_migrations(files)
    seen: list[Mapping[str, Any]] = []
    return dataclasses.replace(pg.ctx(pg.datastore(**datastore)), progress=seen.append), seen


def _counts(seen: list[Mapping[str, Any]]) -> list[tuple[int, int | None]]:
    return [(v["done"], v["total"]) for v in seen]


def _finished(seen: list[Mapping[str, Any]], label: str, unit: str) -> None:
    assert seen, "no progress published"
    assert {v["label"] for v in seen} == {label}
    assert {v["unit"] for v in seen} == {unit}
    done = [v["done"] for v in seen]
    assert done == sorted(done)
    assert seen[-1]["done"] == seen[-1]["total"]
    assert seen[-1]["eta_seconds"] == 0.0


def test_migrate_counts_the_pending_migrations(pg: PgDb) -> None:
    ctx, seen = _reporting(pg, MIGRATIONS)
    result = pg.engine().migrate(ctx)
    assert len(result.applied) == 3
    _finished(seen, "orders/migrate", "migrations")
    assert _counts(seen) == [(0, 3), (1, 3), (2, 3), (3, 3), (3, 3)]


def test_migrate_with_nothing_pending_still_finishes(pg: PgDb) -> None:
    ctx, _ = _reporting(pg, MIGRATIONS)
    pg.engine().migrate(ctx)
    seen: list[Mapping[str, Any]] = []
    pg.engine().migrate(dataclasses.replace(ctx, run_id="run-2", progress=seen.append))
    assert _counts(seen)[-1] == (0, 0)


def test_snapshot_backup_counts_tables(pg: PgDb) -> None:
    ctx, seen = _reporting(pg, MIGRATIONS, backup="snapshot")
    result = pg.engine().backup(ctx)
    assert len(result.tables) == BACKED_UP
    _finished(seen, "orders/backup", "tables")
    assert _counts(seen) == [(0, 3), (1, 3), (2, 3), (3, 3), (3, 3)]


def test_pg_dump_backup_counts_the_tables_it_dumped(pg: PgDb, tmp_path: Path) -> None:
    ctx, seen = _reporting(pg, MIGRATIONS, backup="pg_dump", snapshotTables=["untouched"])
    result = pg.engine(dump_dir=str(tmp_path / "dumps")).backup(ctx)
    assert len(result.tables) == BACKED_UP + 1
    _finished(seen, "orders/backup", "tables")
    # the absent table at once, then a dumped table each time pg_dump starts the next one
    assert _counts(seen) == [(1, 4), (2, 4), (3, 4), (4, 4), (4, 4)]


def test_revert_from_the_snapshot_counts_restored_tables(pg: PgDb) -> None:
    # V3, the newest, has no undo file: the older ones are not undone on top of the restore
    ctx, seen = _reporting(pg, {**MIGRATIONS, **UNDO}, backup="snapshot")
    engine = pg.engine()
    engine.backup(ctx)
    engine.migrate(ctx)
    seen.clear()
    result = engine.revert(ctx)
    assert result.undone == ()
    assert result.restored_from_backup == ("3", "2", "1")
    _finished(seen, "orders/revert", "steps")
    assert _counts(seen) == [(0, 3), (1, 3), (2, 3), (3, 3), (3, 3)]


def test_revert_with_undo_files_only(pg: PgDb) -> None:
    files = {**MIGRATIONS, **UNDO, "U3__audit.sql": "DROP TABLE audit;\n"}
    ctx, seen = _reporting(pg, files)
    engine = pg.engine()
    engine.migrate(ctx)
    seen.clear()
    assert engine.revert(ctx).undone == ("3", "2", "1")
    _finished(seen, "orders/revert", "steps")
    assert _counts(seen) == [(0, 3), (1, 3), (2, 3), (3, 3), (3, 3)]


def test_revert_from_a_pg_dump_counts_restored_tables(pg: PgDb, tmp_path: Path) -> None:
    ctx, seen = _reporting(pg, MIGRATIONS, backup="pg_dump")
    engine = pg.engine(dump_dir=str(tmp_path / "dumps"))
    engine.backup(ctx)
    engine.migrate(ctx)
    seen.clear()
    assert engine.revert(ctx).restored_from_backup == ("3", "2", "1")
    _finished(seen, "orders/revert", "steps")
    # audit (created by the run) is dropped first, the two others come back with pg_restore
    assert _counts(seen) == [(0, 3), (1, 3), (3, 3), (3, 3)]


def test_a_failing_pg_dump_reports_its_error_not_its_progress_lines(tmp_path: Path) -> None:
    from convoy.engines.errors import BackupFailed
    from convoy.engines.postgres import PostgresConfig
    from convoy.engines.postgres.backup import _run_pg_dump, find_pg_tool
    from convoy.observe.progress import Progress

    seen: list[Mapping[str, Any]] = []
    progress = Progress(1, "orders/backup", lambda _: None, unit="tables", sink=seen.append)
    cmd = [
        find_pg_tool(PostgresConfig(), "pg_dump"),
        "--file",
        str(tmp_path / "x.dump"),
        "--dbname",
        f"host={tmp_path} port=1 dbname=nothing connect_timeout=1",
    ]
    with pytest.raises(BackupFailed, match=r"pg_dump failed \(1\): pg_dump: error: ") as failure:
        _run_pg_dump(cmd, {"PATH": "/usr/bin:/bin"}, progress)
    assert "dumping contents" not in str(failure.value)
    assert seen == []
