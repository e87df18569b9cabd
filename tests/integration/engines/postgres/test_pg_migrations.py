"""Migrations against a real PostgreSQL: order, checksums, failures, timeouts, baseline, dry run."""

from __future__ import annotations

import hashlib
import threading
import time

import psycopg
import pytest
from pg_engine_helpers import PgDb

from convoy.engines.errors import (
    ChecksumMismatch,
    FailedMigrationPresent,
    HistoryNotEmpty,
    MigrationFailed,
    OutOfOrderMigration,
    UnknownVersion,
)

pytestmark = pytest.mark.integration

ORDERED = {
    "V2024.05.01__late.sql": "INSERT INTO applied_order VALUES ('2024.05.01');",
    "V2__second.sql": "INSERT INTO applied_order VALUES ('2');",
    "V1.1__point_one.sql": "INSERT INTO applied_order VALUES ('1.1');",
    "V1__create.sql": "CREATE TABLE applied_order (v text, n serial);",
}


def test_versions_apply_in_numeric_order_and_once(pg: PgDb) -> None:
    pg.write_migrations(ORDERED)
    engine, ctx = pg.engine(), pg.ctx()
    result = engine.migrate(ctx)
    assert [r.version for r in result.applied] == ["1", "1.1", "2", "2024.5.1"]
    assert pg.execute("SELECT v FROM applied_order ORDER BY n") == [
        ("1.1",),
        ("2",),
        ("2024.05.01",),
    ]
    again = engine.migrate(pg.ctx(run_id="run-2"))
    assert again.applied == ()
    assert again.already_applied == ("1", "1.1", "2", "2024.5.1")
    assert pg.scalar("SELECT count(*) FROM applied_order") == 3


def test_history_records_checksum_policy_run_duration(pg: PgDb) -> None:
    d = pg.write_migrations(ORDERED)
    pg.engine().migrate(pg.ctx(run_id="manual__1"))
    rows = pg.execute(
        "SELECT version, description, checksum, policy, run_id, execution_ms >= 0, success,"
        " installed_on IS NOT NULL FROM convoy.schema_history ORDER BY rank"
    )
    assert [r[0] for r in rows] == ["1", "1.1", "2", "2024.5.1"]
    expected = hashlib.sha256((d / "V1__create.sql").read_bytes()).hexdigest()
    assert rows[0][1:] == ("create", expected, "shop", "manual__1", True, True, True)
    history = pg.engine().history(pg.ctx())
    assert [h.version for h in history] == ["1", "1.1", "2", "2024.5.1"]
    assert history[0].to_dict()["checksum"] == expected


def test_edited_migration_is_refused_showing_both_checksums(pg: PgDb) -> None:
    d = pg.write_migrations({"V1__t.sql": "CREATE TABLE t (id int);"})
    engine = pg.engine()
    engine.migrate(pg.ctx())
    old = hashlib.sha256(b"CREATE TABLE t (id int);").hexdigest()
    (d / "V1__t.sql").write_text("CREATE TABLE t (id bigint);")
    (d / "V2__u.sql").write_text("CREATE TABLE u (id int);")
    new = hashlib.sha256(b"CREATE TABLE t (id bigint);").hexdigest()
    with pytest.raises(ChecksumMismatch) as err:
        engine.migrate(pg.ctx(run_id="run-2"))
    assert (err.value.applied, err.value.current, err.value.version) == (old, new, "1")
    assert old in str(err.value)
    assert new in str(err.value)
    assert pg.scalar("SELECT to_regclass('u') IS NULL")  # nothing applied after refusal
    engine.repair(pg.ctx(), "1", accept_checksum=True)
    assert [r.version for r in engine.migrate(pg.ctx(run_id="run-3")).applied] == ["2"]


def test_failed_transactional_migration_is_rolled_back_recorded_and_retryable(pg: PgDb) -> None:
    d = pg.write_migrations(
        {
            "V1__ok.sql": "CREATE TABLE t (id int);",
            "V2__bad.sql": "ALTER TABLE t ADD COLUMN x int;\nSELECT 1/0;",
        }
    )
    engine = pg.engine()
    with pytest.raises(MigrationFailed) as err:
        engine.migrate(pg.ctx())
    assert err.value.version == "2"
    assert err.value.sqlstate == "22012"
    assert "division by zero" in str(err.value)
    # nothing of V2 remains; the failure is in the history
    assert pg.scalar("SELECT count(*) FROM pg_attribute WHERE attrelid = 't'::regclass"
                     " AND attname = 'x'") == 0  # fmt: skip
    assert pg.execute(
        "SELECT version, success, rolled_back FROM convoy.schema_history ORDER BY rank"
    ) == [("1", True, False), ("2", False, True)]
    (d / "V2__bad.sql").write_text("ALTER TABLE t ADD COLUMN x int;")
    assert [r.version for r in engine.migrate(pg.ctx(run_id="run-2")).applied] == ["2"]


