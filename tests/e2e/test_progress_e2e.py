"""A running transform's ``progress`` XCom, read by the Upgrades page while the task runs.

``dag.test()`` against the real embedded PostgreSQL. The transform is held
after its first batch by its own throttle: another session has waited for a
lock longer than ``max_lock_wait_s``, so the transform pauses until that wait
ends. While it is paused, a reader thread reads the run through the page's
own code (``convoy.ui.airflow_runs.fetch_runs`` + ``summarize_run``) and only
then ends the lock wait. Nothing depends on timing: the transform cannot
finish before the reader let it.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from e2e_helpers import load_dag, states

pytestmark = pytest.mark.e2e

ROWS, BATCH = 3000, 100
TASK = "datastore_orders.transform_fill-status"
#: The engine's default ``max_lock_wait_s`` is 5 s; the wait must be older than that.
LOCK_WAIT_S = 6.0


def _policy(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {"name": name, "owner": "platform"},
        "schedule": None,
        "startDate": "2026-01-01",
        "execution": "local",
        "kubernetes": {"namespace": "shop", "runnerImage": "registry.example.com/convoy:0.1.0"},
        "rollout": {"progressDeadlineSeconds": 10},
        "services": [
            {"name": "redis", "workload": {"kind": "StatefulSet", "name": "redis-cart"},
             "containers": {"redis": "registry.example.com/redis:2.4.0"}},
        ],
        "datastores": [
            {"name": "orders", "type": "postgres", "connId": "orders_db", "after": [],
             "backup": "snapshot",
             "transforms": [
                 {"name": "fill-status", "table": "public.orders", "key": "id",
                  "batchSize": BATCH, "where": "status IS NULL", "set": {"status": "'open'"}},
             ]},
        ],
    }  # fmt: skip


class LockWait:
    """Session A holds a lock that session B waits for, until :meth:`release`."""

    def __init__(self, uri: str) -> None:
        self.holder = psycopg.connect(uri)
        self.holder.execute("CREATE TABLE IF NOT EXISTS progress_blocker (id int)")
        self.holder.commit()
        self.holder.execute("LOCK TABLE progress_blocker IN ACCESS EXCLUSIVE MODE")
        self.waiter = psycopg.connect(uri, autocommit=True)
        self._thread = threading.Thread(
            target=lambda: self.waiter.execute("SELECT count(*) FROM progress_blocker"),
            daemon=True,
        )
        self._thread.start()
        self._released = threading.Event()

    def oldest_wait_s(self) -> float:
        with psycopg.connect(self.holder.info.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT coalesce(max(extract(epoch FROM now() - waitstart)), 0)::float8"
                " FROM pg_locks WHERE NOT granted"
            ).fetchone()
        return float(row[0]) if row else 0.0

    def release(self) -> None:
        if not self._released.is_set():
            self._released.set()
            self.holder.rollback()

    def close(self) -> None:
        self.release()
        self._thread.join(timeout=30)
        self.holder.close()
        self.waiter.close()


def _rows_done(uri: str) -> int:
    try:
        with psycopg.connect(uri, autocommit=True) as conn:
            row = conn.execute(
                "SELECT coalesce(max(rows_done), 0) FROM convoy.transform_checkpoints"
            ).fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(row[0]) if row else 0


def _read_while_paused(
    dag_id: str, orders_uri: str, lock: LockWait, seen: dict[str, Any], timeout: float = 240.0
) -> None:
    """Wait for the first committed batch, read the page's data, then let the transform go."""
    from convoy.ui.airflow_runs import fetch_runs
    from convoy.ui.runs import summarize_run

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and _rows_done(orders_uri) == 0:
            time.sleep(0.2)
        # The transform is paused by the throttle now; its push follows the
        # batch's commit within the same loop iteration.
        while time.monotonic() < deadline:
            runs = fetch_runs([dag_id]).get(dag_id) or []
            if runs:
                record = runs[0]
                view = summarize_run(record, now=dt.datetime.now(dt.UTC))
                found = [p for p in view.task_progress if p.label.startswith("orders/fill-status")]
                if found:
                    seen["record"], seen["view"], seen["progress"] = record, view, found[0]
                    return
            time.sleep(0.2)
    except Exception as exc:  # reported by the test, after the run ends
        seen["error"] = repr(exc)
    finally:
        seen["rows_when_read"] = _rows_done(orders_uri)
        lock.release()


def test_running_transform_shows_its_progress_before_it_finishes(
    cluster: Any,
    pg_database: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The page's readers, imported here: a thread importing Airflow modules while
    # dag.test() imports others can deadlock on the import locks.
    import airflow.models.dagrun
    import airflow.models.taskinstance
    import airflow.models.xcom
    import airflow.utils.session  # noqa: F401

    import convoy.ui.airflow_runs  # noqa: F401
    from convoy.policy import load_policy

    root = tmp_path / "policies"
    root.mkdir()
    monkeypatch.setenv("CONVOY_POLICIES_DIR", str(root))
    monkeypatch.setenv("CONVOY_MAX_PARTITIONS", "1")
    monkeypatch.setenv("CONVOY_RUNS_DIR", str(tmp_path / "runs"))
    orders = pg_database("orders_db")
    with psycopg.connect(orders, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.orders (id bigint PRIMARY KEY, status text)")
        conn.execute("INSERT INTO public.orders SELECT g FROM generate_series(1, %s) g", (ROWS,))
    path = root / "pg-progress.yaml"
    path.write_text(yaml.safe_dump(_policy("pg-progress"), sort_keys=False))
    cluster.seed_from_policy(load_policy(path).policy, previous_tag="2.3.0")
    dag = load_dag("pg-progress")

    lock = LockWait(pg_database("blocker_db"))
    seen: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 60
        while lock.oldest_wait_s() < LOCK_WAIT_S:
            assert time.monotonic() < deadline, "the lock wait never showed in pg_locks"
            time.sleep(0.2)
        reader = threading.Thread(
            target=_read_while_paused, args=("pg-progress", orders, lock, seen), daemon=True
        )
        reader.start()
        run = dag.test()
        reader.join(timeout=30)
    finally:
        lock.close()

    assert run.state == "success", states(run)
    assert "error" not in seen, seen["error"]
    assert "progress" in seen, f"no progress of a running transform seen: {seen}"
    # Read while the task was running, before it finished its work.
    record = seen["record"]
    assert {t.state for t in record.tasks if t.task_id == TASK} == {"running"}
    raw = record.progress[f"{TASK}[0]"]
    assert 0 < raw["done"] < raw["total"] == ROWS
    assert raw["done"] <= seen["rows_when_read"] < ROWS
    assert raw["pct"] == pytest.approx(100.0 * raw["done"] / ROWS, abs=0.1)
    assert raw["rate"] > 0
    assert raw["eta_seconds"] is not None
    assert dt.datetime.fromisoformat(raw["updated_at"]).tzinfo is not None
    shown = seen["progress"]
    assert (shown.done, shown.total, shown.unit) == (raw["done"], ROWS, "rows")
    assert "ETA" in shown.text
    # Once finished, the XCom holds the final count.
    (ti,) = [t for t in run.get_task_instances() if t.task_id == TASK]
    final = ti.xcom_pull(task_ids=TASK, key="progress", map_indexes=0)
    assert (final["done"], final["total"], final["eta_seconds"]) == (ROWS, ROWS, 0)
