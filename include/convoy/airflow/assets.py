"""Airflow Assets (lineage) of a policy, derived at parse time from the policy alone.

- a PostgreSQL table: ``postgres://<connId>:5432/<datastore>/<schema>/<table>``
- a MongoDB collection: ``mongodb://<connId>:27017/<database>/<collection>``
- a rolled-out workload: ``k8s://<namespace>/<kind>/<name>`` (kind lower-case)

The ``postgres``/``mongodb`` schemes have normalisers registered by their
providers (host required, default port added, ``db/schema/table`` resp.
``db/collection`` path): the URIs are built in their normalised form. The
authority is the Airflow *connection id*, not the server's host: the DAG
processor never reads connections or secrets while parsing, the id is stable
across environments, and no credential can leak into an asset. The tables a
migration touches are only known at run time (they are parsed from the
pending files by the engine); declare them in ``snapshotTables`` to get them
as assets. Building an asset never fails a parse: a URI Airflow rejects is
logged and left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

from airflow.sdk import Asset

from convoy.plan import RolloutStep
from convoy.plan.specs import PostgresSpec
from convoy.policy.models import MongoDatastore, PostgresDatastore
from convoy.redaction import get_logger

log = get_logger(__name__)

POSTGRES_PORT = 5432
MONGO_PORT = 27017


def _seg(value: str) -> str:
    return quote(value, safe="-_.~")


def _asset(uri: str) -> Asset | None:
    try:
        return Asset(uri=uri)
    except Exception as exc:  # never fail the parse over lineage
        log.warning("convoy: asset %r left out: %s", uri, exc)
        return None


def _unique(assets: Iterable[Asset | None]) -> list[Asset]:
    seen: dict[str, Asset] = {}
    for a in assets:
        if a is not None and a.uri not in seen:
            seen[a.uri] = a
    return list(seen.values())


def split_table(name: str) -> tuple[str, str]:
    """``schema.table`` -> (schema, table); unqualified names are in ``public``."""
    schema, dot, table = name.strip().rpartition(".")
    return (schema if dot and schema else "public"), table


def table_uri(ds: PostgresDatastore | PostgresSpec, table: str) -> str:
    schema, name = split_table(table)
    return (
        f"postgres://{_seg(ds.conn_id)}:{POSTGRES_PORT}/{_seg(ds.name)}/{_seg(schema)}/{_seg(name)}"
    )


def collection_uri(ds: MongoDatastore, collection: str) -> str:
    return f"mongodb://{_seg(ds.conn_id)}:{MONGO_PORT}/{_seg(ds.database)}/{_seg(collection)}"


def workload_uri(step: RolloutStep) -> str:
    return f"k8s://{_seg(step.namespace)}/{_seg(step.kind.lower())}/{_seg(step.workload)}"


def transform_assets(ds: PostgresDatastore | MongoDatastore, transform: str) -> list[Asset]:
    """The table/collection one transform changes."""
    if isinstance(ds, PostgresDatastore):
        return _unique(_asset(table_uri(ds, t.table)) for t in ds.transforms if t.name == transform)
    return _unique(
        _asset(collection_uri(ds, t.collection)) for t in ds.transforms if t.name == transform
    )


def datastore_assets(ds: PostgresDatastore | MongoDatastore) -> list[Asset]:
    """What the phase is known (at parse time) to change: transform targets, snapshotTables."""
    if isinstance(ds, PostgresDatastore):
        tables = [*ds.snapshot_tables, *(t.table for t in ds.transforms)]
        return _unique(_asset(table_uri(ds, t)) for t in tables)
    return _unique(_asset(collection_uri(ds, t.collection)) for t in ds.transforms)


def workload_assets(step: RolloutStep) -> list[Asset]:
    return _unique([_asset(workload_uri(step))])
