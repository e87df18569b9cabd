"""The Airflow side of ``convoy status`` and ``convoy db``: connections and run states.

A thin adapter: the operating commands (:mod:`convoy.operate`) never import
Airflow; they are handed the functions below, which resolve a policy's
``connId`` exactly as the DAG's tasks do (Airflow connections, secrets
backends and ``AIRFLOW_CONN_*`` variables), so the commands work wherever
``airflow`` does.
"""

from __future__ import annotations

from typing import Any

from convoy.policy.models import MongoDatastore, Policy, PostgresDatastore

#: Airflow DAG run states of a run that is not over yet.
UNFINISHED_STATES = ("queued", "running")


def postgres_conninfo(conn_id: str) -> str:
    """psycopg conninfo of ``conn_id`` (never log it)."""
    from convoy.airflow.datastores import postgres_conninfo as conninfo

    return conninfo(conn_id)


def mongo_client(conn_id: str) -> Any:
    """A pymongo-compatible client of ``conn_id`` (``CONVOY_MONGO_CLIENT_FACTORY`` applies)."""
    from convoy.airflow.datastores import mongo_client as client

    return client(conn_id)


def kube_api_client(policy: Policy) -> Any:
    """The Kubernetes ``ApiClient`` of the policy's ``kubernetes`` connection."""
    from convoy.airflow.local_rollout import kube_api_client as api_client

    k8s = policy.kubernetes
    return api_client(k8s.conn_id, k8s.in_cluster)


def datastore_handle(ds: PostgresDatastore | MongoDatastore) -> Any:
    """conninfo (PostgreSQL) or client (MongoDB) of ``ds``."""
    if isinstance(ds, PostgresDatastore):
        return postgres_conninfo(ds.conn_id)
    return mongo_client(ds.conn_id)


def unfinished_runs(dag_id: str) -> set[str]:
    """Run ids of ``dag_id`` that are queued or running in Airflow's metadata database."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(DagRun.run_id)
            .filter(DagRun.dag_id == dag_id, DagRun.state.in_(UNFINISHED_STATES))
            .all()
        )
    return {str(r[0]) for r in rows}
