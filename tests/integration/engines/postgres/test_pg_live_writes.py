"""Revert under live traffic: convoy's changes are undone, the application's kept.

An application writer commits inserts (in the old shape: ``status`` left
empty), updates of a column the transform sets and of one it does not, and
deletes, on its own connection, while the backup, the migrations, the
transform and the revert run. Every committed write is recorded; afterwards
the table must equal the pre-run rows with exactly those writes applied.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from pg_engine_helpers import PgDb

from convoy.engines.errors import RevertIncomplete

pytestmark = pytest.mark.integration

ROWS = 3000
SCHEMA = f"""
CREATE TABLE orders (id bigserial PRIMARY KEY, amount int NOT NULL, status text);
INSERT INTO orders (amount) SELECT g FROM generate_series(1, {ROWS}) g;
"""
V1 = "CREATE INDEX orders_amount ON orders (amount);\n"
U1 = "DROP INDEX orders_amount;\n"
V2_NO_UNDO = "ALTER TABLE orders ADD COLUMN note text;\n"
TRANSFORM = {
    "name": "fill-status",
    "table": "public.orders",
    "key": "id",
    "batchSize": 100,
    "where": "status IS NULL",
    "set": {"status": "CASE WHEN amount % 2 = 0 THEN 'open' ELSE 'shipped' END"},
}


@dataclass
class Writer:
    """The application: commits random writes until stopped, recording each one."""

    conninfo: str
    seed: int = 7
    log: list[tuple[str, int, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: int = 0

    def run(self) -> None:
        rnd = random.Random(self.seed)
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '2s'")
            deadline = time.monotonic() + 60
            while not self.stop.is_set() and time.monotonic() < deadline:
                op = rnd.choice(["insert", "insert", "amount", "status", "delete"])
                target = rnd.randint(1, ROWS)
                try:
                    if op == "insert":
                        amount = rnd.randint(1, 10_000)
                        row = conn.execute(
                            "INSERT INTO orders (amount) VALUES (%s) RETURNING id", [amount]
                        ).fetchone()
                        assert row is not None
                        self.log.append(("insert", int(row[0]), amount))
                    elif op == "amount":
                        amount = rnd.randint(1, 10_000)
                        cur = conn.execute(
                            "UPDATE orders SET amount = %s WHERE id = %s", [amount, target]
                        )
                        if cur.rowcount:
                            self.log.append(("amount", target, amount))
                    elif op == "status":
                        cur = conn.execute(
                            "UPDATE orders SET status = 'cancelled' WHERE id = %s", [target]
                        )
                        if cur.rowcount:
                            self.log.append(("status", target, "cancelled"))
                    else:
                        cur = conn.execute("DELETE FROM orders WHERE id = %s", [target])
                        if cur.rowcount:
                            self.log.append(("delete", target, None))
                except psycopg.errors.LockNotAvailable:
                    self.errors += 1
                time.sleep(0.002)

    def __enter__(self) -> Writer:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def expected(self) -> dict[int, tuple[int, str | None]]:
        """The pre-run rows with every committed application write applied, nothing else."""
        rows: dict[int, tuple[int, str | None]] = {i: (i, None) for i in range(1, ROWS + 1)}
        for op, key, value in self.log:
            if op == "insert":
                rows[key] = (value, None)
            elif op == "amount":
                rows[key] = (value, rows[key][1])
            elif op == "status":
                rows[key] = (rows[key][0], value)
            else:
                del rows[key]
        return rows

    def cancelled(self) -> set[int]:
        return {key for op, key, _ in self.log if op == "status"}


def _rows(pg: PgDb) -> dict[int, tuple[int, str | None]]:
    return {r[0]: (r[1], r[2]) for r in pg.execute("SELECT id, amount, status FROM orders")}


def _writes_while(writer: Writer, minimum: int) -> None:
    """Let the application write at least ``minimum`` more times."""
    target = len(writer.log) + minimum
    deadline = time.monotonic() + 20
    while len(writer.log) < target and time.monotonic() < deadline:
        time.sleep(0.01)


def test_revert_keeps_every_application_write(pg: PgDb) -> None:
    pg.execute(SCHEMA)
    pg.write_migrations({"V1__idx.sql": V1, "U1__idx.sql": U1})
    ds = pg.datastore(backup="snapshot", transforms=[TRANSFORM])
    engine, ctx = pg.engine(), pg.ctx(ds)
    with Writer(pg.conninfo) as writer:
        _writes_while(writer, 20)
        engine.backup(ctx)
        engine.migrate(ctx)
        engine.transform(ctx, "fill-status")
        _writes_while(writer, 50)
        # rows the application wrote in the old shape meanwhile were transformed too
        assert pg.scalar("SELECT count(*) FROM orders WHERE status IS NULL") == 0
        result = engine.revert(ctx)
        _writes_while(writer, 20)
    assert writer.log, "the writer committed nothing"
    assert _rows(pg) == writer.expected()
    assert pg.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_amount'") == 0
    assert result.undone == ("1",)
    assert result.restored_from_backup == ()
    assert result.rows_restored > ROWS / 2
    # a conflict is a row the application set after convoy did
    conflict_keys = {int(c.rsplit(":", 1)[1]) for c in result.conflicts}
    assert conflict_keys <= writer.cancelled()
    assert result.rows_conflicting == len(conflict_keys)
    deleted = {k for op, k, _ in writer.log if op == "delete"}
    assert result.rows_gone <= len(deleted)
    # no trigger is left behind, and a second revert changes nothing
    assert pg.scalar("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'convoy%'") == 0
    state = _rows(pg)
    again = engine.revert(ctx)
    assert _rows(pg) == state
    assert again.rows_restored == result.rows_restored


def test_rows_inserted_during_the_run_are_transformed_and_reverted(pg: PgDb) -> None:
    pg.execute(SCHEMA)
    ds = pg.datastore(transforms=[TRANSFORM], migrations=None)
    engine, ctx = pg.engine(), pg.ctx(ds)
    engine.transform(ctx, "fill-status")
    pg.execute("INSERT INTO orders (id, amount) VALUES (100001, 4), (100002, 5)")
    pg.execute("UPDATE orders SET status = NULL WHERE id = 10")  # an old client's update
    assert pg.execute("SELECT id, status FROM orders WHERE id IN (10, 100001, 100002)") == [
        (10, "open"),
        (100001, "open"),
        (100002, "shipped"),
    ]
    pg.execute("UPDATE orders SET status = 'cancelled' WHERE id = 11")  # after convoy
    result = engine.revert(ctx)
    assert pg.scalar("SELECT count(*) FROM orders WHERE status IS NOT NULL") == 1
    assert pg.scalar("SELECT status FROM orders WHERE id = 11") == "cancelled"
    assert result.rows_restored == ROWS + 2 - 1
    assert result.rows_conflicting == 1
    assert result.conflicts == ("public.orders:11",)


def test_completed_run_leaves_no_trigger_and_can_still_be_reverted(pg: PgDb) -> None:
    pg.execute(SCHEMA)
    ds = pg.datastore(transforms=[TRANSFORM], migrations=None, backup="snapshot")
    engine, ctx = pg.engine(), pg.ctx(ds)
    engine.backup(ctx)
    engine.transform(ctx, "fill-status")
    assert (
        pg.scalar("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'convoy%'") == 4
    )  # in flight: INSERT and UPDATE; capture: rows and TRUNCATE
    removed = engine.complete(ctx)
    assert len(removed) == 2
    assert pg.scalar("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'convoy%'") == 0
    assert engine.complete(ctx) == []  # idempotent
    pg.execute("INSERT INTO orders (id, amount) VALUES (100001, 4)")  # not transformed now
    result = engine.revert(ctx)
    assert result.rows_restored == ROWS
    assert pg.scalar("SELECT count(*) FROM orders WHERE status IS NOT NULL") == 0


def test_restore_that_would_discard_application_writes_is_refused(pg: PgDb) -> None:
    pg.execute(SCHEMA)
    pg.write_migrations({"V1__idx.sql": V1, "U1__idx.sql": U1, "V2__note.sql": V2_NO_UNDO})
    ds = pg.datastore(backup="snapshot", transforms=[TRANSFORM])
    engine, ctx = pg.engine(), pg.ctx(ds)
    with Writer(pg.conninfo, seed=11) as writer:
        engine.backup(ctx)
        engine.migrate(ctx)
        engine.transform(ctx, "fill-status")
        _writes_while(writer, 30)
        with pytest.raises(RevertIncomplete) as err:
            engine.revert(ctx)
    result = err.value.result
    assert writer.log
    # nothing the application wrote is lost; convoy's transform is undone
    assert _rows(pg) == writer.expected()
    assert result.rows_restored > 0
    assert result.restored_tables == ()
    [line] = result.refused
    assert "public.orders not restored: the application wrote" in line
    assert "needed for 2, 1" in line
    # V2's column stays (not restored) and says so; V1 came before V2 and waits too
    assert (
        pg.scalar("SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'") == 1
    )


def test_restore_is_done_when_nobody_wrote(pg: PgDb) -> None:
    pg.execute(SCHEMA)
    before = pg.state()
    pg.write_migrations({"V1__note.sql": V2_NO_UNDO})
    ds = pg.datastore(backup="snapshot", transforms=[TRANSFORM])
    engine, ctx = pg.engine(), pg.ctx(ds)
    engine.backup(ctx)
    engine.migrate(ctx)
    engine.transform(ctx, "fill-status")
    result = engine.revert(ctx)
    assert result.restored_from_backup == ("1",)
    assert result.refused == ()
    assert pg.state() == before


def test_writes_after_the_snapshot_are_captured_not_those_before(pg: PgDb) -> None:
    from convoy.engines.postgres import audit
    from convoy.engines.postgres.backup import manifest
    from convoy.engines.postgres.sql import TableName

    pg.execute(SCHEMA)
    ds = pg.datastore(backup="snapshot", migrations=None, snapshotTables=["orders"])
    engine, ctx = pg.engine(), pg.ctx(ds)
    pg.execute("INSERT INTO orders (amount) VALUES (1)")
    engine.backup(ctx)
    pg.execute("INSERT INTO orders (amount) VALUES (2)")
    pg.execute("UPDATE orders SET amount = 3 WHERE id = 1")
    with psycopg.connect(pg.conninfo, autocommit=True) as conn:
        [row] = manifest(conn, engine.config, ctx)
        assert row.snapshot is not None
        n = audit.writes_after(
            conn, engine.config, ctx, TableName("public", "orders"), row.snapshot
        )
    assert n == 2


def test_table_created_by_the_run_is_not_dropped_over_application_rows(pg: PgDb) -> None:
    pg.execute(SCHEMA)
    pg.write_migrations({"V1__notes.sql": "CREATE TABLE notes (id int PRIMARY KEY, body text);\n"})
    ds = pg.datastore(backup="snapshot")
    engine, ctx = pg.engine(), pg.ctx(ds)
    engine.backup(ctx)
    engine.migrate(ctx)
    pg.execute("INSERT INTO notes VALUES (1, 'written by the new application')")
    with pytest.raises(RevertIncomplete) as err:
        engine.revert(ctx)
    [line] = err.value.refused
    assert "public.notes not restored: the application wrote 1 rows to it" in line
    assert pg.execute("SELECT body FROM notes") == [("written by the new application",)]


def test_table_created_by_the_run_is_dropped_when_the_application_left_it_alone(
    pg: PgDb,
) -> None:
    pg.execute(SCHEMA)
    before = pg.state()
    pg.write_migrations(
        {
            "V1__notes.sql": "CREATE TABLE notes (id int PRIMARY KEY);\n"
            "INSERT INTO notes VALUES (1);\n"
        }
    )
    ds = pg.datastore(backup="snapshot")
    engine, ctx = pg.engine(), pg.ctx(ds)
    engine.backup(ctx)
    engine.migrate(ctx)
    result = engine.revert(ctx)
    assert result.dropped_tables == ("public.notes",)
    assert pg.state() == before


def test_array_and_domain_columns_round_trip_through_the_packed_before_images(pg: PgDb) -> None:
    # array-valued columns are packed as text (array_agg cannot stack ragged or
    # NULL arrays); domains, typmods and NULLs must come back exactly
    pg.execute(
        "CREATE DOMAIN money2 AS numeric(10, 2) CHECK (VALUE >= 0);"
        "CREATE TABLE items (id text PRIMARY KEY, tags text[], price money2, note varchar(8));"
        "INSERT INTO items VALUES ('a', '{x,y}', 1.50, 'n1'), ('b', NULL, NULL, NULL),"
        " ('c', '{{1,2},{3,4}}', 2, 'n3'), ('d', '{}', 0, '')"
    )
    before = pg.execute("SELECT id, tags::text, price::text, note FROM items ORDER BY id")
    transform = {
        "name": "retag",
        "table": "public.items",
        "key": "id",
        "batchSize": 3,
        "where": "true",
        "set": {"tags": "ARRAY['new']", "price": "coalesce(price, 0) + 1", "note": "'z'"},
    }
    ds = pg.datastore(transforms=[transform], migrations=None)
    engine, ctx = pg.engine(), pg.ctx(ds)
    engine.transform(ctx, "retag")
    # one packed undo row per batch: 4 rows in batches of 3
    undo_tables = pg.execute(
        "SELECT undo_table FROM convoy_backup.undo_log WHERE transform = 'retag'"
    )
    assert pg.scalar(f'SELECT count(*) FROM convoy_backup."{undo_tables[0][0]}"') == 2
    pg.execute("INSERT INTO items VALUES ('e', '{old}', 3, 'n5')")  # transformed by the trigger
    assert pg.scalar("SELECT tags::text FROM items WHERE id = 'e'") == "{new}"
    result = engine.revert(ctx)
    assert result.rows_restored == 5
    after = pg.execute("SELECT id, tags::text, price::text, note FROM items ORDER BY id")
    assert after == [*before, ("e", "{old}", "3.00", "n5")]


def test_a_revert_killed_after_unpacking_resumes(pg: PgDb) -> None:
    from convoy.engines.postgres import undo, undo_revert

    pg.execute(SCHEMA)
    ds = pg.datastore(transforms=[TRANSFORM], migrations=None)
    engine, ctx = pg.engine(), pg.ctx(ds)
    engine.transform(ctx, "fill-status")
    cfg = engine.config
    with psycopg.connect(pg.conninfo, autocommit=True) as conn:
        (t,) = undo.tables(conn, cfg, ctx)
        undo_revert.unpack(conn, cfg, t)
        undo_revert.unpack(conn, cfg, t)  # idempotent: nothing unpacked twice
        flat = pg.scalar(f'SELECT count(*) FROM convoy_backup."{t.flat_table}"')
        assert flat == ROWS
    result = engine.revert(ctx)
    assert result.rows_restored == ROWS
    assert pg.scalar("SELECT count(*) FROM orders WHERE status IS NOT NULL") == 0


def test_a_transform_whose_column_is_gone_is_refused_and_nothing_changes(pg: PgDb) -> None:
    pg.execute(SCHEMA)
    pg.write_migrations({"V1__idx.sql": V1, "U1__idx.sql": U1})
    ds = pg.datastore(transforms=[TRANSFORM])
    engine, ctx = pg.engine(), pg.ctx(ds)
    engine.migrate(ctx)
    engine.transform(ctx, "fill-status")
    pg.execute("ALTER TABLE orders DROP COLUMN status")  # by hand, before the rollback
    rows = pg.execute("SELECT * FROM orders ORDER BY id")
    with pytest.raises(RevertIncomplete) as err:
        engine.revert(ctx)
    [line] = err.value.refused
    assert engine.revert(ctx, dry_run=True).refused == (line,)
    assert "public.orders not set back to its before-images (fill-status)" in line
    assert "column(s) status no longer exist" in line
    assert "run the rollback again" in line
    assert err.value.result.undone == ()
    assert err.value.result.rows_restored == 0
    # nothing changed: the rows, the undo file not run, the before-images still pending
    assert pg.execute("SELECT * FROM orders ORDER BY id") == rows
    assert pg.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_amount'") == 1
    assert pg.scalar("SELECT count(*) FROM convoy_backup.undo_log WHERE reverted_at IS NULL") == 1
    # the column back with the values the run left: the rollback finishes
    pg.execute(
        "ALTER TABLE orders ADD COLUMN status text;"
        "UPDATE orders SET status = CASE WHEN amount % 2 = 0 THEN 'open' ELSE 'shipped' END"
    )
    result = engine.revert(ctx)
    assert (result.rows_restored, result.undone) == (ROWS, ("1",))
    assert pg.scalar("SELECT count(*) FROM orders WHERE status IS NOT NULL") == 0
    assert pg.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_amount'") == 0


def test_servers_before_18_read_the_before_images_in_a_locking_cte(
    pg: PgDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convoy.engines.postgres import transform

    monkeypatch.setattr(transform, "RETURNING_OLD_SINCE", 10**9)
    pg.execute(SCHEMA)
    ds = pg.datastore(transforms=[TRANSFORM], migrations=None)
    engine, ctx = pg.engine(), pg.ctx(ds)
    engine.transform(ctx, "fill-status")
    assert pg.scalar("SELECT count(*) FROM orders WHERE status IS NULL") == 0
    pg.execute("UPDATE orders SET status = 'cancelled' WHERE id = 11")
    result = engine.revert(ctx)
    assert (result.rows_restored, result.conflicts) == (ROWS - 1, ("public.orders:11",))
    assert pg.scalar("SELECT count(*) FROM orders WHERE status IS NOT NULL") == 1


def test_an_application_role_without_access_to_convoys_schemas_keeps_writing(pg: PgDb) -> None:
    # the application connects with its own role: the in-flight and capture
    # triggers it fires must not need privileges on convoy's backup schema
    pg.execute(SCHEMA)
    pg.execute(
        "CREATE ROLE app_writer LOGIN;"
        "GRANT USAGE ON SCHEMA public TO app_writer;"
        "GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO app_writer;"
        "GRANT USAGE ON SEQUENCE orders_id_seq TO app_writer"
    )
    app = psycopg.conninfo.make_conninfo(pg.conninfo, user="app_writer")
    ds = pg.datastore(backup="snapshot", transforms=[TRANSFORM], migrations=None)
    engine, ctx = pg.engine(), pg.ctx(ds)
    engine.backup(ctx)
    engine.transform(ctx, "fill-status")
    with psycopg.connect(app, autocommit=True) as conn:
        row = conn.execute("INSERT INTO orders (amount) VALUES (4) RETURNING id, status").fetchone()
        assert row is not None
        assert row[1] == "open"  # transformed in flight
        conn.execute("UPDATE orders SET status = 'cancelled' WHERE id = 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM convoy_backup.undo_log")
    assert pg.scalar("SELECT count(*) FROM orders WHERE status IS NULL") == 0
    result = engine.revert(ctx)
    assert result.conflicts == ("public.orders:1",)
    assert pg.scalar("SELECT status FROM orders WHERE id = 1") == "cancelled"
    assert pg.scalar("SELECT status FROM orders WHERE id = %s", [row[0]]) is None
