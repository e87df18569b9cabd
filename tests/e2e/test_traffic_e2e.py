"""No application write is lost to a rollback, under live traffic (PostgreSQL).

Each scenario seeds its own database with an ``orders`` table, starts the
application writer (:class:`traffic.AppWriter`: inserts by an old client that
leaves ``status`` NULL, updates of ``status`` and of ``amount``, deletes, well
over 50 commits/s) and keeps it writing through the whole DAG run and its
rollback (``dag.test()`` against the real embedded PostgreSQL and the emulated
cluster). The policy: datastore ``orders`` before the rollout (``after: []``,
``backup: snapshot``), V1 adds ``status``, V2 indexes it, the transform
``fill-status`` fills ``status`` in batches, validation checks it.

The audit (:func:`traffic.verify`) replays the application's log on the table
as it was before the run: every committed write is there as written, rows the
application deleted stay deleted, what convoy did is undone (columns and index
gone by the undo files, ``status`` back to its before-image) except on rows the
application changed after convoy did, which the revert reports as conflicts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from e2e_helpers import AIRFLOW, load_dag, states
from traffic import (
    AppWriter,
    conflict_keys,
    leftover_triggers,
    read_rows,
    revert_result,
    table_shape,
    task_window,
    verify,
)

pytestmark = pytest.mark.e2e

ROWS = 20_000
PARTITIONS = 2
PREVIOUS = "2.3.0"
V1 = "ALTER TABLE public.orders ADD COLUMN status text;\n"
U1 = "ALTER TABLE public.orders DROP COLUMN status;\n"
V2 = "CREATE INDEX orders_status_idx ON public.orders (status);\n"
U2 = "DROP INDEX public.orders_status_idx;\n"
CONVOY_VALUES = ("open", "shipped")
FILL = "CASE WHEN amount % 2 = 0 THEN 'open' ELSE 'shipped' END"
# Old clients keep inserting rows without a status until they are upgraded too:
# a few rows inserted after the transform are NULL.
NOT_NULL = {"expect_column_values_to_not_be_null": {"column": "status", "mostly": 0.99}}
REVERT = "rollback.revert_data_orders"
TRANSFORM = "datastore_orders.transform_fill-status"


def _policy(
    name: str, *, crashloop: bool, batch_size: int, expectations: list[Any]
) -> dict[str, Any]:
    cart = "registry.example.com/cart:2.4.0" + ("-crashloop" if crashloop else "")
    return {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {"name": name, "owner": "platform"},
        "schedule": None,
        "startDate": "2026-01-01",
        "execution": "local",
        "kubernetes": {"namespace": "shop", "runnerImage": "registry.example.com/convoy:0.1.0"},
        "rollout": {"maxParallel": 2, "progressDeadlineSeconds": 10},
        "services": [
            {"name": "redis", "workload": {"kind": "StatefulSet", "name": "redis-cart"},
             "containers": {"redis": "registry.example.com/redis:2.4.0"}},
            {"name": "cart", "workload": {"kind": "Deployment", "name": "cartservice"},
             "containers": {"server": cart}, "dependsOn": ["redis"]},
        ],
        "datastores": [
            {"name": "orders", "type": "postgres", "connId": "orders_db", "after": [],
             "backup": "snapshot", "migrations": "migrations/orders",
             "transforms": [
                 {"name": "fill-status", "table": "public.orders", "key": "id",
                  "batchSize": batch_size, "where": "status IS NULL", "set": {"status": FILL}},
             ],
             "validation": [{"table": "public.orders", "expectations": expectations}]},
        ],
    }  # fmt: skip


class Scenario:
    """One policy, its own seeded database and the application writing to it."""

    def __init__(self, name: str, uri: str, runs_dir: Path) -> None:
        self.name = name
        self.uri = uri
        self.runs_dir = runs_dir
        self.initial = read_rows(uri)
        self.writer = AppWriter(uri, list(self.initial))

    def result(self, run_id: str) -> dict[str, Any]:
        return revert_result(self.runs_dir, self.name, run_id, REVERT)

    def history(self) -> list[tuple[str, str, bool]]:
        """(version, kind, reverted) of every migration history row."""
        with psycopg.connect(self.uri) as conn:
            rows = conn.execute(
                "SELECT version, kind, reverted_on IS NOT NULL FROM convoy.schema_history"
                " ORDER BY rank"
            ).fetchall()
        return [(str(v), str(k), bool(r)) for v, k, r in rows]

    def audit(self, run_id: str, *, complete: bool = True) -> dict[str, Any]:
        """Every application write survived, convoy's changes are gone; the revert result."""
        self.writer.stop()
        assert self.writer.crash is None, repr(self.writer.crash)
        verdict = verify(self.uri, self.initial, self.writer.writes, CONVOY_VALUES)
        task = self.result(run_id)
        result = task.get("result") or {}
        rate = self.writer.commits_per_second()
        print(
            f"\n{self.name}: {verdict.summary()} ({rate:.0f} commits/s; failed attempts "
            f"{dict(self.writer.failures)}; revert: restored {result.get('rows_restored')}, "
            f"conflicting {result.get('rows_conflicting')} (expected "
            f"{len(verdict.expected_conflicts)}), gone {result.get('rows_gone')} (expected "
            f"{len(verdict.expected_gone)}), refused {result.get('refused')})"
        )
        assert not verdict.problems(), "\n".join(verdict.problems())
        assert rate >= 50, f"the application wrote only {rate:.0f} commits/s"
        assert leftover_triggers(self.uri) == []
        if complete:
            assert table_shape(self.uri) == (["id", "amount"], ["orders_pkey"])
            assert [(v, k, rev) for v, k, rev in self.history() if k == "V"] == [
                ("1", "V", True),
                ("2", "V", True),
            ]
        assert result.get("rows_restored", 0) > 0, task
        # Rows whose status the application changed after convoy's transform
        # wrote it: the revert leaves them and names them, and no other.
        assert verdict.expected_conflicts, "the application changed no transformed row"
        assert result["rows_conflicting"] == len(verdict.expected_conflicts), result
        assert set(conflict_keys(result)) <= verdict.expected_conflicts, result
        # Rows the application deleted while they held convoy's value.
        assert result["rows_gone"] == len(verdict.expected_gone), result
        return task


