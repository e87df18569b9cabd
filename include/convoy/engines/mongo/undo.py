"""Undo log of transforms (``convoy_undo``): before-images, after-values, compare-and-set revert.

**Forward**, per transform batch, in this order so that a kill at any point
leaves something revert can use:

1. the batch's documents are read whole (one batch in memory);
2. their before-images go to the undo log, one ``bulk_write`` of upserts keyed
   by ``{run, key, doc}`` (run id, transform key, document ``_id``): the
   top-level fields the update sets (``$set``/``$unset``/``$inc``... paths,
   pipeline ``$set``/``$addFields``/``$unset`` fields), or the whole document
   (without ``_id`` and convoy's markers) when the update's shape cannot be
   analysed (``$project``, ``$replaceRoot``, ``$replaceWith``);
3. each document is updated (and stamped) only if it is still exactly the one
   read, ``$expr: {$eq: ["$$ROOT", <document read>]}``: a document the
   application changed in between is left for the next (catch-up) pass, so a
   before-image is always the state convoy's write replaced;
4. the after-values are logged. A pipeline update copies them into its stamp
   (``<marker>.after``) in the same single-document write, so they are exactly
   what convoy wrote even if the application writes right after; a literal
   top-level ``$set``/``$unset`` knows them in advance; other operator updates
   (``$inc``, ``$push``, dotted paths...) are read back right after the
   batch's update, and an application write to the same fields in that
   window is taken for convoy's.

A before-image is overwritten (``$set``, not ``$setOnInsert``) when a
document is read again: documents convoy changed carry the stamp and are never
read again by the run, so a re-read document is one convoy has not changed
(its update failed, the process died before it, or the application replaced
it whole): its current state is the true before-image, and an older one
would discard the application's writes on revert.

**Revert**, newest transform first, ``undo_batch_size`` entries at a time:
the documents are read; a document whose logged fields equal the
after-values is set back to the before-image by a compare-and-set on the
whole document as read (``restored``); one equal to the before-image already
is ``restored`` without a write (a revert killed after its write); one that
differs was changed by the application after convoy and is left alone
(``conflict``); a missing one was deleted by the application (``gone``).
Each entry's outcome is written to its ``state``, so a rerun continues where
a killed revert stopped and a finished one does nothing. Documents the
application inserted have no entry and are never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId, json_util
from bson.json_util import RELAXED_JSON_OPTIONS
from pymongo import ASCENDING, DESCENDING, UpdateMany
from pymongo.collection import Collection
from pymongo.database import Database

from convoy.engines.base import RunContext
from convoy.engines.mongo.config import FaultHook, MongoConfig
from convoy.engines.mongo.documents import canonical
from convoy.engines.mongo.locks import MongoLock, utcnow

Doc = dict[str, Any]

#: Entries a revert still has to look at.
OPEN_STATES = ("pending", "applied", "unknown")
#: How often a revert re-reads a document the application keeps changing under it.
CAS_ATTEMPTS = 3
#: How many conflicting documents a result lists (all stay in the undo log).
MAX_LISTED = 100


@dataclass(frozen=True)
class Tracking:
    """What of a document a transform's update changes, and how its after-values are known.

    ``fields``: top-level fields, or ``None`` for the whole document.
    ``capture``: ``stamp`` (pipeline: copied into the stamp by the same write),
    ``static`` (literal top-level ``$set``/``$unset``: ``planned``), or
    ``read`` (read back after the update).
    """

    fields: tuple[str, ...] | None
    capture: str
    planned: Doc | None = None
    planned_absent: tuple[str, ...] = ()


def _top(path: Any) -> str | None:
    """Top-level field of an update path, ``""`` for ``_id``, ``None`` when not analysable."""
    if not isinstance(path, str):
        return None
    top = path.split(".", 1)[0]
    if not top or top.startswith("$"):
        return None
    return "" if top == "_id" else top


def _fields(paths: Iterable[Any]) -> set[str] | None:
    out: set[str] = set()
    for p in paths:
        top = _top(p)
        if top is None:
            return None
        if top:
            out.add(top)
    return out


def _pipeline_fields(stages: Sequence[Any]) -> set[str] | None:
    out: set[str] = set()
    for stage in stages:
        if not isinstance(stage, Mapping) or len(stage) != 1:
            return None
        ((name, body),) = stage.items()
        if name in ("$set", "$addFields") and isinstance(body, Mapping):
            found = _fields(body)
        elif name == "$unset" and isinstance(body, str):
            found = _fields([body])
        elif name == "$unset" and isinstance(body, list):
            found = _fields(body)
        else:  # $project, $replaceRoot, $replaceWith: any field may change
            return None
        if found is None:
            return None
        out |= found
    return out


def _operator_fields(update: Mapping[str, Any]) -> set[str] | None:
    out: set[str] = set()
    for op, spec in update.items():
        if not isinstance(spec, Mapping):
            return None
        found = _fields(spec)
        if found is None:
            return None
        out |= found
        if op == "$rename":
            renamed = _fields(spec.values())
            if renamed is None:
                return None
            out |= renamed
    return out


def tracking(update: Doc | list[Doc]) -> Tracking:
    """How the undo log follows ``update`` (see :class:`Tracking`)."""
    if isinstance(update, list):
        found = _pipeline_fields(update)
        return Tracking(tuple(sorted(found)) if found else None, "stamp")
    found = _operator_fields(update)
    if not found:
        return Tracking(None, "read")
    fields = tuple(sorted(found))
    literal = set(update) <= {"$set", "$unset"} and all(
        "." not in str(path) for spec in update.values() for path in spec
    )
    if literal:
        planned = {k: v for k, v in update.get("$set", {}).items() if k != "_id"}
        absent = tuple(sorted(set(update.get("$unset", {})) - set(planned)))
        return Tracking(fields, "static", planned, absent)
    return Tracking(fields, "read")


def id_text(value: Any) -> str:
    """A document ``_id`` as short text for results and logs."""
    if isinstance(value, str | int | ObjectId) and not isinstance(value, bool):
        return str(value)
    return json_util.dumps(value, json_options=RELAXED_JSON_OPTIONS)


def _image(doc: Mapping[str, Any], fields: Sequence[str] | None, prefix: str) -> Doc:
    """The logged part of ``doc``: ``fields`` present in it, or all but ``_id`` and markers."""
    if fields is None:
        return {k: v for k, v in doc.items() if k != "_id" and not str(k).startswith(prefix)}
    return {f: doc[f] for f in fields if f in doc}


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal field sets and type-exact equal values (canonical Extended JSON)."""
    return set(a) == set(b) and all(canonical({"v": a[k]}) == canonical({"v": b[k]}) for k in a)


