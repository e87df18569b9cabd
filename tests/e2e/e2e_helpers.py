"""Helpers of the e2e tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from convoy.engines.postgres.digest import state_digest

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
    """Task states of a run; mapped instances as ``<task_id>_<map_index>``."""
    return {
        (ti.task_id if ti.map_index < 0 else f"{ti.task_id}_{ti.map_index}"): ti.state
        for ti in dag_run.get_task_instances()
    }


# --------------------------------------------------------------------------- datastores

_MONGO: Any = None


def mongomock_client(conn_id: str) -> Any:
    """``CONVOY_MONGO_CLIENT_FACTORY=e2e_helpers:mongomock_client``: one in-memory server.

    ``dag.test()`` runs every task in this process, so all tasks (and the test)
    see the same mongomock server; :func:`reset_mongomock` empties it.
    """
    global _MONGO
    import mongomock

    if _MONGO is None:
        _MONGO = mongomock.MongoClient()
    return _MONGO


def reset_mongomock() -> Any:
    global _MONGO
    _MONGO = None
    return mongomock_client("")


def pg_state(conninfo: str, schema: str = "public") -> str:
    """sha256 over the schema (columns, constraints, indexes) and every row of ``schema``."""
    return state_digest(conninfo, schema)
