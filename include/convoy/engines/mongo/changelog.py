"""The migration changelog (``convoy_changelog``): one document per attempt.

Fields: ``datastore, version, version_key (list of ints), description, name,
checksum, policy, run_id, host, pid, started, finished, duration_ms, state,
error, reverted_on, revert_method, repaired_on``. ``state`` is ``running``
(written before ``up(db)``), ``applied``, ``failed`` or ``reverted``.

A version is *applied* when its latest attempt is ``applied``. An attempt that
is ``failed``, or still ``running`` while the migration lock is free (its
process died), and that is not repaired *blocks* migrating until
:meth:`MongoEngine.repair` (the migration may be half-applied: Mongo
migrations are not transactional).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from convoy.engines.base import HistoryEntry
from convoy.engines.mongo.config import MongoConfig
from convoy.engines.mongo.locks import as_utc
from convoy.policy.migrations import parse_version

Doc = dict[str, Any]
BLOCKING_STATES = frozenset({"failed", "running"})


def version_text(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


def ensure(db: Database[Doc], cfg: MongoConfig) -> None:
    db[cfg.changelog_collection].create_index(
        [("datastore", ASCENDING), ("version_key", ASCENDING), ("started", ASCENDING)],
        name="convoy_changelog_version",
    )


def load(db: Database[Doc], cfg: MongoConfig, datastore: str) -> list[Doc]:
    """Every attempt of ``datastore``, oldest first."""
    if cfg.changelog_collection not in db.list_collection_names():
        return []
    cursor = (
        db[cfg.changelog_collection]
        .find({"datastore": datastore})
        .sort([("started", ASCENDING), ("_id", ASCENDING)])
    )
    return list(cursor)


def latest(entries: Iterable[Doc]) -> dict[tuple[int, ...], Doc]:
    """The latest attempt of each version that was not repaired."""
    out: dict[tuple[int, ...], Doc] = {}
    for e in entries:
        if e.get("repaired_on") is None:
            out[parse_version(str(e["version"]))] = e
    return out


def applied(entries: Iterable[Doc]) -> dict[tuple[int, ...], Doc]:
    return {v: e for v, e in latest(entries).items() if e["state"] == "applied"}


def blocking(entries: Iterable[Doc]) -> list[Doc]:
    return [e for e in latest(entries).values() if e["state"] in BLOCKING_STATES]


def to_history(entries: Iterable[Doc]) -> list[HistoryEntry]:
    out = []
    for rank, e in enumerate(entries, start=1):
        started = as_utc(e.get("started"))
        assert started is not None
        out.append(
            HistoryEntry(
                rank=rank,
                version=str(e["version"]),
                description=str(e.get("description", "")),
                kind="V",
                checksum=e.get("checksum"),
                policy=str(e.get("policy", "")),
                run_id=str(e.get("run_id", "")),
                installed_on=started,
                execution_ms=int(e.get("duration_ms") or 0),
                success=e["state"] in ("applied", "reverted"),
                rolled_back=e["state"] == "reverted",
                reverted_on=as_utc(e.get("reverted_on")),
                repaired_on=as_utc(e.get("repaired_on")),
            )
        )
    return out
