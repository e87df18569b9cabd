"""Advisory locks: one writer per datastore, waiting up to a timeout.

Session-level ``pg_try_advisory_lock(bigint)`` polled until the timeout, so a
waiting run never blocks inside the server and can say who holds the lock
(pid and ``application_name`` from ``pg_locks``/``pg_stat_activity``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

from convoy.engines.errors import LockHolder, LockTimeout
from convoy.engines.locking import ScopedLock
from convoy.engines.postgres.sql import Conn

T = TypeVar("T")

#: Tries of a transaction that gave up waiting for a row or table lock (``lock_timeout``).
LOCK_TIMEOUT_TRIES = 5


def retry_lock_timeouts(
    attempt: Callable[[], T], *, on_retry: Callable[[int], None] | None = None
) -> T:
    """``attempt()`` (one transaction), again with backoff when it hit ``lock_timeout``.

    The application's open transactions hold the locks a batch or a
    ``CREATE TRIGGER`` waits for; a short ``lock_timeout`` retried keeps
    convoy from queueing the application's writers behind it.
    """
    for n in range(LOCK_TIMEOUT_TRIES):
        try:
            return attempt()
        except psycopg.errors.LockNotAvailable:
            if n == LOCK_TIMEOUT_TRIES - 1:
                raise
            if on_retry is not None:
                on_retry(n)
            time.sleep(min(5.0, 0.2 * 2**n))
    raise AssertionError("unreachable")  # pragma: no cover


_HOLDERS = """
SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.usename::text, ''),
       coalesce(a.state, '')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid
  AND l.pid <> pg_backend_pid()
ORDER BY a.pid
"""


def lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key from the hash of ``parts``."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_holders(conn: Conn, key: int) -> list[LockHolder]:
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    rows = conn.execute(_HOLDERS, [unsigned >> 32, unsigned & 0xFFFF_FFFF]).fetchall()
    return [LockHolder(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]


class AdvisoryLock(ScopedLock):
    """``with AdvisoryLock(conn, name, ...):`` holds the session lock ``name``.

    ``conn`` must be in autocommit mode and is the connection that then does
    the work (the lock lives as long as the session).
    """

    def __init__(
        self,
        conn: Conn,
        name: str,
        *,
        timeout_s: float,
        poll_s: float = 0.5,
        shared: bool = False,
        log: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conn = conn
        self.name = name
        self.key = lock_key(name)
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.shared = shared
        self._log = log
        self._clock = clock
        self.held = False

    def _try(self) -> bool:
        fn = "pg_try_advisory_lock_shared" if self.shared else "pg_try_advisory_lock"
        row = self.conn.execute(f"SELECT {fn}(%s)", [self.key]).fetchone()
        return bool(row and row[0])

    def acquire(self) -> None:
        start = self._clock()
        warned = False
        while not self._try():
            waited = self._clock() - start
            if waited >= self.timeout_s:
                raise LockTimeout(self.name, waited, lock_holders(self.conn, self.key))
            if not warned and self._log is not None:
                who = ", ".join(h.describe() for h in lock_holders(self.conn, self.key))
                self._log(
                    f"lock {self.name!r} is held by {who or 'another session'}; "
                    f"waiting up to {self.timeout_s:.0f}s"
                )
                warned = True
            time.sleep(min(self.poll_s, max(0.0, self.timeout_s - waited)))
        self.held = True

    def release(self) -> None:
        if self.held and not self.conn.closed:
            fn = "pg_advisory_unlock_shared" if self.shared else "pg_advisory_unlock"
            self.conn.execute(f"SELECT {fn}(%s)", [self.key])
        self.held = False
