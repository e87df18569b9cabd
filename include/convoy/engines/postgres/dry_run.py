"""Dry runs that change nothing, by construction rather than by care.

Every statement of a dry run (and of the stages that only read: partitions,
plan, history) runs inside one transaction that is always rolled back, from
the session's first statement to its last; where the stage has nothing to
try, that transaction is ``READ ONLY``. A read-only transaction also refuses
what a rollback would not undo: ``nextval()`` on a sequence, and any write by
a function an author's ``where``/``set`` calls (``SET TRANSACTION READ ONLY``
cannot be lifted once a query ran, so such a function cannot switch it off
either). The datastore lock of a dry run is transaction-scoped: the rollback
releases it, so no unlock statement is needed after an error.

What a dry run deliberately *tries* (pending migrations, the first transform
batch) runs read-write inside the same rolled-back transaction. Only effects
PostgreSQL never rolls back could outlive it: sequence values a migration
draws, work a migration hands to another connection (``dblink``). A
transform's author expressions are first evaluated read-only on the rows of
that batch, so they are known not to write before the batch is tried.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from convoy.engines.errors import EngineError
from convoy.engines.postgres.locks import AdvisoryLock
from convoy.engines.postgres.sql import Conn


class WriteRefused(EngineError):
    """A statement of a read-only transaction tried to write (sequence, table, DDL)."""

    def __init__(self, what: str, message: str) -> None:
        self.what = what
        self.message = message
        super().__init__(
            f"{what}: a statement tried to write and was refused ({message}); a dry run, "
            "partitioning and the evaluation of where/set expressions change nothing, so an "
            "expression (or a function it calls) that writes to the database is an error"
        )


@contextmanager
def rolled_back(conn: Conn, what: str, *, read_only: bool = True) -> Iterator[None]:
    """One transaction (a savepoint inside another) that is always rolled back.

    With ``read_only`` it is ``READ ONLY`` from its first statement, and a
    write attempt becomes :class:`WriteRefused`.
    """
    try:
        with conn.transaction(force_rollback=True):
            if read_only:
                conn.execute("SET TRANSACTION READ ONLY")
            yield
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        message = exc.diag.message_primary or str(exc).splitlines()[0]
        raise WriteRefused(what, message) from exc


class TransactionLock(AdvisoryLock):
    """The datastore lock held for one transaction (``pg_try_advisory_xact_lock``).

    Polled like :class:`AdvisoryLock` (same keys, so it waits for a run that
    holds the session lock); the end of the transaction releases it.
    """

    def _try(self) -> bool:
        fn = "pg_try_advisory_xact_lock_shared" if self.shared else "pg_try_advisory_xact_lock"
        row = self.conn.execute(f"SELECT {fn}(%s)", [self.key]).fetchone()
        return bool(row and row[0])

    def release(self) -> None:
        self.held = False
