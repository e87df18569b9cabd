"""Validation of datastores with great-expectations 1.x (called directly).

The DAG's validate task calls :func:`validate_datastore` and pushes
``report.to_dict()`` to XCom; it fails when ``report.blocking_failures`` is
not empty (the rollback then runs). GX is imported only when an expectation
needs it (PostgreSQL evaluates the common ones in one scan without it; MongoDB
always needs it), never at DAG parse time. See docs/validation.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convoy.observe.progress import ProgressSink
from convoy.validation.models import ExpectationOutcome, OnFailure, ValidationReport

if TYPE_CHECKING:
    from convoy.policy.models import MongoDatastore, PostgresDatastore

__all__ = [
    "ExpectationOutcome",
    "OnFailure",
    "ValidationReport",
    "validate_datastore",
]


def validate_datastore(
    datastore: PostgresDatastore | MongoDatastore,
    *,
    conninfo: str | None = None,
    mongo_client: Any = None,
    run_dir: Path,
    log: Callable[[str], None] = print,
    mongo_batch_size: int | None = None,
    progress: ProgressSink | None = None,
) -> ValidationReport:
    """Run every validation suite of ``datastore``; Data Docs go to ``run_dir/data_docs/<name>/``.

    PostgreSQL needs ``conninfo`` (psycopg conninfo or URI, Unix sockets
    included); MongoDB needs ``mongo_client`` (pymongo or mongomock client).
    Failures of expectations are returned, not raised; an unreachable
    datastore or a missing table shows as failed outcomes with ``error`` set.
    ``progress`` receives how far it got: documents validated of those estimated
    (MongoDB), expectations evaluated of those planned (PostgreSQL).
    """
    if not datastore.validation:
        return ValidationReport(datastore=datastore.name)
    if datastore.type == "postgres":
        if not conninfo:
            raise ValueError(f"datastore {datastore.name}: conninfo is required for postgres")
        from convoy.validation.postgres import validate_postgres

        return validate_postgres(
            datastore, conninfo=conninfo, run_dir=run_dir, log=log, progress=progress
        )
    if mongo_client is None:
        raise ValueError(f"datastore {datastore.name}: mongo_client is required for mongo")
    from convoy.validation.mongo import DEFAULT_BATCH_SIZE, validate_mongo

    return validate_mongo(
        datastore,
        client=mongo_client,
        run_dir=run_dir,
        log=log,
        batch_size=mongo_batch_size or DEFAULT_BATCH_SIZE,
        progress=progress,
    )