def test_failed_no_transaction_migration_blocks_until_repaired(pg: PgDb) -> None:
    d = pg.write_migrations(
        {
            "V1__t.sql": "CREATE TABLE t (id int);",
            "V2__half.sql": (
                "-- convoy:no-transaction\n"
                "CREATE INDEX CONCURRENTLY t_id ON t (id);\n"
                "ALTER TABLE missing ADD COLUMN y int;\n"
            ),
            "V3__later.sql": "CREATE TABLE later (id int);",
        }
    )
    engine = pg.engine()
    with pytest.raises(MigrationFailed):
        engine.migrate(pg.ctx())
    assert pg.scalar("SELECT to_regclass('t_id') IS NOT NULL")  # half-applied
    with pytest.raises(FailedMigrationPresent) as err:
        engine.migrate(pg.ctx(run_id="run-2"))
    assert err.value.version == "2"
    assert "repair('2')" in str(err.value)
    assert pg.scalar("SELECT to_regclass('later') IS NULL")
    # a human finishes the job by hand, fixes the file and repairs
    pg.execute("DROP INDEX t_id")
    (d / "V2__half.sql").write_text(
        "-- convoy:no-transaction\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n"
    )
    assert engine.repair(pg.ctx(), "2")
    assert [r.version for r in engine.migrate(pg.ctx(run_id="run-3")).applied] == ["2", "3"]
    with pytest.raises(UnknownVersion):
        engine.repair(pg.ctx(), "2")


def test_no_transaction_file_runs_create_index_concurrently(pg: PgDb) -> None:
    pg.write_migrations(
        {
            "V1__t.sql": "CREATE TABLE t (id int, v text);"
            " INSERT INTO t SELECT g, 'x' || g FROM generate_series(1, 1000) g;",
            "V2__idx.sql": "-- convoy:no-transaction\n"
            "CREATE INDEX CONCURRENTLY t_v ON t (v);\n"
            "CREATE UNIQUE INDEX CONCURRENTLY t_id ON t (id);\n",
        }
    )
    result = pg.engine().migrate(pg.ctx())
    assert [(r.version, r.transactional) for r in result.applied] == [("1", True), ("2", False)]
    assert pg.execute(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = 't'::regclass ORDER BY 1"
    ) == [("t_id", True), ("t_v", True)]


def test_lock_timeout_applies_to_each_migration(pg: PgDb) -> None:
    pg.execute("CREATE TABLE busy (id int)")
    pg.write_migrations({"V1__alter.sql": "ALTER TABLE busy ADD COLUMN x int;"})
    holder = psycopg.connect(pg.conninfo)
    holder.execute("LOCK TABLE busy IN ACCESS SHARE MODE")  # open transaction keeps it
    try:
        started = time.monotonic()
        with pytest.raises(MigrationFailed) as err:
            pg.engine(lock_timeout_s=0.3).migrate(pg.ctx())
        assert err.value.sqlstate == "55P03"  # lock_not_available
        assert time.monotonic() - started < 5
    finally:
        holder.close()
    assert pg.engine().migrate(pg.ctx(run_id="run-2")).applied[0].version == "1"


def test_statement_timeout_applies_to_each_migration(pg: PgDb) -> None:
    pg.write_migrations({"V1__slow.sql": "SELECT pg_sleep(5);"})
    with pytest.raises(MigrationFailed) as err:
        pg.engine(statement_timeout_s=0.3).migrate(pg.ctx())
    assert err.value.sqlstate == "57014"  # query_canceled
    # the session default is untouched afterwards
    assert pg.scalar("SHOW statement_timeout") == "0"


def test_baseline_existing_database(pg: PgDb) -> None:
    pg.execute("CREATE TABLE legacy (id int); CREATE TABLE legacy2 (id int)")
    pg.write_migrations(
        {
            "V1__legacy.sql": "CREATE TABLE legacy (id int);",
            "V2__legacy2.sql": "CREATE TABLE legacy2 (id int);",
            "V3__new.sql": "ALTER TABLE legacy ADD COLUMN name text;",
        }
    )
    engine = pg.engine()
    engine.baseline(pg.ctx(), "2")
    result = engine.migrate(pg.ctx())
    assert [r.version for r in result.applied] == ["3"]
    assert result.already_applied == ("1", "2")
    with pytest.raises(HistoryNotEmpty):
        engine.baseline(pg.ctx(), "3")


