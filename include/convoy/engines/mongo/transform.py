"""Batched, resumable transforms: ``filter`` + ``update`` in ``_id`` order, with an undo log.

One batch: read the next ``batch_size`` documents after the checkpoint that
match the filter and are not yet stamped (sorted by ``_id``, one batch in
memory), log their before-images in ``convoy_undo``, update each one with a
compare-and-set on the document as read (one ``bulk_write``), log the
after-values, then the checkpoint in ``convoy_checkpoints``
(:mod:`convoy.engines.mongo.undo` says why in this order).

Why re-applying a batch is impossible without transactions: the write and the
checkpoint are separate operations, so a kill can fall between them. Every
document the transform updates is stamped **in the same single-document
atomic update** with ``_convoy_<transform key>: {run, batch}`` (the key hashes
policy, datastore, transform and data interval). Reads and writes skip
stamped documents, so after a kill the re-run skips what the lost batch
already changed (and logs its after-values), whatever the filter says.

Writes that arrive while the transform runs: the ``_id``-ordered pass misses
documents inserted (or changed to match the filter) behind its cursor, so it
is followed by catch-up passes over the filter from the start, until a pass
finds nothing or ``catchup_passes`` passes ran; the stamps keep any document
from being updated twice. What still matches after the last pass is counted
and logged, not transformed.

When every pass is done, the stamps are removed (``$unset``), then the
checkpoint says ``done``; a kill during that cleanup just repeats it.
Multi-document transactions are deliberately not used: they need a replica
set, are bounded in time (60 s) and size, and the stamp gives the same
guarantee everywhere.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from pymongo import UpdateMany
from pymongo.database import Database

from convoy.engines.base import Partition, RunContext, TransformResult
from convoy.engines.errors import UnknownTransform
from convoy.engines.mongo.config import FaultHook, MongoConfig
from convoy.engines.mongo.documents import (
    bind_interval,
    check_transform,
    collection_name,
    decode_value,
    encode_value,
    stamp_update,
)
from convoy.engines.mongo.errors import UnknownCollection
from convoy.engines.mongo.locks import MongoLock, utcnow
from convoy.engines.mongo.undo import UndoLog, unchanged_since_read
from convoy.observe.progress import Progress
from convoy.plan.specs import MongoSpec, MongoTransformSpec

Doc = dict[str, Any]


@dataclass(frozen=True)
class TransformSpec:
    """A checked transform with its filter bound to the run's data interval."""

    name: str
    collection: str
    filter: Doc
    update: Doc | list[Doc]
    batch_size: int
    key: str
    marker: str


def find(ds: MongoSpec, name: str) -> MongoTransformSpec:
    for t in ds.transforms:
        if t.name == name:
            return t
    raise UnknownTransform(name, [t.name for t in ds.transforms])


def compile_spec(t: MongoTransformSpec, ctx: RunContext, cfg: MongoConfig) -> TransformSpec:
    """Check (JavaScript, operators, reserved fields, names) and bind the interval."""
    check_transform(t, cfg.marker_prefix)
    collection = collection_name(
        t.collection, f"transforms[{t.name}].collection", reserved_prefixes=["convoy_"]
    )
    raw = f"{ctx.policy_name}\x1f{ctx.datastore.name}\x1f{t.name}\x1f{ctx.interval_key}"
    key = hashlib.sha256(raw.encode()).hexdigest()[:16]
    return TransformSpec(
        name=t.name,
        collection=collection,
        filter=bind_interval(t.filter, ctx, t.name),
        update=t.update if isinstance(t.update, dict) else list(t.update),
        batch_size=t.batch_size,
        key=key,
        marker=f"{cfg.marker_prefix}{key}",
    )


def require_collection(db: Database[Doc], ctx: RunContext, spec: TransformSpec) -> None:
    if spec.collection not in db.list_collection_names():
        raise UnknownCollection(spec.collection, db.name, f"transforms[{spec.name}].collection")


def range_filter(partition: Partition | None) -> Doc:
    bounds: Doc = {}
    if partition is not None and partition.lower is not None:
        bounds["$gte"] = decode_value(partition.lower)
    if partition is not None and partition.upper is not None:
        bounds["$lt"] = decode_value(partition.upper)
    return {"_id": bounds} if bounds else {}


