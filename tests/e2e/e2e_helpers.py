"""Helpers of the e2e tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def load_dag(dag_id: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "convoy_policies.py"))
    assert bag.import_errors == {}
    return bag.dags[dag_id]


def images(cluster: Any, policy: Any) -> dict[str, dict[str, str]]:
    ns = policy.kubernetes.namespace
    return {s.name: cluster.images(s.workload.kind, ns, s.workload.name) for s in policy.services}


def states(dag_run: Any) -> dict[str, str | None]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