def unchanged_since_read(doc: Mapping[str, Any]) -> Doc:
    """Filter matching ``doc`` only while it is exactly as read (compare-and-set)."""
    return {"$and": [{"_id": doc["_id"]}, {"$expr": {"$eq": ["$$ROOT", {"$literal": doc}]}}]}


class UndoLog:
    """The forward half: one transform partition's writes to ``convoy_undo``."""

    def __init__(
        self,
        db: Database[Doc],
        cfg: MongoConfig,
        ctx: RunContext,
        *,
        transform: str,
        collection: str,
        key: str,
        marker: str,
        update: Doc | list[Doc],
        partition: str,
    ) -> None:
        self.coll = db[cfg.undo_collection]
        self.cfg = cfg
        self.ctx = ctx
        self.transform = transform
        self.collection = collection
        self.key = key
        self.marker = marker
        self.partition = partition
        self.tracking = tracking(update)

    def ensure(self) -> None:
        self.coll.create_index(
            [
                ("run_id", ASCENDING),
                ("datastore", ASCENDING),
                ("key", ASCENDING),
                ("state", ASCENDING),
                ("seq", DESCENDING),
            ],
            name="convoy_undo_open",
        )

    def entry_id(self, doc_id: Any, run_id: str | None = None) -> Doc:
        return {"run": run_id or self.ctx.run_id, "key": self.key, "doc": doc_id}

    def stamp_after(self) -> Any:
        """The ``after`` expression a pipeline's stamp stores (``None`` for operator updates)."""
        t = self.tracking
        if t.capture != "stamp":
            return None
        if t.fields is None:
            return "$$ROOT"
        return {f: f"${f}" for f in t.fields}

    def record_before(self, docs: Sequence[Doc], batch: int) -> None:
        """Upsert the before-images of ``docs`` (written before the documents change)."""
        t = self.tracking
        now = utcnow()
        ops = []
        for doc in docs:
            before = _image(doc, t.fields, self.cfg.marker_prefix)
            fields: Doc = {"before": before, "seq": batch, "state": "pending", "updated": now}
            if t.fields is not None:
                fields["before_absent"] = [f for f in t.fields if f not in before]
            if t.planned is not None:
                fields["planned"] = t.planned
            ops.append(
                UpdateMany(
                    {"_id": self.entry_id(doc["_id"])},
                    {
                        "$set": fields,
                        "$unset": {"after": "", "after_absent": "", "reason": ""},
                        "$setOnInsert": {
                            "run_id": self.ctx.run_id,
                            "policy": self.ctx.policy_name,
                            "datastore": self.ctx.datastore.name,
                            "transform": self.transform,
                            "key": self.key,
                            "collection": self.collection,
                            "marker": self.marker,
                            "interval": self.ctx.interval_key,
                            "partition": self.partition,
                            "doc": doc["_id"],
                            "fields": None if t.fields is None else list(t.fields),
                            "capture": t.capture,
                            "created": now,
                        },
                    },
                    upsert=True,
                )
            )
        if ops:
            # UpdateMany on a unique _id writes one entry; one bulk per batch keeps it fast.
            self.coll.bulk_write(ops, ordered=False)

    def _after(self, row: Mapping[str, Any], *, live: bool) -> Doc | None:
        """After-values of a stamped document; ``None`` when they can no longer be known."""
        t = self.tracking
        if t.capture == "stamp":
            stamp = row.get(self.marker)
            raw = stamp.get("after") if isinstance(stamp, Mapping) else None
            if not isinstance(raw, Mapping):
                return None
            return _image(raw, t.fields, self.cfg.marker_prefix)
        if t.capture == "static":
            assert t.planned is not None
            return dict(t.planned)
        if not live:
            return None
        return _image(row, t.fields, self.cfg.marker_prefix)

    def _after_update(self, row: Mapping[str, Any], *, live: bool) -> Doc:
        after = self._after(row, live=live)
        if after is None:
            return {"$set": {"state": "unknown", "updated": utcnow()}}
        fields: Doc = {"after": after, "state": "applied", "updated": utcnow()}
        if self.tracking.fields is not None:
            fields["after_absent"] = [f for f in self.tracking.fields if f not in after]
        return {"$set": fields}

    def _projection(self) -> Doc | None:
        t = self.tracking
        if t.capture == "read":
            if t.fields is None:
                return None
            return {**dict.fromkeys(t.fields, 1), self.marker: 1}
        return {self.marker: 1}

    def record_after(self, target: Collection[Doc], ids: Sequence[Any], batch: int) -> int:
        """Log the after-values of the batch's updated documents; returns how many were updated.

        Entries of documents the update skipped (changed since they were read)
        are dropped: the next pass logs them again if they still match.
        """
        rows = list(
            target.find(
                {
                    "_id": {"$in": list(ids)},
                    f"{self.marker}.run": self.ctx.run_id,
                    f"{self.marker}.batch": batch,
                },
                self._projection(),
            )
        )
        ops = [
            UpdateMany({"_id": self.entry_id(r["_id"])}, self._after_update(r, live=True))
            for r in rows
        ]
        if ops:
            self.coll.bulk_write(ops, ordered=False)
        updated = {canonical({"v": r["_id"]}) for r in rows}
        rest = [i for i in ids if canonical({"v": i}) not in updated]
        if rest:
            # Still there but not stamped: changed by others since read, so not updated.
            # A deleted one keeps its entry (revert counts it as gone).
            present = [d["_id"] for d in target.find({"_id": {"$in": rest}}, {"_id": 1})]
            skipped = [self.entry_id(i) for i in present]
            if skipped:
                self.coll.delete_many({"_id": {"$in": skipped}, "state": "pending", "seq": batch})
        return len(rows)

    def recover(self, target: Collection[Doc], scope: Doc, batches: int) -> int:
        """After a kill: log the after-values of documents stamped by the batch whose checkpoint
        was lost (``batch > batches``); returns how many there are.

        A pipeline's after-values are in its stamp and a literal ``$set``'s are
        known; for other operator updates they can no longer be told apart from
        later application writes, so those entries become ``unknown`` (revert
        leaves such documents alone and lists them as conflicts).
        """
        proj = {self.marker: 1} if self.tracking.capture == "read" else self._projection()
        rows = list(
            target.find({"$and": [scope, {f"{self.marker}.batch": {"$gt": batches}}]}, proj)
        )
        ops = []
        for r in rows:
            stamp = r.get(self.marker)
            run_id = str(stamp.get("run")) if isinstance(stamp, Mapping) else None
            ops.append(
                UpdateMany(
                    {"_id": self.entry_id(r["_id"], run_id), "state": "pending"},
                    self._after_update(r, live=False),
                )
            )
        if ops:
            self.coll.bulk_write(ops, ordered=False)
        return len(rows)