def partitions(
    db: Database[Doc], ctx: RunContext, spec: TransformSpec, max_partitions: int
) -> list[Partition]:
    """``_id`` ranges with about the same number of documents each.

    Boundaries are read from the ``_id`` index (sorted ``_id`` projection with
    ``skip``), counted on the whole collection so no filter scan is needed.
    The first and last ranges are open-ended, so documents inserted later are
    still covered. ``_id`` s are assumed to share one BSON type (range queries
    compare within a type).
    """
    require_collection(db, ctx, spec)
    coll = db[spec.collection]
    total = coll.estimated_document_count()
    n = max(1, min(max_partitions, total // max(1, spec.batch_size) or 1))
    bounds: list[str] = []
    for i in range(1, n):
        found = list(coll.find({}, {"_id": 1}).sort("_id", 1).skip(i * total // n).limit(1))
        if found:
            text = encode_value(found[0]["_id"])
            if not bounds or bounds[-1] != text:
                bounds.append(text)
    edges: list[str | None] = [None, *bounds, None]
    count = len(edges) - 1
    return [Partition(spec.name, i, count, edges[i], edges[i + 1]) for i in range(count)]


class TransformRunner:
    """Runs (or describes) one transform over one partition for one data interval."""

    def __init__(
        self,
        db: Database[Doc],
        cfg: MongoConfig,
        ctx: RunContext,
        spec: TransformSpec,
        partition: Partition | None,
        fault: FaultHook | None = None,
    ) -> None:
        self.db = db
        self.cfg = cfg
        self.ctx = ctx
        self.spec = spec
        self.partition = partition
        self.fault = fault
        self.coll = db[spec.collection]
        self.checkpoints = db[cfg.checkpoints_collection]
        self.partition_id = partition.id if partition else "all"
        self.checkpoint_id = (
            f"{ctx.policy_name}/{ctx.datastore.name}/{spec.name}/{ctx.interval_key}/"
            f"{self.partition_id}"
        )
        self.label = f"{ctx.datastore.name}/{spec.name}" + (f" {partition.id}" if partition else "")
        self.undo = UndoLog(
            db,
            cfg,
            ctx,
            transform=spec.name,
            collection=spec.collection,
            key=spec.key,
            marker=spec.marker,
            update=spec.update,
            partition=self.partition_id,
        )

    def _query(self, last: Any) -> Doc:
        clauses: list[Doc] = [self.spec.filter, {self.spec.marker: {"$exists": False}}]
        rng = range_filter(self.partition)
        if rng:
            clauses.insert(0, rng)
        if last is not None:
            clauses.insert(0, {"_id": {"$gt": last}})
        return {"$and": clauses}

    def _result(
        self,
        *,
        dry_run: bool,
        done: int,
        batches: int,
        resumed: Any,
        finished: bool,
        elapsed: float,
        matching: int | None = None,
    ) -> TransformResult:
        return TransformResult(
            datastore=self.ctx.datastore.name,
            transform=self.spec.name,
            partition=self.partition.id if self.partition else None,
            interval=self.ctx.interval_key,
            dry_run=dry_run,
            rows_done=done,
            batches=batches,
            resumed_from=None if resumed is None else encode_value(resumed),
            done=finished,
            elapsed_s=round(elapsed, 3),
            rows_matching=matching,
        )

    def dry_run(self) -> TransformResult:
        """Count what would be updated; reads only."""
        require_collection(self.db, self.ctx, self.spec)
        t0 = time.monotonic()
        matching = self.coll.count_documents(self._query(None))
        self.ctx.log(f"{self.label}: dry run, {matching} documents match")
        return self._result(
            dry_run=True,
            done=0,
            batches=0,
            resumed=None,
            finished=False,
            elapsed=time.monotonic() - t0,
            matching=matching,
        )

    def _save(self, fields: Doc) -> None:
        self.checkpoints.update_one(
            {"_id": self.checkpoint_id},
            {
                "$set": {**fields, "updated": utcnow(), "run_id": self.ctx.run_id},
                "$setOnInsert": {
                    "policy": self.ctx.policy_name,
                    "datastore": self.ctx.datastore.name,
                    "transform": self.spec.name,
                    "collection": self.spec.collection,
                    "partition": self.partition_id,
                    "interval": self.ctx.interval_key,
                    "marker": self.spec.marker,
                    "created": utcnow(),
                },
            },
            upsert=True,
        )

    def _hook(self, point: str, **details: Any) -> None:
        if self.fault is not None:
            self.fault(point, {"transform": self.spec.name, **details})

    def _passes(
        self, lock: MongoLock, progress: Progress, done: int, batches: int, last: Any, pass_no: int
    ) -> tuple[int, int, Any]:
        """The ``_id``-ordered pass, then catch-up passes; returns (docs done, batches, last id)."""
        cfg = self.cfg
        progress.set_total(done + self.coll.count_documents(self._query(last)))
        state = {"state": "running", "docs_done": done, "batches": batches}
        self._save({**state, "last_id": last, "pass": pass_no})
        found_in_pass = last is not None
        while True:
            lock.check()
            docs = list(
                self.coll.find(self._query(last)).sort("_id", 1).limit(self.spec.batch_size)
            )
            if not docs:
                if pass_no > cfg.catchup_passes or (pass_no > 1 and not found_in_pass):
                    break
                pass_no += 1
                last = None
                found_in_pass = False
                continue
            found_in_pass = True
            batch = batches + 1
            ids = [d["_id"] for d in docs]
            self._hook("transform.before_write", batch=batch, ids=len(ids), pass_no=pass_no)
            self.undo.record_before(docs, batch)
            self._hook("transform.after_images", batch=batch)
            stamp = {"run": self.ctx.run_id, "batch": batch}
            update = stamp_update(
                self.spec.update, self.spec.marker, stamp, self.undo.stamp_after()
            )
            unstamped = {self.spec.marker: {"$exists": False}}
            result = self.coll.bulk_write(
                [
                    UpdateMany(
                        {"$and": [unchanged_since_read(d), self.spec.filter, unstamped]}, update
                    )
                    for d in docs
                ],
                ordered=False,
            )
            self._hook("transform.after_update", batch=batch, matched=result.matched_count)
            changed = self.undo.record_after(self.coll, ids, batch)
            self._hook("transform.after_write", batch=batch, matched=changed)
            done += changed
            batches = batch
            last = ids[-1]
            self._save(
                {
                    "state": "running",
                    "docs_done": done,
                    "batches": batches,
                    "last_id": last,
                    "pass": pass_no,
                }
            )
            if progress.total is not None and progress.done + changed > progress.total:
                progress.set_total(progress.done + changed)
            progress.advance(changed)
        remaining = 0
        if found_in_pass or pass_no == 1:
            remaining = self.coll.count_documents(self._query(None))
        if remaining:
            self.ctx.log(
                f"{self.label}: {remaining} documents written while the transform ran still "
                f"match its filter after {pass_no - 1} catch-up passes; they are not transformed"
            )
        self._save(
            {
                "state": "stripping",
                "docs_done": done,
                "batches": batches,
                "passes": pass_no,
                "remaining": remaining,
            }
        )
        return done, batches, last

    def run(self, lock: MongoLock) -> TransformResult:
        require_collection(self.db, self.ctx, self.spec)
        t0 = time.monotonic()
        cp = self.checkpoints.find_one({"_id": self.checkpoint_id}) or {}
        done = int(cp.get("docs_done", 0))
        batches = int(cp.get("batches", 0))
        last = cp.get("last_id")
        resumed = last
        if cp.get("state") == "done":
            self.ctx.log(f"{self.label}: already done for {self.ctx.interval_key} ({done} docs)")
            return self._result(
                dry_run=False,
                done=done,
                batches=batches,
                resumed=resumed,
                finished=True,
                elapsed=time.monotonic() - t0,
            )
        self.undo.ensure()
        if cp and cp.get("state") != "stripping":
            lost = self.undo.recover(self.coll, range_filter(self.partition), batches)
            if lost:
                self.ctx.log(
                    f"{self.label}: {lost} documents were updated by a batch whose checkpoint "
                    "was lost; they are stamped and will not be updated again"
                )
                done += lost
                batches += 1  # the lost batch keeps its number in the stamps and the undo log
            self.ctx.log(f"{self.label}: resuming after {encode_value(last)} ({done} docs done)")
        progress = Progress(
            None,
            self.label,
            self.ctx.log,
            unit="docs",
            min_interval_s=self.cfg.progress_interval_s,
            done=done,
            sink=self.ctx.progress,
        )
        if cp.get("state") != "stripping":
            done, batches, last = self._passes(
                lock, progress, done, batches, last, int(cp.get("pass", 1))
            )
        self._hook("transform.before_strip")
        lock.check()
        self.coll.update_many(
            {"$and": [range_filter(self.partition), {self.spec.marker: {"$exists": True}}]},
            {"$unset": {self.spec.marker: ""}},
        )
        self._save({"state": "done", "finished": utcnow()})
        progress.finish()
        return self._result(
            dry_run=False,
            done=done,
            batches=batches,
            resumed=resumed,
            finished=True,
            elapsed=time.monotonic() - t0,
        )
