"""Parse time of the DAG file for 1, 100 and 1000 policies: convoy vs dag-factory.

Airflow kills a DAG file import after ``dagbag_import_timeout`` (30 s by
default) and then shows none of the DAGs in it, so the time to parse every
policy in one file is the number that matters. The same DAG shapes (10
services in 3 waves, one KubernetesPodOperator per service, a preflight and a
report task) are written as dag-factory YAML and parsed in the same run.

Each measurement runs in a fresh interpreter: Airflow is imported first (not
timed), then the DagBag of that single file is built (timed), as the DAG
processor does.

    .venv/bin/python benchmarks/parse_time.py [--counts 1,100,1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "benchmarks" / "generated"
SERVICES_PER_POLICY = 10

# Three waves: s0-s3 first, s4-s6 need s0/s1, s7-s9 need the middle wave.
DEPENDS: dict[int, list[int]] = {4: [0], 5: [1], 6: [0, 1], 7: [4], 8: [5], 9: [6, 4]}


def _service_name(j: int) -> str:
    return f"svc{j}"


def convoy_policy(i: int) -> dict[str, object]:
    services = []
    for j in range(SERVICES_PER_POLICY):
        services.append(
            {
                "name": _service_name(j),
                "workload": {"kind": "Deployment", "name": f"svc{j}-deploy"},
                "containers": {"app": f"registry.example.com/p{i}/svc{j}:1.{j}.0"},
                "dependsOn": [_service_name(d) for d in DEPENDS.get(j, [])],
            }
        )
    return {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {"name": f"bench-{i:04d}", "owner": "bench", "tags": ["bench"]},
        "kubernetes": {
            "namespace": f"ns-{i:04d}",
            "runnerImage": "registry.example.com/convoy:0.1.0",
        },
        "rollout": {"maxParallel": 4},
        "services": services,
    }


def dagfactory_config(i: int) -> dict[str, object]:
    tasks: list[dict[str, object]] = [
        {
            "task_id": "preflight",
            "operator": "airflow.providers.standard.operators.empty.EmptyOperator",
        }
    ]
    for j in range(SERVICES_PER_POLICY):
        name = _service_name(j)
        tasks.append(
            {
                "task_id": f"rollout_{name}",
                "operator": "airflow.providers.cncf.kubernetes.operators.pod.KubernetesPodOperator",
                "image": "registry.example.com/convoy:0.1.0",
                "namespace": f"ns-{i:04d}",
                "name": f"rollout-{name}",
                "service_account_name": "convoy-rollout",
                "cmds": ["python", "-m", "convoy.rollout"],
                "arguments": [
                    "apply",
                    "--namespace",
                    f"ns-{i:04d}",
                    "--kind",
                    "Deployment",
                    "--name",
                    f"svc{j}-deploy",
                    "--container",
                    f"app=registry.example.com/p{i}/svc{j}:1.{j}.0",
                ],
                "do_xcom_push": True,
                "dependencies": [f"rollout_{_service_name(d)}" for d in DEPENDS.get(j, [])]
                or ["preflight"],
            }
        )
    tasks.append(
        {
            "task_id": "report",
            "operator": "airflow.providers.standard.operators.empty.EmptyOperator",
            "trigger_rule": "all_done",
            "dependencies": [f"rollout_{_service_name(j)}" for j in (2, 3, 7, 8, 9)],
        }
    )
    return {
        f"dagfactory-{i:04d}": {
            "default_args": {"owner": "bench", "start_date": "2026-01-01", "retries": 2},
            "schedule": None,
            "catchup": False,
            "max_active_runs": 1,
            "tags": ["bench"],
            "tasks": tasks,
        }
    }


def generate(count: int) -> dict[str, Path]:
    convoy_dir = GENERATED / f"convoy-{count}"
    factory_dir = GENERATED / f"dagfactory-{count}"
    for d in (convoy_dir, factory_dir):
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.y*ml"):
            old.unlink()
    for i in range(count):
        (convoy_dir / f"bench-{i:04d}.yaml").write_text(yaml.safe_dump(convoy_policy(i)))
        (factory_dir / f"dagfactory-{i:04d}.yml").write_text(yaml.safe_dump(dagfactory_config(i)))
    factory_dag_file = GENERATED / f"dagfactory_dags_{count}.py"
    factory_dag_file.write_text(
        textwrap.dedent(
            f"""\
            from dagfactory import load_yaml_dags

            load_yaml_dags(globals_dict=globals(), dags_folder={str(factory_dir)!r})
            """
        )
    )
    return {"convoy": convoy_dir, "dagfactory": factory_dag_file}


_CHILD = textwrap.dedent(
    """\
    import json, sys, time
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    start = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
    elapsed = time.perf_counter() - start
    tasks = sorted({len(d.tasks) for d in bag.dags.values()})
    print(json.dumps({"seconds": elapsed, "dags": len(bag.dags),
                      "errors": len(bag.import_errors), "tasks_per_dag": tasks}))
    """
)


def measure(tool: str, target: Path, repeat: int) -> dict[str, object]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "600",
            "DO_NOT_TRACK": "1",
            "AUTO_TRACE_DAG_FACTORY": "False",
        }
    )
    dag_file = target
    if tool == "convoy":
        env["CONVOY_POLICIES_DIR"] = str(target)
        dag_file = ROOT / "dags" / "convoy_policies.py"
    runs = []
    last: dict[str, object] = {}
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(dag_file)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        last = json.loads(out.stdout.strip().splitlines()[-1])
        runs.append(float(last["seconds"]))  # type: ignore[arg-type]
    return {**last, "seconds": statistics.median(runs)}


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1,100,1000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rows = [
        "| policies | convoy s | convoy DAGs (tasks/DAG) | dag-factory s "
        "| dag-factory DAGs (tasks/DAG) | dag-factory / convoy |",
        "|---:|---:|---|---:|---|---:|",
    ]
    for count in (int(c) for c in args.counts.split(",")):
        targets = generate(count)
        c = measure("convoy", targets["convoy"], args.repeat)
        f = measure("dagfactory", targets["dagfactory"], args.repeat)
        for name, result in (("convoy", c), ("dag-factory", f)):
            if result["errors"] or result["dags"] != count:
                raise SystemExit(f"{name} at {count} policies: {result}")
        ratio = float(f["seconds"]) / float(c["seconds"])  # type: ignore[arg-type]
        rows.append(
            f"| {count} | {float(c['seconds']):.2f} | {c['dags']} ({c['tasks_per_dag']}) "  # type: ignore[arg-type]
            f"| {float(f['seconds']):.2f} | {f['dags']} ({f['tasks_per_dag']}) | {ratio:.2f} |"  # type: ignore[arg-type]
        )
        print(rows[-1], flush=True)
    table = "\n".join(rows)
    print(table)
    return table


if __name__ == "__main__":
    main()