# -- revert ----------------------------------------------------------------------------
@dataclass
class UndoOutcome:
    """What a revert did with the undo log (summed over transforms)."""

    restored: int = 0
    conflicting: int = 0
    gone: int = 0
    conflicts: list[str] = field(default_factory=list)
    transforms: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class OpenTransform:
    """A transform of the run with undo entries still to revert."""

    transform: str
    key: str
    collection: str
    marker: str
    entries: int


def open_transforms(db: Database[Doc], cfg: MongoConfig, ctx: RunContext) -> list[OpenTransform]:
    """The run's transforms with open undo entries, newest (last declared) first."""
    if cfg.undo_collection not in db.list_collection_names():
        return []
    undo = db[cfg.undo_collection]
    base = {"run_id": ctx.run_id, "datastore": ctx.datastore.name}
    found = []
    for key in sorted(undo.distinct("key", {**base, "state": {"$in": list(OPEN_STATES)}})):
        query = {**base, "key": key, "state": {"$in": list(OPEN_STATES)}}
        first = undo.find_one(query, {"transform": 1, "collection": 1, "marker": 1})
        if first is None:
            continue
        found.append(
            OpenTransform(
                str(first["transform"]),
                str(key),
                str(first["collection"]),
                str(first["marker"]),
                undo.count_documents(query),
            )
        )
    order = [t.name for t in ctx.datastore.transforms]

    def position(t: OpenTransform) -> int:
        return order.index(t.transform) if t.transform in order else -1

    return sorted(found, key=lambda t: (-position(t), t.key))


