"""``convoy settings load``, the Airflow side: validated settings -> Airflow's metadata DB.

:mod:`convoy.settings` reads and validates an Astro CLI ``airflow_settings.yaml``
without Airflow; this module writes the result through Airflow's own models
(``Connection``, ``Pool.create_or_update_pool``, ``Variable``) in one session,
the same code paths as ``airflow connections import`` / ``airflow pools set``.
An entry already equal to the file is left untouched, so a rerun changes
nothing. Passwords are never printed: output names fields, not secret values.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convoy.settings import (
    Action,
    Change,
    ConnectionSpec,
    Settings,
    describe_connection,
    read_settings,
)


def _connection_state(conn: Any) -> tuple[Any, ...]:
    try:
        extra = json.loads(conn.extra) if conn.extra else {}
    except (TypeError, ValueError):
        extra = conn.extra
    return (
        conn.conn_type,
        conn.host or None,
        conn.schema or None,
        conn.login or None,
        conn.password or None,
        conn.port or None,
        extra,
        conn.description or None,
    )


def _spec_state(spec: ConnectionSpec) -> tuple[Any, ...]:
    return (
        spec.conn_type,
        spec.host or None,
        spec.schema or None,
        spec.login or None,
        spec.password or None,
        spec.port or None,
        dict(spec.extra),
        spec.description or None,
    )


def apply_settings(settings: Settings, *, dry_run: bool = False) -> list[Change]:
    """Create or update every entry through Airflow's models; unchanged entries are not written."""
    from airflow.models.connection import Connection
    from airflow.models.pool import Pool
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    changes: list[Change] = []
    with create_session() as session:
        for spec in settings.connections:
            existing = session.scalar(select(Connection).where(Connection.conn_id == spec.conn_id))
            action: Action
            if existing is None:
                action = "created"
            elif _connection_state(existing) == _spec_state(spec):
                action = "unchanged"
            else:
                action = "updated"
            if action != "unchanged" and not dry_run:
                conn = Connection(
                    conn_id=spec.conn_id,
                    conn_type=spec.conn_type,
                    description=spec.description,
                    host=spec.host,
                    login=spec.login,
                    password=spec.password,
                    schema=spec.schema,
                    port=spec.port,
                    extra=json.dumps(dict(spec.extra), sort_keys=True) if spec.extra else None,
                )
                if existing is not None:
                    conn.id = existing.id  # same as `airflow connections import --overwrite`
                session.merge(conn)
            changes.append(Change("connection", spec.conn_id, action, describe_connection(spec)))

        for pool in settings.pools:
            current = session.scalar(select(Pool).where(Pool.pool == pool.name))
            if current is None:
                action = "created"
            elif (
                current.slots,
                current.description or "",
                bool(current.include_deferred),
            ) == (pool.slots, pool.description, pool.include_deferred):
                action = "unchanged"
            else:
                action = "updated"
            if action != "unchanged" and not dry_run:
                Pool.create_or_update_pool(
                    name=pool.name,
                    slots=pool.slots,
                    description=pool.description,
                    include_deferred=pool.include_deferred,
                    session=session,
                )
            changes.append(Change("pool", pool.name, action, f"slots={pool.slots}"))

        for var in settings.variables:
            row = session.scalar(select(Variable).where(Variable.key == var.key))
            if row is None:
                action = "created"
            elif (row.val, row.description or None) == (var.value, var.description or None):
                action = "unchanged"
            else:
                action = "updated"
            if action != "unchanged" and not dry_run:
                if row is None:
                    session.add(
                        Variable(key=var.key, val=var.value, description=var.description)  # type: ignore[no-untyped-call]
                    )
                else:
                    row.val = var.value
                    row.description = var.description
            changes.append(Change("variable", var.key, action))
        if dry_run:
            session.rollback()
    return changes


def load(
    file: str | Path, *, dry_run: bool = False, echo: Callable[[str], None] = print
) -> list[Change]:
    """Read, validate and apply ``file``; ``echo`` one masked line per entry and a summary."""
    settings = read_settings(file)
    changes = apply_settings(settings, dry_run=dry_run)
    prefix = "dry run: would be " if dry_run else ""
    for change in changes:
        echo(
            f"{change.kind} {change.name}: {prefix}{change.action}"
            + (f" ({change.detail})" if change.detail else "")
        )
    counts = {
        a: sum(1 for c in changes if c.action == a) for a in ("created", "updated", "unchanged")
    }
    summary = ", ".join(f"{n} {a}" for a, n in counts.items())
    echo(f"{settings.file}: {summary}" + (" (dry run, nothing written)" if dry_run else ""))
    return changes
