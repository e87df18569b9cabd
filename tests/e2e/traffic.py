"""Live application traffic on a PostgreSQL table during a convoy run, and its audit.

:class:`AppWriter` is the application: a thread with its own autocommit
connection that keeps committing small writes to ``public.orders`` (``id``,
``amount`` and, once a migration added it, ``status``) while a DAG runs, as an
old client that knows nothing of ``status`` on INSERT. It logs a write only
once its commit returned, with the row as it was just before (read under the
row lock in the same statement), so the log is the application's truth in
commit order.

:func:`verify` replays that log on the table as it was before the run and
compares the result with the database after the rollback: every committed
write must be there as written, every row must be back to its before-image
except where the application wrote, and nothing convoy wrote may be left.
The expected conflicts are the rows whose ``status`` the application changed
while it held a value convoy had written.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psycopg

Op = Literal["insert", "set_amount", "set_status", "delete"]

#: What the application writes into ``status``; the transform never writes it.
APP_STATUS = "cancelled"
#: (operation, weight) of the application's mix.
MIX: tuple[tuple[Op, int], ...] = (
    ("insert", 3),
    ("set_amount", 3),
    ("set_status", 2),
    ("delete", 2),
)
#: Keys of rows the application inserts start here, above every seeded key.
FIRST_NEW_KEY = 1_000_001


@dataclass(frozen=True)
class Write:
    """One committed application write."""

    seq: int
    op: Op
    key: int
    #: ``amount`` of an insert/set_amount, ``status`` of a set_status.
    value: Any
    #: The row (``to_jsonb``) just before the write; ``None`` for an insert, or
    #: when the row the application believed present was not there.
    before: Mapping[str, Any] | None
    #: Wall clock (epoch seconds) right after the commit.
    at: float


def read_rows(conninfo: str) -> dict[int, dict[str, Any]]:
    """Every row of ``public.orders`` as ``{id: to_jsonb(row)}``."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("SELECT id, to_jsonb(o) FROM public.orders o").fetchall()
    return {int(k): dict(v) for k, v in rows}


