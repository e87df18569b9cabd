"""Backup and revert: after apply + revert, schema and data are identical to before."""

from __future__ import annotations

from pathlib import Path

import pytest
from pg_engine_helpers import PgDb

from convoy.engines.errors import NoBackup

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE orders (
    id serial PRIMARY KEY,
    total int NOT NULL,
    note text DEFAULT 'n',
    CONSTRAINT total_positive CHECK (total >= 0)
);
CREATE INDEX orders_total ON orders (total);
CREATE TABLE order_items (
    id int PRIMARY KEY,
    order_id int NOT NULL REFERENCES orders (id),
    sku text
);
INSERT INTO orders (total, note) SELECT g, 'note ' || g FROM generate_series(1, 500) g;
INSERT INTO order_items SELECT g, 1 + g % 500, 'sku-' || g FROM generate_series(1, 1000) g;
CREATE TABLE untouched (id int);
INSERT INTO untouched VALUES (1), (2);
"""

MIGRATIONS = {
    "V1__status.sql": (
        "ALTER TABLE orders ADD COLUMN status text NOT NULL DEFAULT 'open';\n"
        "CREATE INDEX orders_status ON orders (status);\n"
    ),
    "V2__data.sql": (
        "UPDATE orders SET total = total * 2;\nINSERT INTO orders (total) VALUES (5), (6);\n"
    ),
    "V3__shape.sql": (
        "CREATE TABLE audit (id int PRIMARY KEY, order_id int REFERENCES orders (id));\n"
        "ALTER TABLE orders ALTER COLUMN note TYPE varchar(50);\n"
        "ALTER TABLE orders ALTER COLUMN note SET DEFAULT 'changed';\n"
        "ALTER TABLE orders DROP CONSTRAINT total_positive;\n"
        "ALTER TABLE orders ADD CONSTRAINT total_small CHECK (total < 100000);\n"
        "DELETE FROM order_items WHERE id % 2 = 0;\n"
        "ALTER TABLE order_items ALTER COLUMN sku SET NOT NULL;\n"
    ),
}

UNDO = {
    "U1__status.sql": "DROP INDEX orders_status;\nALTER TABLE orders DROP COLUMN status;\n",
    "U2__data.sql": "DELETE FROM orders WHERE id > 500;\nUPDATE orders SET total = total / 2;\n"
    "SELECT setval('orders_id_seq', 500);\n",
    "U3__shape.sql": (
        "DROP TABLE audit;\n"
        "ALTER TABLE orders ALTER COLUMN note TYPE text;\n"
        "ALTER TABLE orders ALTER COLUMN note SET DEFAULT 'n';\n"
        "ALTER TABLE orders DROP CONSTRAINT total_small;\n"
        "ALTER TABLE orders ADD CONSTRAINT total_positive CHECK (total >= 0);\n"
        "INSERT INTO order_items SELECT g, 1 + g % 500, 'sku-' || g"
        " FROM generate_series(2, 1000, 2) g;\n"
        "ALTER TABLE order_items ALTER COLUMN sku DROP NOT NULL;\n"
    ),
}

TRANSFORM = {
    "name": "fill-status",
    "table": "public.orders",
    "key": "id",
    "batchSize": 64,
    "set": {"status": "CASE WHEN total % 4 = 0 THEN 'even' ELSE 'odd' END", "note": "'t'"},
}


def _setup(pg: PgDb, files: dict[str, str]) -> str:
    pg.execute(SCHEMA)
    pg.write_migrations(files)
    return pg.state()


def _seq(pg: PgDb) -> tuple[int, bool]:
    row = pg.execute("SELECT last_value, is_called FROM orders_id_seq")[0]
    return int(row[0]), bool(row[1])


def test_undo_files_newest_first_restore_identical_state(pg: PgDb) -> None:
    before = _setup(pg, {**MIGRATIONS, **UNDO})
    engine, ctx = pg.engine(), pg.ctx()
    engine.migrate(ctx)
    assert pg.state() != before
    result = engine.revert(ctx)
    assert result.undone == ("3", "2", "1")
    assert result.restored_from_backup == ()
    assert pg.state() == before
    kinds = pg.execute(
        "SELECT kind, version, reverted_on IS NOT NULL FROM convoy.schema_history ORDER BY rank"
    )
    assert kinds == [
        ("V", "1", True),
        ("V", "2", True),
        ("V", "3", True),
        ("U", "3", False),
        ("U", "2", False),
        ("U", "1", False),
    ]
    # reverted versions are pending again; a second revert has nothing left to do
    assert engine.revert(ctx).undone == ()
    assert [r.version for r in engine.migrate(pg.ctx(run_id="run-2")).applied] == ["1", "2", "3"]


def test_snapshot_restores_schema_data_and_sequences(pg: PgDb) -> None:
    before = _setup(pg, MIGRATIONS)
    seq_before = _seq(pg)
    ds = pg.datastore(backup="snapshot", snapshotTables=["untouched"], transforms=[TRANSFORM])
    engine, ctx = pg.engine(), pg.ctx(ds)
    backup = engine.backup(ctx)
    assert set(backup.tables) == {
        "public.orders",
        "public.order_items",
        "public.untouched",
        "public.audit (absent)",
    }
    assert pg.scalar("SELECT count(*) FROM convoy_backup.manifest") == 4
    # a retried backup task keeps the first snapshot
    assert engine.backup(ctx).skipped_existing
    engine.migrate(ctx)
    engine.transform(ctx, "fill-status")
    assert pg.scalar("SELECT count(*) FROM orders WHERE status = 'even'") > 0
    assert _seq(pg) != seq_before

    dry = engine.revert(ctx, dry_run=True)
    assert dry.restored_from_backup == ("3", "2", "1")
    assert pg.state() != before

    result = engine.revert(ctx)
    assert result.undone == ()
    assert result.restored_from_backup == ("3", "2", "1")
    assert set(result.restored_tables) == {
        "public.orders",
        "public.order_items",
        "public.untouched",
    }
    assert result.dropped_tables == ("public.audit",)
    assert pg.state() == before
    assert _seq(pg) == seq_before
    assert pg.scalar("SELECT count(*) FROM convoy.transform_checkpoints") == 0
    assert pg.scalar(
        "SELECT bool_and(reverted_on IS NOT NULL) FROM convoy.schema_history WHERE kind = 'V'"
    )
    assert engine.revert(ctx).restored_tables == ()


def test_undo_where_present_then_snapshot_for_the_rest(pg: PgDb) -> None:
    before = _setup(pg, {**MIGRATIONS, "U3__shape.sql": UNDO["U3__shape.sql"]})
    ds = pg.datastore(backup="snapshot")
    engine, ctx = pg.engine(), pg.ctx(ds)
    engine.backup(ctx)
    engine.migrate(ctx)
    result = engine.revert(ctx)
    assert result.undone == ("3",)
    assert result.restored_from_backup == ("2", "1")
    assert pg.state() == before


def test_pg_dump_backup_and_restore(pg: PgDb, tmp_path: Path) -> None:
    before = _setup(pg, MIGRATIONS)
    ds = pg.datastore(backup="pg_dump", snapshotTables=["order_items"])
    engine = pg.engine(dump_dir=str(tmp_path / "dumps"))
    ctx = pg.ctx(ds)
    backup = engine.backup(ctx)
    assert backup.location is not None
    assert Path(backup.location).stat().st_size > 0
    assert Path(backup.location).read_bytes().startswith(b"PGDMP")  # custom format
    engine.migrate(ctx)
    result = engine.revert(ctx)
    assert result.restored_from_backup == ("3", "2", "1")
    assert result.dropped_tables == ("public.audit",)
    assert pg.state() == before


def test_revert_without_undo_or_backup_is_refused(pg: PgDb) -> None:
    _setup(pg, MIGRATIONS)
    engine, ctx = pg.engine(), pg.ctx()
    engine.migrate(ctx)
    with pytest.raises(NoBackup) as err:
        engine.revert(ctx)
    assert err.value.versions == ("3", "2", "1")


def test_failed_half_applied_migration_is_restored_from_snapshot(pg: PgDb) -> None:
    before = _setup(
        pg,
        {
            "V1__half.sql": "-- convoy:no-transaction\n"
            "UPDATE orders SET total = 0;\n"
            "ALTER TABLE nowhere ADD COLUMN x int;\n"
        },
    )
    ds = pg.datastore(backup="snapshot")
    engine, ctx = pg.engine(), pg.ctx(ds)
    engine.backup(ctx)
    with pytest.raises(Exception, match="nowhere"):
        engine.migrate(ctx)
    assert pg.state() != before
    engine.revert(ctx)
    assert pg.state() == before
    # the failed attempt no longer blocks once reverted
    assert pg.execute("SELECT success, repaired_on IS NOT NULL FROM convoy.schema_history") == [
        (False, True)
    ]
