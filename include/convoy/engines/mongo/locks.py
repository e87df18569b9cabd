"""Lock documents: one writer per database (migrate/backup/revert) or per transform partition.

A lock is the document ``{_id: <name>, owner, token, acquired, expiresAt}`` in
``convoy_locks``. It is taken with **one atomic** ``find_one_and_update``
with ``upsert=True`` whose filter matches only an expired lock or our own::

    {_id: name, $or: [{expiresAt: {$lte: now}}, {token: mine}]}

- no document: the upsert inserts ours (unique ``_id``);
- a live lock of another run: the filter does not match, the upsert tries to
  insert the same ``_id`` and the server answers ``DuplicateKeyError`` -> wait
  and retry until ``lock_wait_s``, then :class:`LockTimeout` naming the owner;
- an expired lock (its run was killed): the filter matches and we take it over.

While held, a heartbeat thread renews ``expiresAt`` every ``ttl/3`` (only if
the token is still ours); long steps also call :meth:`MongoLock.check` between
writes, which raises :class:`LockLost` if the lock was taken over.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, PyMongoError

from convoy.engines.errors import LockHolder, LockTimeout
from convoy.engines.locking import ScopedLock
from convoy.engines.mongo.errors import LockLost

Now = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    """Milliseconds precision, like BSON dates."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc(value: Any) -> dt.datetime | None:
    """A BSON date read back (naive UTC unless the client is tz_aware) as aware UTC."""
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def describe_owner(doc: Mapping[str, Any] | None) -> str:
    if not doc:
        return "nobody"
    o = doc.get("owner") or {}
    expires = as_utc(doc.get("expiresAt"))
    until = expires.isoformat() if expires else "?"
    return (
        f"policy {o.get('policy')!r} run {o.get('run_id')!r} on {o.get('host')} "
        f"pid {o.get('pid')} ({o.get('stage')}), expires {until}"
    )


class MongoLock(ScopedLock):
    """``with MongoLock(collection, name, owner, ...):`` holds the lock ``name``."""

    def __init__(
        self,
        collection: Collection[dict[str, Any]],
        name: str,
        owner: Mapping[str, Any],
        *,
        ttl_s: float,
        wait_s: float,
        poll_s: float = 0.5,
        heartbeat: bool = True,
        log: Callable[[str], None] | None = None,
        now: Now = utcnow,
    ) -> None:
        self.collection = collection
        self.name = name
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), **owner}
        self.token = uuid.uuid4().hex
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.poll_s = poll_s
        self._heartbeat_enabled = heartbeat
        self._log = log
        self._now = now
        self.held = False
        self.lost: str | None = None
        self.took_over: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- acquire / release ---------------------------------------------------
    def _try(self) -> bool:
        now = self._now()
        before = self.collection.find_one({"_id": self.name})
        try:
            self.collection.find_one_and_update(
                {"_id": self.name, "$or": [{"expiresAt": {"$lte": now}}, {"token": self.token}]},
                {
                    "$set": {
                        "owner": self.owner,
                        "token": self.token,
                        "acquired": now,
                        "expiresAt": now + dt.timedelta(seconds=self.ttl_s),
                    }
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False
        if before is not None and before.get("token") != self.token:
            self.took_over = describe_owner(before)
            if self._log is not None:
                self._log(f"lock {self.name!r}: took over the expired lock of {self.took_over}")
        return True

    def acquire(self) -> None:
        start = time.monotonic()
        warned = False
        while not self._try():
            waited = time.monotonic() - start
            holder = self.collection.find_one({"_id": self.name})
            if waited >= self.wait_s:
                raise LockTimeout(self.name, waited, [self._holder(holder)] if holder else [])
            if not warned and self._log is not None:
                self._log(
                    f"lock {self.name!r} is held by {describe_owner(holder)}; "
                    f"waiting up to {self.wait_s:.0f}s"
                )
                warned = True
            time.sleep(min(self.poll_s, max(0.0, self.wait_s - waited)))
        self.held = True
        if self._heartbeat_enabled:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._beat, name=f"convoy-lock-{self.name}", daemon=True
            )
            self._thread.start()

    @staticmethod
    def _holder(doc: Mapping[str, Any]) -> LockHolder:
        o = doc.get("owner") or {}
        expires = as_utc(doc.get("expiresAt"))
        return LockHolder(
            pid=int(o.get("pid") or 0),
            application_name=f"convoy {o.get('policy')}/{o.get('run_id')} {o.get('stage')}",
            user=str(o.get("host") or ""),
            state=f"expires {expires.isoformat() if expires else '?'}",
        )

    def renew(self) -> bool:
        """Push ``expiresAt`` forward if the lock is still ours; records a loss otherwise."""
        now = self._now()
        result = self.collection.update_one(
            {"_id": self.name, "token": self.token},
            {"$set": {"expiresAt": now + dt.timedelta(seconds=self.ttl_s)}},
        )
        if result.matched_count == 0:
            self.lost = describe_owner(self.collection.find_one({"_id": self.name}))
            return False
        return True

    def check(self) -> None:
        """Raise :class:`LockLost` if the lock was taken over (called between writes)."""
        if self.lost is None and self.held and not self._heartbeat_enabled:
            self.renew()
        if self.lost is not None:
            raise LockLost(self.name, self.lost)

    def _beat(self) -> None:
        interval = max(0.05, self.ttl_s / 3)
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    return
            except PyMongoError as exc:  # transient; the next beat retries
                if self._log is not None:
                    self._log(f"lock {self.name!r}: renewal failed: {exc}")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.held:
            self.collection.delete_one({"_id": self.name, "token": self.token})
        self.held = False