class AppWriter:
    """The application writer thread (see module docstring).

    Its session has a short ``lock_timeout``/``statement_timeout``: while convoy
    holds a lock the write needs (a migration, a revert batch) it fails fast and
    is simply not logged, so the application never holds convoy up. It stops by
    itself after ``max_seconds`` or ``max_writes``; :meth:`stop` ends it sooner.
    """

    def __init__(
        self,
        conninfo: str,
        keys: Iterable[int],
        *,
        rate: float = 200.0,
        max_seconds: float = 300.0,
        max_writes: int = 60_000,
        seed: int = 7,
        lock_timeout_ms: int = 50,
        statement_timeout_ms: int = 2000,
    ) -> None:
        self.conninfo = conninfo
        self.rate = rate
        self.max_seconds = max_seconds
        self.max_writes = max_writes
        self.lock_timeout_ms = lock_timeout_ms
        self.statement_timeout_ms = statement_timeout_ms
        self.writes: list[Write] = []
        #: Failed attempts by SQLSTATE (or exception type): not logged as writes.
        self.failures: Counter[str] = Counter()
        #: An unexpected exception that ended the thread.
        self.crash: BaseException | None = None
        self.started_at = 0.0
        self.stopped_at = 0.0
        self._rng = random.Random(seed)
        self._live: list[int] = list(keys)
        self._pos = {k: i for i, k in enumerate(self._live)}
        #: Rows whose status the application set: never deleted, so that the
        #: expected conflicts do not depend on whether a delete came before or
        #: after the revert reached the row.
        self._status_owned: set[int] = set()
        self._next_key = FIRST_NEW_KEY
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="app-writer", daemon=True)
        self._conn: psycopg.Connection[Any] | None = None

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> AppWriter:
        self._conn = self._connect()
        self.started_at = time.time()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> AppWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def commits_per_second(self) -> float:
        end = self.stopped_at or time.time()
        return len(self.writes) / max(end - self.started_at, 1e-9)

    def count(self, start: float, end: float) -> int:
        """Writes committed in ``[start, end]`` (epoch seconds)."""
        return sum(1 for w in self.writes if start <= w.at <= end)

    # -- the loop ---------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.conninfo, autocommit=True, application_name="traffic-app")
        conn.execute(f"SET lock_timeout = {int(self.lock_timeout_ms)}")
        conn.execute(f"SET statement_timeout = {int(self.statement_timeout_ms)}")
        return conn

    def _run(self) -> None:
        ops = [op for op, _ in MIX]
        weights = [w for _, w in MIX]
        period = 1.0 / self.rate
        deadline = time.monotonic() + self.max_seconds
        next_at = time.monotonic()
        try:
            while len(self.writes) < self.max_writes and time.monotonic() < deadline:
                if self._stop.wait(max(0.0, next_at - time.monotonic())):
                    break
                # after a stall (a lock wait) carry on at the rate, without a burst
                next_at = max(next_at + period, time.monotonic() - period)
                op = self._rng.choices(ops, weights)[0]
                try:
                    self._write(op)
                except psycopg.Error as exc:
                    self.failures[exc.sqlstate or type(exc).__name__] += 1
                    assert self._conn is not None
                    if self._conn.closed or self._conn.broken:
                        self._conn = self._connect()
        except BaseException as exc:  # the test reports it (.crash)
            self.crash = exc
        finally:
            self.stopped_at = time.time()

    def _pick(self, *, deletable: bool = False) -> int | None:
        for _ in range(20):
            if not self._live:
                return None
            key = self._live[self._rng.randrange(len(self._live))]
            if not deletable or key not in self._status_owned:
                return key
        return None

    def _forget(self, key: int) -> None:
        i = self._pos.pop(key)
        last = self._live.pop()
        if last != key:
            self._live[i] = last
            self._pos[last] = i

    def _log(self, op: Op, key: int, value: Any, before: Mapping[str, Any] | None) -> None:
        self.writes.append(Write(len(self.writes), op, key, value, before, time.time()))

    def _write(self, op: Op) -> None:
        conn = self._conn
        assert conn is not None
        if op == "insert":
            self._insert(conn)
        elif op == "delete":
            self._delete(conn)
        else:
            self._update(conn, op)

    def _insert(self, conn: psycopg.Connection[Any]) -> None:
        key, amount = self._next_key, self._rng.randrange(1000, 2000)
        # an old client: it does not know the status column
        conn.execute("INSERT INTO public.orders (id, amount) VALUES (%s, %s)", [key, amount])
        self._next_key += 1
        self._live.append(key)
        self._pos[key] = len(self._live) - 1
        self._log("insert", key, amount, None)

    def _delete(self, conn: psycopg.Connection[Any]) -> None:
        key = self._pick(deletable=True)
        if key is None:
            return
        row = conn.execute(
            "DELETE FROM public.orders o WHERE id = %s RETURNING to_jsonb(o)", [key]
        ).fetchone()
        self._forget(key)
        self._log("delete", key, None, None if row is None else row[0])

    def _update(self, conn: psycopg.Connection[Any], op: Op) -> None:
        key = self._pick()
        if key is None:
            return
        value: Any
        if op == "set_amount":
            column, value = "amount", self._rng.randrange(2000, 3000)
        else:
            column, value = "status", APP_STATUS
        # One statement, one round trip: the row is locked and read (the newest
        # version, whoever committed it) before it is updated.
        row = conn.execute(
            "WITH old AS (SELECT id, to_jsonb(o) AS row FROM public.orders o"
            " WHERE id = %s FOR UPDATE)"
            f" UPDATE public.orders n SET {column} = %s FROM old WHERE n.id = old.id"
            " RETURNING old.row",
            [key, value],
        ).fetchone()
        if op == "set_status":
            self._status_owned.add(key)
        self._log(op, key, value, None if row is None else row[0])


# --------------------------------------------------------------------------- the audit


@dataclass
class Verdict:
    """What survived of the application's writes, and what convoy left behind."""

    writes: int
    survived: int
    #: ``status`` writes whose column an undo file dropped (by design, not lost).
    dropped_with_column: int
    has_status: bool
    lost: list[str] = field(default_factory=list)
    #: Rows the application never wrote that are not back to their before-image.
    not_reverted: list[str] = field(default_factory=list)
    #: Rows present that the application deleted, or that never existed.
    unexpected: list[str] = field(default_factory=list)
    #: Rows whose ``status`` the application changed while it held convoy's value.
    expected_conflicts: set[int] = field(default_factory=set)
    #: Rows the application deleted while they held convoy's value.
    expected_gone: set[int] = field(default_factory=set)

    def problems(self) -> list[str]:
        out: list[str] = []
        for title, items in (
            ("application writes lost", self.lost),
            ("rows not back to their before-image", self.not_reverted),
            ("rows that should not exist", self.unexpected),
        ):
            if items:
                shown = "; ".join(items[:15])
                more = f" (and {len(items) - 15} more)" if len(items) > 15 else ""
                out.append(f"{len(items)} {title}: {shown}{more}")
        return out

    def summary(self) -> str:
        line = (
            f"the application committed {self.writes} writes during the run; "
            f"{self.survived} survive the rollback"
        )
        if self.dropped_with_column:
            line += (
                f", {self.dropped_with_column} more set status, "
                "a column the rollback's undo file drops"
            )
        return line


def _row_text(key: int, row: Mapping[str, Any] | None) -> str:
    return f"{key}={json.dumps(row, sort_keys=True) if row is not None else 'absent'}"


