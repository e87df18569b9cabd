from __future__ import annotations

import pytest

from convoy.engines.errors import UnsafeIdentifier
from convoy.engines.postgres.sql import (
    TableName,
    identifier,
    is_no_transaction,
    redact_dsn,
    render_author_sql,
    split_statements,
    table_name,
    touched_tables,
)


@pytest.mark.parametrize("value", ["id", "_x", "Orders", "a$b", "x" * 63])
def test_safe_identifiers(value: str) -> None:
    assert identifier(value, "key") == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x" * 64,
        "1abc",
        'id"; DROP TABLE orders; --',
        "id; select 1",
        "a b",
        "a-b",
        "(select 1)",
        "ü",
        "id--",
    ],
)
def test_unsafe_identifiers_refused(value: str) -> None:
    with pytest.raises(UnsafeIdentifier) as err:
        identifier(value, "transforms[0].key")
    assert err.value.field == "transforms[0].key"
    assert err.value.value == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [("orders", TableName(None, "orders")), ("public.orders", TableName("public", "orders"))],
)
def test_table_names(value: str, expected: TableName) -> None:
    assert table_name(value, "table") == expected


@pytest.mark.parametrize("value", ["a.b.c", "public.", ".x", 'public."x"', "x;drop"])
def test_bad_table_names(value: str) -> None:
    with pytest.raises(UnsafeIdentifier):
        table_name(value, "table")


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app:s3cr3t-pw@db.example:5432/shop?sslmode=require",
        "host=db.example user=app password=s3cr3t-pw dbname=shop",
    ],
)
def test_redact_dsn(dsn: str) -> None:
    out = redact_dsn(dsn)
    assert "s3cr3t-pw" not in out
    assert "db.example" in out
    assert "password=***" in out


def test_render_author_sql_binds_interval_and_escapes_percent() -> None:
    text, used = render_author_sql(
        "name LIKE 'a%' AND created_at >= {{ data_interval_start }} "
        "AND created_at < {{data_interval_end}}"
    )
    assert text == (
        "name LIKE 'a%%' AND created_at >= %(data_interval_start)s "
        "AND created_at < %(data_interval_end)s"
    )
    assert used == {"data_interval_start", "data_interval_end"}


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("-- convoy:no-transaction\nCREATE INDEX CONCURRENTLY i ON t(x);", True),
        ("--convoy:no-transaction\n", True),
        ("CREATE INDEX i ON t(x);\n-- convoy:no-transaction", False),
        ("", False),
    ],
)
def test_no_transaction_marker(script: str, expected: bool) -> None:
    assert is_no_transaction(script) is expected


def test_split_statements_respects_strings_comments_dollar_quotes() -> None:
    script = """
    -- a comment; with a semicolon
    INSERT INTO t VALUES ('a;b', E'it''s;');
    /* block ; /* nested ; */ still */ UPDATE t SET x = 1;
    CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;
    ;;
    SELECT "we;ird" FROM t
    """
    statements = split_statements(script)
    assert len(statements) == 4
    assert statements[0].endswith("INSERT INTO t VALUES ('a;b', E'it''s;')")
    assert "$body$ SELECT 1; $body$" in statements[2]
    assert statements[3] == 'SELECT "we;ird" FROM t'


def test_touched_tables() -> None:
    script = """
    ALTER TABLE public.orders ADD COLUMN status text;
    ALTER TABLE IF EXISTS ONLY "Sales"."Items" DROP COLUMN x;
    UPDATE orders SET status = 'open' WHERE id IN (SELECT id FROM customers);
    DELETE FROM ONLY audit.log WHERE true;
    INSERT INTO shop.events (id) SELECT id FROM other;
    WITH moved AS (DELETE FROM queue RETURNING *) INSERT INTO archive SELECT * FROM moved;
    DROP TABLE IF EXISTS a, b.c;
    TRUNCATE TABLE ONLY t1, t2;
    CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS idx ON ONLY public.payments (id);
    CREATE TABLE IF NOT EXISTS public.new_table (id int);
    INSERT INTO public.new_table VALUES (1);
    SELECT * FROM untouched;
    -- UPDATE commented SET x = 1;
    """
    touched, created = touched_tables(script)
    names = {str(t) for t in touched}
    assert names == {
        "public.orders",
        "Sales.Items",
        "orders",
        "audit.log",
        "shop.events",
        "queue",
        "archive",
        "a",
        "b.c",
        "t1",
        "t2",
        "public.payments",
        "public.new_table",
    }
    assert {str(t) for t in created} == {"public.new_table"}