@pytest.fixture
def scenario(
    cluster: Any,
    pg_database: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Scenario]]:
    root = tmp_path / "policies"
    (root / "migrations" / "orders").mkdir(parents=True)
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("CONVOY_POLICIES_DIR", str(root))
    monkeypatch.setenv("CONVOY_MAX_PARTITIONS", str(PARTITIONS))
    monkeypatch.setenv("CONVOY_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("CONVOY_REPORTS_DIR", str(tmp_path / "reports"))
    made: list[Scenario] = []
    # dag.test() runs every task in this process: hand the GIL over more often,
    # so that the application thread keeps its pace while a task computes.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.001)

    def make(
        name: str,
        *,
        crashloop: bool = False,
        undo_v1: bool = True,
        batch_size: int = 500,
        expectations: list[Any] | None = None,
    ) -> Scenario:
        from convoy.policy import load_policy

        uri = pg_database("orders_db")
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE TABLE public.orders (id bigint PRIMARY KEY, amount int NOT NULL)")
            conn.execute(
                "INSERT INTO public.orders SELECT g, g %% 97 FROM generate_series(1, %s) g",
                [ROWS],
            )
        files = {"V1__status.sql": V1, "V2__idx.sql": V2, "U2__idx.sql": U2}
        if undo_v1:
            files["U1__status.sql"] = U1
        for file, text in files.items():
            (root / "migrations" / "orders" / file).write_text(text)
        data = _policy(
            name,
            crashloop=crashloop,
            batch_size=batch_size,
            expectations=expectations or [NOT_NULL],
        )
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        cluster.seed_from_policy(load_policy(path).policy, previous_tag=PREVIOUS)
        made.append(Scenario(name, uri, runs_dir))
        return made[-1]

    try:
        yield make
    finally:
        for s in made:
            s.writer.stop()
        sys.setswitchinterval(switch)


def _writes_during(s: Scenario, run: Any, prefix: str) -> int:
    window = task_window(run, prefix)
    return 0 if window is None else s.writer.count(*window)


def test_failure_after_the_transform_rolls_back_every_app_write_kept(
    scenario: Callable[..., Scenario],
) -> None:
    """The service after the datastore crash-loops: automatic rollback under traffic."""
    s = scenario("traffic-after", crashloop=True)
    with s.writer:
        run = load_dag(s.name).test()
    got = states(run)
    assert run.state == "failed", got
    assert got[f"{TRANSFORM}_0"] == "success"
    assert got["datastore_orders.validate"] == "success"
    assert got["wave_1.rollout_cart"] == "failed"
    assert got[REVERT] == "success"
    assert _writes_during(s, run, TRANSFORM) > 0
    assert _writes_during(s, run, REVERT) > 0
    s.audit(run.run_id)


def test_failed_validation_rolls_back_every_app_write_kept(
    scenario: Callable[..., Scenario],
) -> None:
    """A blocking expectation fails (the transform writes 'shipped', not allowed)."""
    in_set = {
        "expect_column_values_to_be_in_set": {
            "column": "status",
            "value_set": ["open", "cancelled"],
        }
    }
    s = scenario("traffic-invalid", expectations=[NOT_NULL, in_set])
    with s.writer:
        run = load_dag(s.name).test()
    got = states(run)
    assert run.state == "failed", got
    assert got[f"{TRANSFORM}_0"] == "success"
    assert got["datastore_orders.validate"] == "failed"
    assert got["wave_0.rollout_redis"] == "upstream_failed"
    assert got[REVERT] == "success"
    assert _writes_during(s, run, TRANSFORM) > 0
    s.audit(run.run_id)


def test_manual_rollback_of_a_successful_run_keeps_every_app_write(
    scenario: Callable[..., Scenario],
) -> None:
    """A run succeeds, the application goes on writing, then ``mode: rollback`` of that run."""
    s = scenario("traffic-manual")
    with s.writer:
        first = load_dag(s.name).test()
        assert first.state == "success", states(first)
        # the application changes rows the transform wrote, before the rollback
        time.sleep(1)
        rollback = {"mode": "rollback", "rollback_run_id": first.run_id}
        run = load_dag(s.name).test(run_conf=rollback)
    got = states(run)
    assert run.state == "success", got
    assert got[REVERT] == "success"
    assert got["wave_1.rollout_cart"] == "skipped"
    assert _writes_during(s, first, TRANSFORM) > 0
    assert _writes_during(s, run, REVERT) > 0
    result = s.audit(run.run_id)
    assert result["reverted"] is True


def test_revert_refuses_the_snapshot_restore_when_an_undo_is_missing(
    scenario: Callable[..., Scenario],
) -> None:
    """V1 has no undo file: only the snapshot could revert it, and restoring the
    snapshot would discard the application's writes, so the revert refuses it.
    The rollback ends failed and incomplete, says why, and loses nothing.
    """
    s = scenario("traffic-refused", crashloop=True, undo_v1=False)
    with s.writer:
        run = load_dag(s.name).test()
    got = states(run)
    assert run.state == "failed", got
    assert got["wave_1.rollout_cart"] == "failed"
    assert got[REVERT] == "failed"
    result = s.audit(run.run_id, complete=False)
    assert result["state"] == "failed"
    assert result["incomplete"] is True
    assert result["refused"], result
    assert result["result"]["refused"] == result["refused"], result
    # V1 stays (its column with it); nothing convoy wrote into it remains.
    assert "status" in table_shape(s.uri)[0]
    assert ("1", "V", False) in s.history()


# --------------------------------------------------------------------------- killed


def _transform_progress(conn: psycopg.Connection[Any]) -> tuple[int, bool, bool]:
    """(rows checkpointed, every partition done, a transform batch is executing now)."""
    active = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE %s AND state = 'active'",
        ["convoy:%:transform %"],
    ).fetchone()
    try:
        row = conn.execute(
            "SELECT coalesce(sum(rows_done), 0), count(*) FILTER (WHERE done)"
            " FROM convoy.transform_checkpoints"
        ).fetchone()
    except psycopg.errors.UndefinedTable:
        return 0, False, False
    assert row is not None
    assert active is not None
    return int(row[0]), int(row[1]) == PARTITIONS, int(active[0]) > 0


