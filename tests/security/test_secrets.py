"""A datastore password never reaches logs, results or errors of the PostgreSQL engine.

A role with a password owns a fresh database on the embedded PostgreSQL; the
engine runs backup (snapshot and pg_dump), migrate, transform and revert with a
conninfo carrying that password, and then fails to connect to a missing
database. Every ``ctx.log`` line, every log record (all loggers, DEBUG), the
captured stdout/stderr, every result's ``repr`` and the error text are searched
for the password.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from convoy.engines.base import RunContext
from convoy.engines.postgres import PostgresConfig, PostgresEngine
from convoy.policy.models import PostgresDatastore

pytestmark = pytest.mark.integration

PASSWORD = "Pw-7c1f0e9a-do-not-leak"
ROLE = "convoy_secret_test"
DB = "convoy_secret_test"


@pytest.fixture
def conninfo(postgres_server: Any) -> Any:
    admin = postgres_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal(PASSWORD)
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DB), sql.Identifier(ROLE))
        )
    info = make_conninfo(postgres_server.get_uri(DB), user=ROLE, password=PASSWORD)
    assert PASSWORD in info
    with psycopg.connect(info, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, status text, shipped boolean NOT NULL)"
        )
        conn.execute("INSERT INTO orders SELECT g, NULL, g % 2 = 0 FROM generate_series(1, 500) g")
    yield info
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))


def _ctx(tmp_path: Path, backup: str, lines: list[str]) -> RunContext:
    migrations = tmp_path / "migrations"
    migrations.mkdir(exist_ok=True)
    (migrations / "V1__status_default.sql").write_text("ALTER TABLE orders ADD COLUMN note text;\n")
    (migrations / "U1__status_default.sql").write_text("ALTER TABLE orders DROP COLUMN note;\n")
    ds = PostgresDatastore.model_validate(
        {
            "name": "orders",
            "type": "postgres",
            "connId": "orders_db",
            "migrations": "migrations",
            "backup": backup,
            "transforms": [
                {
                    "name": "backfill",
                    "table": "orders",
                    "key": "id",
                    "batchSize": 100,
                    "where": "status IS NULL",
                    "set": {"status": "CASE WHEN shipped THEN 'shipped' ELSE 'open' END"},
                }
            ],
        }
    )
    return RunContext(
        policy_name="shop",
        run_id=f"run-{backup}",
        datastore=ds,
        base_dir=tmp_path,
        data_interval_start=None,
        data_interval_end=None,
        log=lines.append,
    )


def _text(result: Any) -> str:
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return repr(result) + repr(dataclasses.asdict(result))
    return repr(result)


@pytest.mark.parametrize("backup", ["snapshot", "pg_dump"])
def test_password_never_in_logs_results_or_errors(
    conninfo: str,
    tmp_path: Path,
    backup: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    lines: list[str] = []
    ctx = _ctx(tmp_path, backup, lines)
    engine = PostgresEngine(
        conninfo,
        PostgresConfig(
            advisory_lock_timeout_s=5, progress_interval_s=0, dump_dir=str(tmp_path / "dumps")
        ),
    )
    results: list[Any] = [repr(engine)]
    results.append(engine.plan(ctx))
    results.append(engine.backup(ctx, dry_run=True))
    results.append(engine.backup(ctx))
    results.append(engine.migrate(ctx, dry_run=True))
    results.append(engine.migrate(ctx))
    results.append(engine.transform(ctx, "backfill", dry_run=True))
    transformed = engine.transform(ctx, "backfill")
    assert transformed.rows_done == 500
    results.append(transformed)
    results.append(engine.history(ctx))
    results.append(engine.revert(ctx, dry_run=True))
    results.append(engine.revert(ctx))
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT count(*) FROM orders WHERE status IS NULL").fetchone() == (500,)

    # a failing connection: the error text must not carry the password either
    broken = PostgresEngine(conninfo.replace(f"dbname={DB}", "dbname=no_such_db"), PostgresConfig())
    with pytest.raises(Exception) as failure:  # noqa: PT011 - any error type, its text matters
        broken.migrate(ctx)
    errors = [str(failure.value), repr(failure.value)]

    assert any("on " in line for line in lines)  # the engine did log its (redacted) DSN
    captured = capfd.readouterr()
    everything = "\n".join(
        [*lines, caplog.text, captured.out, captured.err, *map(_text, results), *errors]
    )
    assert PASSWORD not in everything
    assert "password=***" in "\n".join(lines)