@dataclass(frozen=True)
class _Decision:
    state: str  # restore | restored | conflict | gone | skipped
    reason: str = ""
    update: Doc | None = None


def _decide(entry: Mapping[str, Any], doc: Doc | None, prefix: str) -> _Decision:
    fields = entry.get("fields")
    marker = str(entry["marker"])
    before = dict(entry.get("before") or {})
    after: Doc | None = entry.get("after")
    stamp = doc.get(marker) if doc is not None else None
    ours = (
        isinstance(stamp, Mapping)
        and stamp.get("run") == entry["_id"]["run"]
        and stamp.get("batch") == entry.get("seq")
    )
    if doc is None:
        return _Decision("gone", "deleted by others")
    if after is None and entry["state"] == "pending" and not ours:
        return _Decision("skipped", "convoy's update did not change the document")
    if after is None and ours:
        if entry.get("capture") == "stamp" and isinstance(stamp, Mapping):
            raw = stamp.get("after")
            after = _image(raw, fields, prefix) if isinstance(raw, Mapping) else None
        elif entry.get("capture") == "static":
            after = dict(entry.get("planned") or {})
    current = _image(doc, fields, prefix)
    if _same(current, before):
        return _Decision("restored")
    if after is None:
        return _Decision(
            "conflict", "after-values lost (killed between the update and its log): left as is"
        )
    if not _same(current, after):
        return _Decision("conflict", "changed by others after convoy's update: left as is")
    update: Doc = {"$unset": {marker: ""}}
    if before:
        update["$set"] = before
    for f in current:
        if f not in before:
            update["$unset"][f] = ""
    return _Decision("restore", update=update)


