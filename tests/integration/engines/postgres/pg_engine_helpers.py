"""Helpers of the PostgreSQL engine tests: one throw-away database and its state."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from convoy.engines.base import RunContext
from convoy.engines.postgres import PostgresConfig, PostgresEngine
from convoy.engines.postgres.backup import find_pg_tool
from convoy.plan.specs import datastore_spec
from convoy.policy.models import PostgresDatastore


@dataclass
class PgDb:
    """One throw-away database: its conninfo, helpers to run SQL, build contexts."""

    conninfo: str
    name: str
    base_dir: Path
    logs: list[str] = field(default_factory=list)

    def execute(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            cur = conn.execute(query.encode() if params is None else query, params)
            return cur.fetchall() if cur.description else []

    def scalar(self, query: str, params: Any = None) -> Any:
        return self.execute(query, params)[0][0]

    def write_migrations(self, files: dict[str, str], directory: str = "migrations") -> Path:
        d = self.base_dir / directory
        d.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (d / name).write_text(text)
        return d

    def datastore(self, **kw: Any) -> PostgresDatastore:
        data: dict[str, Any] = {
            "name": "orders",
            "type": "postgres",
            "connId": "orders_db",
            "migrations": "migrations",
        }
        data.update(kw)
        return PostgresDatastore.model_validate(data)

    def ctx(
        self,
        datastore: PostgresDatastore | None = None,
        run_id: str = "run-1",
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        log: Callable[[str], None] | None = None,
    ) -> RunContext:
        return RunContext(
            policy_name="shop",
            run_id=run_id,
            datastore=datastore_spec(datastore or self.datastore()),
            base_dir=self.base_dir,
            data_interval_start=start,
            data_interval_end=end,
            log=log or self.logs.append,
        )

    def engine(self, **config: Any) -> PostgresEngine:
        defaults: dict[str, Any] = {"advisory_lock_timeout_s": 5, "progress_interval_s": 0}
        defaults.update(config)
        return PostgresEngine(self.conninfo, PostgresConfig(**defaults))

    def schema_dump(self) -> str:
        """``pg_dump --schema-only`` of the user schemas, normalised (no comments/noise)."""
        out = subprocess.run(
            [
                find_pg_tool(PostgresConfig(), "pg_dump"),
                "--schema-only",
                "--no-owner",
                "--exclude-schema=convoy",
                "--exclude-schema=convoy_backup",
                "--dbname",
                self.conninfo,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        lines = [
            line
            for line in out.splitlines()
            if line.strip() and not line.startswith("--") and not line.startswith("\\")
        ]
        return "\n".join(lines)

    def row_hashes(self) -> dict[str, str]:
        """md5 of every user table's rows ordered by all columns."""
        tables = self.execute(
            "SELECT schemaname, tablename FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'convoy',"
            " 'convoy_backup') ORDER BY 1, 2"
        )
        out: dict[str, str] = {}
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            for schema, table in tables:
                ident = sql.Identifier(schema, table)
                row = conn.execute(
                    sql.SQL(
                        "SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), ''))"
                        " FROM {} t"
                    ).format(ident)
                ).fetchone()
                assert row is not None
                out[f"{schema}.{table}"] = row[0]
        return out

    def state(self) -> str:
        """One checksum of schema and data (for before/after comparisons)."""
        h = hashlib.sha256(self.schema_dump().encode())
        for name, digest in sorted(self.row_hashes().items()):
            h.update(f"{name}={digest}".encode())
        return h.hexdigest()
