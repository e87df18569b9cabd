"""What a datastore engine needs of a datastore, as typed, serialisable specs.

Converted once from the policy (:func:`datastore_spec`, when preflight freezes
the run record) and handed to the engines in
:class:`~convoy.engines.base.RunContext`; the engines never see the policy
models, and they do not check the policy again: a spec only comes from a
policy that ``load_policy`` accepted, through a record whose digest every task
verifies. Pure data: no Airflow, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from convoy.policy.models import MongoDatastore, PostgresDatastore


@dataclass(frozen=True)
class SqlTransformSpec:
    """A PostgreSQL transform: ``UPDATE table SET set_ WHERE where`` in key-ordered batches."""

    name: str
    table: str
    key: str
    batch_size: int
    where: str | None
    set_: dict[str, str]


@dataclass(frozen=True)
class MongoTransformSpec:
    """A MongoDB transform: ``update`` on the documents matching ``filter``, in batches."""

    name: str
    collection: str
    filter: dict[str, Any]
    update: dict[str, Any] | list[dict[str, Any]]
    batch_size: int


@dataclass(frozen=True)
class PostgresSpec:
    name: str
    conn_id: str
    #: Directory of the migration files, relative to the policy file.
    migrations: str | None = None
    backup: Literal["none", "snapshot", "pg_dump"] = "none"
    snapshot_tables: tuple[str, ...] = ()
    transforms: tuple[SqlTransformSpec, ...] = ()
    type: Literal["postgres"] = field(default="postgres")


@dataclass(frozen=True)
class MongoSpec:
    name: str
    conn_id: str
    database: str
    migrations: str | None = None
    backup: Literal["none", "snapshot"] = "none"
    transforms: tuple[MongoTransformSpec, ...] = ()
    type: Literal["mongo"] = field(default="mongo")


DatastoreSpec = PostgresSpec | MongoSpec


def datastore_spec(ds: PostgresDatastore | MongoDatastore | DatastoreSpec) -> DatastoreSpec:
    """The engine's view of a datastore of a (validated) policy; a spec is returned as is."""
    if isinstance(ds, PostgresSpec | MongoSpec):
        return ds
    if ds.type == "postgres":
        return PostgresSpec(
            name=ds.name,
            conn_id=ds.conn_id,
            migrations=ds.migrations,
            backup=ds.backup,
            snapshot_tables=tuple(ds.snapshot_tables),
            transforms=tuple(
                SqlTransformSpec(
                    name=t.name,
                    table=t.table,
                    key=t.key,
                    batch_size=t.batch_size,
                    where=t.where,
                    set_=dict(t.set_),
                )
                for t in ds.transforms
            ),
        )
    return MongoSpec(
        name=ds.name,
        conn_id=ds.conn_id,
        database=ds.database,
        migrations=ds.migrations,
        backup=ds.backup,
        transforms=tuple(
            MongoTransformSpec(
                name=t.name,
                collection=t.collection,
                filter=dict(t.filter),
                update=dict(t.update)
                if isinstance(t.update, dict)
                else [dict(s) for s in t.update],
                batch_size=t.batch_size,
            )
            for t in ds.transforms
        ),
    )