def revert_transforms(
    db: Database[Doc],
    cfg: MongoConfig,
    ctx: RunContext,
    lock: MongoLock,
    fault: FaultHook | None = None,
    on_transform: Callable[[], object] | None = None,
) -> UndoOutcome:
    """Restore the before-images of the run's transforms (see module doc)."""
    out = UndoOutcome()
    undo = db[cfg.undo_collection]
    for t in open_transforms(db, cfg, ctx):
        coll = db[t.collection]
        counts = {"restored": 0, "conflict": 0, "gone": 0, "skipped": 0}
        batch_no = 0
        while True:
            lock.check()
            entries = list(
                undo.find(
                    {
                        "run_id": ctx.run_id,
                        "datastore": ctx.datastore.name,
                        "key": t.key,
                        "state": {"$in": list(OPEN_STATES)},
                    }
                )
                .sort([("seq", DESCENDING), ("_id", ASCENDING)])
                .limit(cfg.undo_batch_size)
            )
            if not entries:
                break
            batch_no += 1
            final = _revert_batch(coll, entries, cfg.marker_prefix, fault, t, batch_no)
            now = utcnow()
            undo.bulk_write(
                [
                    UpdateMany(
                        {"_id": e["_id"]},
                        {"$set": {"state": d.state, "reason": d.reason, "reverted_on": now}},
                    )
                    for e, d in zip(entries, final, strict=True)
                ],
                ordered=False,
            )
            for e, d in zip(entries, final, strict=True):
                counts[d.state] += 1
                if d.state == "conflict" and len(out.conflicts) < MAX_LISTED:
                    out.conflicts.append(f"{t.collection}:{id_text(e['doc'])}")
        if t.collection in db.list_collection_names():
            # Stamps left by a transform that never finished are convoy's, never the app's.
            coll.update_many({f"{t.marker}.run": ctx.run_id}, {"$unset": {t.marker: ""}})
        out.restored += counts["restored"]
        out.conflicting += counts["conflict"]
        out.gone += counts["gone"]
        out.transforms.append(t.transform)
        ctx.log(
            f"{ctx.datastore.name}/{t.transform}: {counts['restored']} documents restored to "
            f"their before-image, {counts['conflict']} left as others changed them "
            f"(conflicts), {counts['gone']} deleted by others, {counts['skipped']} unchanged"
        )
        if on_transform is not None:
            on_transform()
    return out


def _revert_batch(
    coll: Collection[Doc],
    entries: Sequence[Doc],
    prefix: str,
    fault: FaultHook | None,
    t: OpenTransform,
    batch_no: int,
) -> list[_Decision]:
    """Decide and restore one batch; a document changed under the write is looked at again."""
    final: dict[int, _Decision] = {}
    todo = list(range(len(entries)))
    for attempt in range(CAS_ATTEMPTS + 1):
        docs = {
            canonical({"v": d["_id"]}): d
            for d in coll.find({"_id": {"$in": [entries[i]["doc"] for i in todo]}})
        }
        ops = []
        waiting = []
        for i in todo:
            doc = docs.get(canonical({"v": entries[i]["doc"]}))
            d = _decide(entries[i], doc, prefix)
            if d.state != "restore":
                final[i] = d
            elif attempt == CAS_ATTEMPTS:
                final[i] = _Decision("conflict", "kept changing while being reverted: left as is")
            else:
                assert doc is not None
                assert d.update is not None
                ops.append(UpdateMany(unchanged_since_read(doc), d.update))
                waiting.append(i)
        if not ops:
            break
        if fault is not None and attempt == 0:
            fault("revert.before_restore", {"transform": t.transform, "batch": batch_no})
        result = coll.bulk_write(ops, ordered=False)
        if fault is not None and attempt == 0:
            fault("revert.after_restore", {"transform": t.transform, "batch": batch_no})
        if result.matched_count == len(ops):
            final.update((i, _Decision("restored")) for i in waiting)
            break
        todo = waiting  # some changed between the read and the write: look again
    return [final[i] for i in range(len(entries))]