def test_pending_version_below_applied_is_refused(pg: PgDb) -> None:
    d = pg.write_migrations({"V2__b.sql": "CREATE TABLE b (id int);"})
    pg.engine().migrate(pg.ctx())
    (d / "V1__a.sql").write_text("CREATE TABLE a (id int);")
    with pytest.raises(OutOfOrderMigration):
        pg.engine().migrate(pg.ctx(run_id="run-2"))


def test_dry_run_changes_nothing(pg: PgDb) -> None:
    pg.execute("CREATE TABLE orders (id int primary key, total int);"
               " INSERT INTO orders SELECT g, g FROM generate_series(1, 100) g")  # fmt: skip
    pg.write_migrations(
        {
            "V1__col.sql": "ALTER TABLE orders ADD COLUMN status text;",
            "V2__fill.sql": "UPDATE orders SET status = 'open';",
            "V3__idx.sql": "-- convoy:no-transaction\n"
            "CREATE INDEX CONCURRENTLY o_s ON orders (status);",
            "V4__after.sql": "CREATE TABLE after_idx (id int);",
        }
    )
    before = pg.state()
    engine, ctx = pg.engine(), pg.ctx()
    result = engine.migrate(ctx, dry_run=True)
    assert [(r.version, r.status) for r in result.applied] == [
        ("1", "rolled-back"),
        ("2", "rolled-back"),
        ("3", "listed"),
        ("4", "listed"),
    ]
    backup = engine.backup(pg.ctx(pg.datastore(backup="snapshot")), dry_run=True)
    assert backup.tables == ("public.after_idx", "public.orders")
    assert pg.state() == before
    assert pg.scalar("SELECT to_regnamespace('convoy') IS NULL")
    assert pg.scalar("SELECT to_regnamespace('convoy_backup') IS NULL")
    # a dry run also finds errors without changing anything
    (pg.base_dir / "migrations" / "V2__fill.sql").write_text("UPDATE orders SET nope = 1;")
    with pytest.raises(MigrationFailed):
        engine.migrate(ctx, dry_run=True)
    assert pg.state() == before


def test_plan_lists_actions_read_only(pg: PgDb) -> None:
    pg.execute("CREATE TABLE orders (id int primary key, status text)")
    pg.write_migrations({"V1__x.sql": "ALTER TABLE orders ADD COLUMN x int;",
                         "U1__x.sql": "ALTER TABLE orders DROP COLUMN x;"})  # fmt: skip
    ds = pg.datastore(
        backup="snapshot",
        transforms=[{"name": "fill", "table": "public.orders", "key": "id", "set": {"x": "1"}}],
    )
    actions = pg.engine().plan(pg.ctx(ds))
    assert [(a.stage, a.target) for a in actions] == [
        ("backup", "public.orders"),
        ("migrate", "V1__x"),
        ("transform", "public.orders"),
    ]
    assert actions[1].detail.endswith(", undo file")


def test_two_concurrent_runs_second_waits_then_fails_naming_holder(pg: PgDb) -> None:
    pg.write_migrations({"V1__slow.sql": "SELECT pg_sleep(3); CREATE TABLE t (id int);"})
    errors: list[BaseException] = []

    def first() -> None:
        try:
            pg.engine().migrate(pg.ctx(run_id="first", log=lambda m: None))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    deadline = time.monotonic() + 5
    while not pg.scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    from convoy.engines.errors import LockTimeout

    logs: list[str] = []
    started = time.monotonic()
    with pytest.raises(LockTimeout) as err:
        pg.engine(advisory_lock_timeout_s=1, advisory_lock_poll_s=0.1).migrate(
            pg.ctx(run_id="second", log=logs.append)
        )
    waited = time.monotonic() - started
    assert 1 <= waited < 3
    holder = err.value.holders[0]
    assert holder.application_name == "convoy:shop/orders:migrate"
    assert f"pid {holder.pid}" in str(err.value)
    assert any("waiting up to" in line and "convoy:shop/orders:migrate" in line for line in logs)
    # a patient second run waits for the first and then finds nothing to do
    patient = pg.engine(advisory_lock_timeout_s=20, advisory_lock_poll_s=0.1)
    assert patient.migrate(pg.ctx(run_id="third")).applied == ()
    thread.join()
    assert errors == []
    assert pg.scalar("SELECT count(*) FROM convoy.schema_history") == 1
