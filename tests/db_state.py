"""The whole state of one PostgreSQL database, for "a dry run changes nothing" checks.

``state_digest`` covers one schema's structure and rows; a dry run that wrote
anywhere else (a new schema, convoy's own schemas, a function, a trigger, a
sequence drawn from, a role) would slip past it, so this takes all of them.
"""

from __future__ import annotations

from typing import Any

import psycopg

from convoy.engines.postgres.digest import state_digest

USER_NAMESPACES = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"

_QUERIES = {
    "schemas": f"SELECT n.nspname FROM pg_namespace n WHERE {USER_NAMESPACES} ORDER BY 1",
    "relations": "SELECT n.nspname, c.relname, c.relkind FROM pg_class c"
    f" JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_NAMESPACES} ORDER BY 1, 2",
    "functions": "SELECT n.nspname, p.proname, md5(p.prosrc) FROM pg_proc p"
    f" JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {USER_NAMESPACES} ORDER BY 1, 2, 3",
    "triggers": "SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger"
    " WHERE NOT tgisinternal ORDER BY 1, 2",
    "sequences": "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2",
    "roles": "SELECT rolname FROM pg_roles ORDER BY 1",
}


def database_state(conninfo: str) -> dict[str, Any]:
    """Schemas, relations, functions, triggers, sequence positions, roles; every schema's digest."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        state: dict[str, Any] = {
            name: conn.execute(query).fetchall() for name, query in _QUERIES.items()
        }
    state["digests"] = {schema: state_digest(conninfo, schema) for (schema,) in state["schemas"]}
    return state


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What changed, by part (for assertion messages)."""
    out = []
    for key in before.keys() | after.keys():
        if before.get(key) != after.get(key):
            out.append(f"{key}: {before.get(key)!r} -> {after.get(key)!r}")
    return sorted(out)
