"""A generated 500-service policy (10 waves) loads, plans and builds its DAG in seconds.

Timings are printed (``pytest -s`` or the captured output of a failure), never
asserted beyond a generous sanity bound: they depend on the machine. The
numbers in docs/scale.md come from this test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "convoy_policies.py"
SERVICES = 500
LEVELS = 10
PER_LEVEL = SERVICES // LEVELS
KINDS = ("Deployment", "StatefulSet", "DaemonSet")
SANITY_SECONDS = 120


def large_policy(services: int = SERVICES, levels: int = LEVELS) -> dict[str, Any]:
    """``services`` services in ``levels`` dependency levels; each needs two of the level above."""
    per_level = services // levels
    items = []
    for i in range(services):
        level, j = divmod(i, per_level)
        depends = (
            sorted(
                {
                    f"svc{(level - 1) * per_level + j}",
                    f"svc{(level - 1) * per_level + (j * 7 + 3) % per_level}",
                }
            )
            if level
            else []
        )
        items.append(
            {
                "name": f"svc{i}",
                "workload": {"kind": KINDS[i % len(KINDS)], "name": f"svc{i}-workload"},
                "containers": {"app": f"registry.example.com/shop/svc{i}:2.{i % 10}.0"},
                "dependsOn": depends,
            }
        )
    return {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {"name": "large", "description": f"{services} generated services"},
        "kubernetes": {"namespace": "shop", "runnerImage": "registry.example.com/convoy:0.1.0"},
        # one wave per dependency level: maxParallel >= services per level
        "rollout": {"maxParallel": max(per_level, 1), "progressDeadlineSeconds": 600},
        "services": items,
    }


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("large") / "policies"
    root.mkdir()
    path = root / "large.yaml"
    path.write_text(yaml.safe_dump(large_policy(), sort_keys=False))
    return path


def test_load_plan_render(policy_file: Path) -> None:
    from convoy.plan import build_plan, render_text
    from convoy.policy import load_policy

    t0 = time.perf_counter()
    loaded = load_policy(policy_file)
    t1 = time.perf_counter()
    plan = build_plan(loaded)
    t2 = time.perf_counter()
    text = render_text(plan)
    t3 = time.perf_counter()

    assert len(loaded.policy.services) == SERVICES
    assert len(plan.waves) == LEVELS
    assert [len(w.steps) for w in plan.waves] == [PER_LEVEL] * LEVELS
    assert sum(len(w.steps) for w in plan.waves) == SERVICES
    assert "svc499" in text
    timings = {"load_policy": t1 - t0, "build_plan": t2 - t1, "render_text": t3 - t2}
    print(
        f"\n{SERVICES} services, {LEVELS} waves: "
        + ", ".join(f"{k} {v:.3f}s" for k, v in timings.items())
    )
    assert sum(timings.values()) < SANITY_SECONDS


PROBE = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    from airflow.dag_processing.dagbag import DagBag
    import convoy.airflow.dag_builder, convoy.airflow.pods  # KPO + kubernetes client imports
    t1 = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1])
    t2 = time.perf_counter()
    dag = bag.dags.get("large")
    tasks = dag.tasks if dag else []
    print(json.dumps({
        "import_errors": {k: str(v)[-2000:] for k, v in bag.import_errors.items()},
        "airflow_import": t1 - t0,
        "dagbag": t2 - t1,
        "tasks": len(tasks),
        "rollout": sorted({t.task_id.split(".")[0] for t in tasks if ".rollout_" in t.task_id}),
        "rollout_tasks": sum(1 for t in tasks if ".rollout_" in t.task_id),
        "revert_tasks": sum(1 for t in tasks if t.task_id.startswith("rollback.revert_")),
        "operators": sorted({type(t).__name__ for t in tasks if ".rollout_" in t.task_id}),
    }))
    """
)


def test_dag_builds_through_the_dagbag(policy_file: Path) -> None:
    env = dict(os.environ)
    env["CONVOY_POLICIES_DIR"] = str(policy_file.parent)
    env["CONVOY_EXECUTION_MODE"] = "kubernetes"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(DAG_FILE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=SANITY_SECONDS * 2,
    )
    wall = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["import_errors"] == {}
    assert result["rollout"] == [f"wave_{i}" for i in range(LEVELS)]
    assert result["rollout_tasks"] == SERVICES
    assert result["revert_tasks"] == SERVICES
    assert result["operators"] == ["RolloutPodOperator"]
    print(
        f"\nDagBag of {SERVICES} services ({result['tasks']} tasks): parse {result['dagbag']:.2f}s"
        f" (imports {result['airflow_import']:.2f}s, subprocess wall {wall:.2f}s)"
    )
    assert result["dagbag"] < SANITY_SECONDS