def verify(
    conninfo: str,
    initial: Mapping[int, Mapping[str, Any]],
    writes: list[Write],
    convoy_values: Iterable[str],
) -> Verdict:
    """Replay ``writes`` on ``initial`` (the table before the run) and audit the table now.

    ``convoy_values``: every value the transform writes into ``status``.
    """
    convoy = set(convoy_values)
    expected: dict[int, dict[str, Any]] = {
        k: {"amount": r["amount"], "status": None} for k, r in initial.items()
    }
    touched: set[int] = set()
    conflicts: set[int] = set()
    gone: set[int] = set()
    for w in writes:
        touched.add(w.key)
        held_convoys = w.before is not None and w.before.get("status") in convoy
        if w.op == "insert":
            expected[w.key] = {"amount": w.value, "status": None}
        elif w.op == "delete":
            expected.pop(w.key, None)
            if held_convoys:
                gone.add(w.key)
        elif w.key in expected:
            column = "amount" if w.op == "set_amount" else "status"
            expected[w.key][column] = w.value
            if w.op == "set_status" and held_convoys:
                conflicts.add(w.key)
    actual = read_rows(conninfo)
    with psycopg.connect(conninfo) as conn:
        has_status = (
            conn.execute(
                "SELECT 1 FROM pg_attribute WHERE attrelid = 'public.orders'::regclass"
                " AND attname = 'status' AND NOT attisdropped"
            ).fetchone()
            is not None
        )

    def agrees(key: int, column: str | None) -> bool:
        want, have = expected.get(key), actual.get(key)
        if want is None or have is None:
            return want is None and have is None
        return column is None or want[column] == have.get(column)

    verdict = Verdict(
        len(writes), 0, 0, has_status, expected_conflicts=conflicts, expected_gone=gone
    )
    for w in writes:
        if w.op == "set_status" and not has_status:
            verdict.dropped_with_column += 1
            continue
        checked = {"insert": "amount", "set_amount": "amount", "set_status": "status"}.get(w.op)
        if agrees(w.key, checked):
            verdict.survived += 1
        else:
            verdict.lost.append(
                f"#{w.seq} {w.op} {w.key}={w.value!r} -> now {_row_text(w.key, actual.get(w.key))}"
            )
    for key in sorted(expected.keys() | actual.keys()):
        want, have = expected.get(key), actual.get(key)
        if want is None:
            verdict.unexpected.append(_row_text(key, have))
            continue
        if have is None:
            if key not in touched:  # else its writes are counted lost above
                verdict.not_reverted.append(_row_text(key, have))
            continue
        # Untouched rows are back as they were; where the application never wrote
        # status, status is convoy's to put back (to NULL, or the column is gone).
        amount_changed = key not in touched and have["amount"] != want["amount"]
        status_left = has_status and want["status"] is None and have.get("status") is not None
        if amount_changed or status_left:
            verdict.not_reverted.append(_row_text(key, have))
    return verdict


# --------------------------------------------------------------------------- the run


def revert_result(runs_dir: Path, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    """What the run report (``report.json``) says the revert task returned."""
    safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in run_id)
    report = json.loads((runs_dir / dag_id / safe / "report.json").read_text())
    entry = report["reverts"][task_id]
    return {"state": entry["state"], **(entry["result"] or {})}


def conflict_keys(result: Mapping[str, Any]) -> list[int]:
    """Keys of ``RevertResult.conflicts`` (``<table>:<key>``)."""
    return [int(str(c).rsplit(":", 1)[1]) for c in result.get("conflicts") or ()]


def task_window(dag_run: Any, prefix: str) -> tuple[float, float] | None:
    """Epoch seconds from the first start to the last end of the run's tasks ``prefix*``."""
    tis = [ti for ti in dag_run.get_task_instances() if ti.task_id.startswith(prefix)]
    starts = [ti.start_date.timestamp() for ti in tis if ti.start_date is not None]
    if not starts:
        return None
    ends = [ti.end_date.timestamp() for ti in tis if ti.end_date is not None]
    return min(starts), max(ends) if ends else time.time()


def leftover_triggers(conninfo: str) -> list[str]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT tgname FROM pg_trigger"
            " WHERE tgrelid = 'public.orders'::regclass AND NOT tgisinternal ORDER BY 1"
        ).fetchall()
    return [str(r[0]) for r in rows]


def table_shape(conninfo: str) -> tuple[list[str], list[str]]:
    """(columns, indexes) of ``public.orders``."""
    with psycopg.connect(conninfo) as conn:
        cols = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'public.orders'::regclass"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        ).fetchall()
        idx = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
            " AND tablename = 'orders' ORDER BY 1"
        ).fetchall()
    return [str(c[0]) for c in cols], [str(i[0]) for i in idx]
