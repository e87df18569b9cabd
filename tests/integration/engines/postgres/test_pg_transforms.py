"""Transforms on a real PostgreSQL: batches, checkpoints, intervals, partitions, throttle."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from typing import Any

import psycopg
import pytest
from pg_engine_helpers import PgDb

from convoy.engines.base import Partition
from convoy.engines.errors import MissingDataInterval, UnknownTransform, UnsafeIdentifier
from convoy.policy.models import PostgresDatastore, SqlTransform

pytestmark = pytest.mark.integration

UTC = dt.UTC


def _orders(pg: PgDb, n: int = 1000) -> None:
    pg.execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, shipped_at timestamptz, status text,"
        " created_at timestamptz NOT NULL, touched int NOT NULL DEFAULT 0, sku text);"
        f" INSERT INTO orders SELECT g, CASE WHEN g % 3 = 0 THEN now() END, NULL,"
        f" '2026-01-01'::timestamptz + (g % 3) * interval '1 day', 0, 'sku-' || g"
        f" FROM generate_series(1, {n}) g"
    )


def _ds(pg: PgDb, **transform: Any) -> PostgresDatastore:
    t: dict[str, Any] = {
        "name": "backfill-status",
        "table": "public.orders",
        "key": "id",
        "batchSize": 100,
        "where": "status IS NULL",
        "set": {
            "status": "CASE WHEN shipped_at IS NULL THEN 'open' ELSE 'shipped' END",
            "touched": "touched + 1",
        },
    }
    t.update(transform)
    return pg.datastore(migrations=None, transforms=[t])


def test_transform_in_batches_with_checkpoint_and_progress(pg: PgDb) -> None:
    _orders(pg, 1050)
    ctx = pg.ctx(_ds(pg))
    result = pg.engine().transform(ctx, "backfill-status")
    assert result.rows_done == 1050
    assert result.batches == 11
    assert result.done
    assert pg.execute("SELECT status, count(*) FROM orders GROUP BY 1 ORDER BY 1") == [
        ("open", 700),
        ("shipped", 350),
    ]
    assert pg.scalar("SELECT max(touched) FROM orders") == 1
    cp = pg.execute(
        "SELECT policy, datastore, transform, partition, interval_key, last_key, rows_done, done"
        " FROM convoy.transform_checkpoints"
    )
    assert cp == [("shop", "orders", "backfill-status", "all", "run:run-1", "1050", 1050, True)]
    progress = [line for line in pg.logs if line.startswith("orders/backfill-status: ")]
    assert progress[-1].startswith("orders/backfill-status: 1050/1050 rows (100.0%)")
    assert "rows/s" in progress[0]
    assert "ETA" in progress[0]
    # rerun of the same run: already done, nothing applied twice
    again = pg.engine().transform(ctx, "backfill-status")
    assert again.done
    assert again.rows_done == 1050
    assert pg.scalar("SELECT max(touched) FROM orders") == 1
    json.dumps(result.to_dict())


def test_dry_run_transform_changes_nothing(pg: PgDb) -> None:
    _orders(pg, 300)
    before = pg.state()
    result = pg.engine().transform(pg.ctx(_ds(pg)), "backfill-status", dry_run=True)
    assert result.dry_run
    assert result.rows_matching == 300
    assert pg.state() == before
    assert pg.scalar("SELECT to_regnamespace('convoy') IS NULL")


def test_data_interval_bound_and_each_interval_transformed_once(pg: PgDb) -> None:
    _orders(pg, 900)
    ds = _ds(
        pg,
        where="created_at >= {{ data_interval_start }} AND created_at < {{ data_interval_end }}",
        set={"touched": "touched + 1", "status": "'done-' || to_char(created_at, 'DD')"},
    )
    pg.write_migrations({"V1__index.sql": "CREATE INDEX orders_created ON orders (created_at);"})
    ds = ds.model_copy(update={"migrations": "migrations"})
    engine = pg.engine()
    days = [dt.datetime(2026, 1, d, tzinfo=UTC) for d in (1, 2, 3, 4)]
    # backfill: three intervals (each run migrates, then transforms its interval);
    # the first interval is run twice (retry / re-trigger)
    for i, run_id in enumerate(["backfill__1", "backfill__2", "backfill__3"]):
        ctx = pg.ctx(ds, run_id=run_id, start=days[i], end=days[i + 1])
        engine.migrate(ctx)
        assert engine.transform(ctx, "backfill-status").rows_done == 300
    assert pg.execute("SELECT version, run_id FROM convoy.schema_history") == [("1", "backfill__1")]
    retry = engine.transform(
        pg.ctx(ds, run_id="backfill__1b", start=days[0], end=days[1]), "backfill-status"
    )
    assert retry.done
    assert retry.rows_done == 300
    assert pg.execute("SELECT touched, count(*) FROM orders GROUP BY 1") == [(1, 900)]
    assert pg.execute("SELECT status, count(*) FROM orders GROUP BY 1 ORDER BY 1") == [
        ("done-01", 300),
        ("done-02", 300),
        ("done-03", 300),
    ]
    assert pg.execute(
        "SELECT interval_key, rows_done FROM convoy.transform_checkpoints ORDER BY 1"
    ) == [
        ("2026-01-01T00:00:00+00:00/2026-01-02T00:00:00+00:00", 300),
        ("2026-01-02T00:00:00+00:00/2026-01-03T00:00:00+00:00", 300),
        ("2026-01-03T00:00:00+00:00/2026-01-04T00:00:00+00:00", 300),
    ]
    with pytest.raises(MissingDataInterval):
        engine.transform(pg.ctx(ds, run_id="manual"), "backfill-status")


def test_interval_values_are_bound_not_pasted(pg: PgDb) -> None:
    """The interval reaches the server as a parameter: no query text contains its value."""
    _orders(pg, 30)
    ds = _ds(pg, where="created_at >= {{ data_interval_start }}", set={"touched": "1"})
    seen: list[str] = []

    class Spy(psycopg.Connection[Any]):
        def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:  # type: ignore[override]
            text = query if isinstance(query, str | bytes) else query.as_string(self)
            seen.append(str(text))
            return super().execute(query, params, **kw)

    from convoy.engines.postgres import PostgresConfig, PostgresEngine

    engine = PostgresEngine(
        pg.conninfo,
        PostgresConfig(progress_interval_s=0),
        connect=lambda dsn, app: Spy.connect(dsn, autocommit=True, application_name=app),
    )
    start = dt.datetime(2026, 1, 2, tzinfo=UTC)
    engine.transform(pg.ctx(ds, start=start), "backfill-status")
    batch = [s for s in seen if "convoy_batch" in s]
    assert batch
    assert all("%(data_interval_start)s" in s for s in batch)
    assert not any("2026-01-02" in s for s in seen)
    assert pg.scalar("SELECT count(*) FROM orders WHERE touched = 1") == 20


def test_partitions_cover_every_row_once(pg: PgDb) -> None:
    _orders(pg, 1000)
    pg.execute("DELETE FROM orders WHERE id BETWEEN 100 AND 400")  # skewed keys
    ds = _ds(pg)
    engine = pg.engine()
    parts = engine.partitions(pg.ctx(ds), "backfill-status", 4)
    assert len(parts) == 4
    assert parts[0].lower is None
    assert parts[-1].upper is None
    total = 0
    for p in parts:
        # partitions travel through XCom as JSON
        p2 = Partition.from_dict(json.loads(json.dumps(p.to_dict())))
        total += engine.transform(pg.ctx(ds), "backfill-status", p2).rows_done
    assert total == 699
    assert pg.execute("SELECT touched, count(*) FROM orders GROUP BY 1") == [(1, 699)]
    assert pg.scalar("SELECT count(*) FROM convoy.transform_checkpoints WHERE done") == 4


def test_text_key_partitions_from_percentiles(pg: PgDb) -> None:
    _orders(pg, 500)
    ds = _ds(pg, key="sku", table="orders")
    engine = pg.engine()
    parts = engine.partitions(pg.ctx(ds), "backfill-status", 3)
    assert len(parts) == 3
    threads = [
        threading.Thread(target=engine.transform, args=(pg.ctx(ds), "backfill-status", p))
        for p in parts
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pg.execute("SELECT touched, count(*) FROM orders GROUP BY 1") == [(1, 500)]


def test_unsafe_identifiers_are_refused_before_anything_runs(pg: PgDb) -> None:
    _orders(pg, 10)
    before = pg.state()
    attempts = [
        {"table": "orders; DROP TABLE orders"},
        {"table": 'public."orders"'},
        {"key": "id) OR (1=1"},
        {"key": 'id"--'},
        {"set": {"status = 'x', touched": "1"}},
        {"set": {'status"; DROP TABLE orders; --': "1"}},
    ]
    for attempt in attempts:
        fields: dict[str, Any] = {
            "name": "evil",
            "table": "orders",
            "key": "id",
            "batch_size": 10,
            "where": None,
            "set_": {"status": "'x'"},
        }
        fields.update({("set_" if k == "set" else k): v for k, v in attempt.items()})
        transform = SqlTransform.model_construct(**fields)
        ds = pg.datastore(migrations=None).model_copy(update={"transforms": (transform,)})
        with pytest.raises(UnsafeIdentifier):
            pg.engine().transform(pg.ctx(ds), "evil")
        with pytest.raises(UnsafeIdentifier):
            pg.engine().partitions(pg.ctx(ds), "evil", 2)
    assert pg.state() == before
    with pytest.raises(UnknownTransform):
        pg.engine().transform(pg.ctx(_ds(pg)), "nope")


def test_unsafe_engine_schema_refused() -> None:
    from convoy.engines.postgres import PostgresConfig

    with pytest.raises(UnsafeIdentifier):
        PostgresConfig(schema="convoy; drop schema public")


def test_throttle_max_rows_per_second(pg: PgDb) -> None:
    _orders(pg, 300)
    started = time.monotonic()
    pg.engine(max_rows_per_s=300).transform(pg.ctx(_ds(pg, batchSize=50)), "backfill-status")
    assert time.monotonic() - started >= 0.9


def test_pauses_while_a_session_waits_on_a_lock(pg: PgDb) -> None:
    _orders(pg, 200)
    pg.execute("CREATE TABLE hot (id int)")
    holder = psycopg.connect(pg.conninfo)
    holder.execute("LOCK TABLE hot IN ACCESS EXCLUSIVE MODE")
    waiter_done = threading.Event()

    def waiter() -> None:
        with psycopg.connect(pg.conninfo, autocommit=True) as conn:
            conn.execute("SELECT count(*) FROM hot")
        waiter_done.set()

    threading.Thread(target=waiter, daemon=True).start()
    time.sleep(0.5)  # the waiter has now waited > max_lock_wait_s
    threading.Timer(1.5, holder.close).start()
    engine = pg.engine(max_lock_wait_s=0.2, throttle_check_s=0.1)
    result = engine.transform(pg.ctx(_ds(pg, batchSize=50)), "backfill-status")
    assert result.rows_done == 200
    assert result.paused_s >= 0.5
    assert any("pausing, a session waits" in line for line in pg.logs)
    assert any("resuming after" in line for line in pg.logs)
    assert waiter_done.wait(5)


def test_credentials_never_logged(pg: PgDb, caplog: pytest.LogCaptureFixture) -> None:
    _orders(pg, 50)
    secret = "Sup3r-s3cret-pw"
    pg.execute(f"CREATE ROLE convoy_app LOGIN PASSWORD '{secret}' SUPERUSER")
    # the embedded server trusts local sockets, so also prove the password is sent: TCP is off,
    # so check the DSN the engine keeps and everything it logs, returns and raises
    dsn = pg.conninfo.replace("postgres:@", f"convoy_app:{secret}@")
    assert secret in dsn
    from convoy.engines.errors import LockTimeout
    from convoy.engines.postgres import PostgresConfig, PostgresEngine

    caplog.set_level(logging.DEBUG)
    logs: list[str] = []
    engine = PostgresEngine(dsn, PostgresConfig(progress_interval_s=0, advisory_lock_timeout_s=0.3))
    pg.write_migrations({"V1__x.sql": "ALTER TABLE orders ADD COLUMN x int;"})
    ds = _ds(pg).model_copy(update={"migrations": "migrations", "backup": "snapshot"})
    ctx = pg.ctx(ds, log=logs.append)
    outputs: list[Any] = [
        engine.backup(ctx).to_dict(),
        engine.migrate(ctx).to_dict(),
        [p.to_dict() for p in engine.partitions(ctx, "backfill-status", 2)],
        engine.transform(ctx, "backfill-status").to_dict(),
        [h.to_dict() for h in engine.history(ctx)],
        engine.revert(ctx).to_dict(),
        repr(engine),
    ]
    holder = psycopg.connect(dsn, autocommit=True)
    from convoy.engines.postgres.locks import lock_key

    holder.execute("SELECT pg_advisory_lock(%s)", [lock_key("convoy:convoy:datastore:orders")])
    with pytest.raises(LockTimeout) as err:
        engine.migrate(ctx)
    holder.close()
    text = "\n".join(logs) + json.dumps(outputs, default=str) + str(err.value) + caplog.text
    assert "convoy_app" in text  # the user is shown, the password is not
    assert secret not in text
    assert "password=***" in "\n".join(logs)
    assert pg.scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = 'convoy_app'") == 0
