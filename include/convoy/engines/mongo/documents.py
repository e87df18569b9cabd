"""Pure helpers on Mongo documents: engine checks, interval binding, markers, digests.

The policy's rules (no JavaScript, known operators and stages) are checked
when the policy is loaded; a transform reaches the engine only as a
:class:`~convoy.plan.specs.MongoTransformSpec` of the run record, converted
from that policy. The engine checks what only it knows: its reserved batch
marker fields and collection names.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS
from pymongo.database import Database

from convoy.engines.base import RunContext
from convoy.engines.errors import MissingDataInterval
from convoy.engines.mongo.errors import InvalidMongoSpec, UnsafeCollectionName
from convoy.plan.specs import MongoTransformSpec

Doc = dict[str, Any]
_INTERVAL = re.compile(r"^\s*\{\{\s*(data_interval_start|data_interval_end)\s*\}\}\s*$")
_ANY_TEMPLATE = re.compile(r"\{\{|\{%|\{#")


# -- names --------------------------------------------------------------------
def collection_name(value: str, field: str, *, reserved_prefixes: Iterable[str] = ()) -> str:
    """A collection name convoy will use, or :class:`UnsafeCollectionName`."""
    if not value or len(value.encode()) > 200:
        raise UnsafeCollectionName(value, field, "must have 1 to 200 bytes")
    if "$" in value or "\x00" in value:
        raise UnsafeCollectionName(value, field, "must not contain '$' or NUL")
    if value.startswith("system."):
        raise UnsafeCollectionName(value, field, "is a system collection")
    for prefix in reserved_prefixes:
        if value.startswith(prefix):
            raise UnsafeCollectionName(value, field, f"uses the reserved prefix {prefix!r}")
    return value


# -- run-time checks -----------------------------------------------------------
def check_transform(t: MongoTransformSpec, marker_prefix: str) -> None:
    """Refuse fields with the prefix convoy reserves for its batch markers."""
    base = ("transforms", t.name)
    problems: list[str] = []
    for where, value in (("filter", t.filter), ("update", t.update)):
        for key in _field_names(value):
            if key.split(".")[0].startswith(marker_prefix):
                problems.append(
                    f"{'.'.join(str(p) for p in base)}.{where}: field {key!r} uses the prefix "
                    f"{marker_prefix!r} that convoy reserves for its batch markers"
                )
    if problems:
        raise InvalidMongoSpec(t.name, sorted(set(problems)))


def _field_names(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not str(key).startswith("$"):
                yield str(key)
            yield from _field_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from _field_names(item)


def bind_interval(value: Any, ctx: RunContext, transform: str) -> Any:
    """Copy of ``value`` with ``"{{ data_interval_start }}"`` etc. replaced by datetimes.

    Only a string that is exactly one template becomes a value (a BSON date);
    templates are never pasted into text or code.
    """
    if isinstance(value, Mapping):
        return {k: bind_interval(v, ctx, transform) for k, v in value.items()}
    if isinstance(value, list):
        return [bind_interval(v, ctx, transform) for v in value]
    if isinstance(value, str):
        match = _INTERVAL.match(value)
        if match:
            name = match.group(1)
            bound = getattr(ctx, name)
            if bound is None:
                raise MissingDataInterval(transform, name)
            assert isinstance(bound, dt.datetime)
            return bound
        if _ANY_TEMPLATE.search(value):
            raise InvalidMongoSpec(
                transform,
                [
                    f"filter value {value!r}: a template must be the whole value, exactly "
                    "'{{ data_interval_start }}' or '{{ data_interval_end }}'"
                ],
            )
    return value


def uses_interval(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(uses_interval(v) for v in value.values())
    if isinstance(value, list):
        return any(uses_interval(v) for v in value)
    return isinstance(value, str) and bool(_INTERVAL.match(value))


# -- batch markers -------------------------------------------------------------
def stamp_update(
    update: Doc | list[Doc], marker: str, batch: Mapping[str, Any], after: Any = None
) -> Any:
    """``update`` that also sets ``marker`` to ``batch`` in the same (per-document atomic) write.

    ``after`` (pipelines only) is an expression stored as ``<marker>.after``
    by the same write, e.g. ``{"status": "$status"}``: the values the update
    produced, captured before any later write can change them.
    """
    value = dict(batch)
    if isinstance(update, list):
        if after is None:
            return [*copy.deepcopy(update), {"$set": {marker: {"$literal": value}}}]
        stamp = {k: {"$literal": v} for k, v in value.items()}
        return [*copy.deepcopy(update), {"$set": {marker: {**stamp, "after": after}}}]
    out = copy.deepcopy(update)
    out["$set"] = {**out.get("$set", {}), marker: value}
    return out


# -- bounds through XCom -------------------------------------------------------
def encode_value(value: Any) -> str:
    """A BSON value as canonical Extended JSON text (keeps ObjectId/int64/date types)."""
    return json_util.dumps({"v": value}, json_options=CANONICAL_JSON_OPTIONS)


def decode_value(text: str) -> Any:
    return json_util.loads(text)["v"]


# -- digests -------------------------------------------------------------------
def canonical(doc: Mapping[str, Any]) -> str:
    """Canonical Extended JSON with sorted keys: equal documents give equal text."""
    return json_util.dumps(doc, json_options=CANONICAL_JSON_OPTIONS, sort_keys=True)


def index_specs(db: Database[Doc], collection: str) -> list[Doc]:
    """Index definitions without server-assigned fields, sorted by name."""
    if collection not in db.list_collection_names():
        return []
    specs = []
    for spec in db[collection].list_indexes():
        spec = dict(spec)
        spec.pop("v", None)
        spec.pop("ns", None)
        specs.append(spec)
    return sorted(specs, key=lambda s: str(s["name"]))


def documents_digest(db: Database[Doc], collection: str, batch_size: int = 1000) -> Doc:
    """Count and SHA-256 of the documents in ``_id`` order (a server cursor: constant memory)."""
    docs = hashlib.sha256()
    count = 0
    if collection in db.list_collection_names():
        for doc in db[collection].find({}).sort("_id", 1).batch_size(batch_size):
            docs.update(canonical(doc).encode())
            docs.update(b"\n")
            count += 1
    return {"count": count, "documents": docs.hexdigest()}


def indexes_digest(db: Database[Doc], collection: str) -> str:
    """SHA-256 of the index specifications (see :func:`index_specs`)."""
    return hashlib.sha256(
        "\n".join(canonical(s) for s in index_specs(db, collection)).encode()
    ).hexdigest()


def collection_digest(db: Database[Doc], collection: str, batch_size: int = 1000) -> Doc:
    """Count and SHA-256 of the documents (in ``_id`` order) and of the index specs.

    Streams the collection with a server cursor, so memory stays constant.
    """
    out = documents_digest(db, collection, batch_size)
    out["indexes"] = indexes_digest(db, collection)
    return out


def stream(
    db: Database[Doc],
    collection: str,
    filter: Mapping[str, Any] | None,
    projection: Mapping[str, Any] | None,
    batch_size: int,
    limit: int | None = None,
) -> Iterator[list[Doc]]:
    """Lists of at most ``batch_size`` documents in ``_id`` order (keyset pagination)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    last: Any = None
    sent = 0
    while limit is None or sent < limit:
        clauses: list[Doc] = [dict(filter or {})]
        if last is not None:
            clauses.append({"_id": {"$gt": last}})
        size = batch_size if limit is None else min(batch_size, limit - sent)
        proj = None if projection is None else {k: v for k, v in projection.items() if k != "_id"}
        batch = list(db[collection].find({"$and": clauses}, proj).sort("_id", 1).limit(size))
        if not batch:
            return
        last = batch[-1]["_id"]
        sent += len(batch)
        if projection is not None and "_id" in projection and not projection["_id"]:
            batch = [{k: v for k, v in d.items() if k != "_id"} for d in batch]
        yield batch
        if len(batch) < size:
            return