def _kill_mid_batch(proc: subprocess.Popen[bytes], uri: str, log: Path, min_rows: int) -> float:
    """SIGKILL ``proc``'s process group once ``min_rows`` are transformed, while a
    batch executes; the epoch time of the kill."""
    deadline = time.monotonic() + 120
    with psycopg.connect(uri, autocommit=True) as conn:
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, "the transform did not start in time"
            rows, done, batch_running = _transform_progress(conn)
            assert not done, "the transform finished before it could be killed"
            if rows >= min_rows and batch_running:
                os.killpg(proc.pid, signal.SIGKILL)
                return time.time()
            time.sleep(0.002)


def _latest_run(dag_id: str) -> Any:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        query = session.query(DagRun).filter(DagRun.dag_id == dag_id)
        run = query.order_by(DagRun.id.desc()).first()
        assert run is not None, f"no run of {dag_id}"
        session.expunge(run)
        return run


def test_transform_killed_mid_batch_then_manual_rollback_keeps_every_app_write(
    scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    """The worker running the transform is SIGKILLed mid-batch, then rolled back by hand.

    ``airflow dags test`` runs the upgrade in a child process (process group)
    that is killed with SIGKILL while a transform batch executes in the
    database, so nothing of convoy gets to clean up (a batch in flight, any
    trigger left installed). The operator then runs ``mode: rollback`` of that
    run (``dag.test()``), the application writing throughout. A transform that
    raises instead would let convoy's own error handling run; a killed worker
    does not, which is the case a rollback must cope with.
    """
    s = scenario("traffic-killed", batch_size=100)
    log = tmp_path / "killed-run.log"
    with s.writer:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [AIRFLOW, "dags", "test", s.name],
                env=dict(os.environ),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            killed_at = _kill_mid_batch(proc, s.uri, log, min_rows=2000)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with psycopg.connect(s.uri, autocommit=True) as conn:
            rows, done, _ = _transform_progress(conn)
        assert 0 < rows < ROWS
        assert not done
        print(f"\nleft on public.orders by the killed worker: {leftover_triggers(s.uri)}")
        killed = _latest_run(s.name)
        assert killed.state == "running"
        # the application goes on writing against what the killed run left
        time.sleep(1)
        rollback = {"mode": "rollback", "rollback_run_id": killed.run_id}
        run = load_dag(s.name).test(run_conf=rollback)
    got = states(run)
    assert run.state == "success", got
    assert got[REVERT] == "success"
    assert s.writer.count(killed_at, time.time()) > 0
    assert _writes_during(s, run, REVERT) > 0
    result = s.audit(run.run_id)
    assert result["reverted"] is True
