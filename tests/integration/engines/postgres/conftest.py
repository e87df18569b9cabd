"""Fixtures: a fresh database per test on the session's embedded PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg_engine_helpers import PgDb
from psycopg import sql

_counter = itertools.count()


@pytest.fixture
def pg(postgres_server: Any, tmp_path: Path) -> Iterator[PgDb]:
    name = f"convoy_t{next(_counter)}_{tmp_path.name[-20:].lower()}"
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in name)[:60]
    admin = postgres_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    db = PgDb(conninfo=postgres_server.get_uri(name), name=name, base_dir=tmp_path)
    try:
        yield db
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
