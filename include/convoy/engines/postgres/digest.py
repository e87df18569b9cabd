"""A digest of a PostgreSQL schema's structure and data, to prove a revert is exact."""

from __future__ import annotations

import hashlib

import psycopg
from psycopg import sql


def state_digest(conninfo: str, schema: str = "public") -> str:
    """sha256 of a schema's columns, constraints, indexes and every row of its tables."""
    digest = hashlib.sha256()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for query in (
            "SELECT table_name, column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = %s ORDER BY 1, 2",
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
            " FROM pg_constraint WHERE connamespace = %s::regnamespace ORDER BY 1, 2",
            "SELECT tablename, indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = %s ORDER BY 1, 2",
        ):
            digest.update(repr(conn.execute(query, (schema,)).fetchall()).encode())
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,)
        ).fetchall()
        for (table,) in tables:
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), ''))"
                    " FROM {} t"
                ).format(sql.Identifier(schema, table))
            ).fetchone()
            digest.update(f"{table}={row}".encode())
    return digest.hexdigest()
