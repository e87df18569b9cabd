"""End-to-end fixtures: a migrated Airflow metadata DB, an emulated cluster, a connection."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_helpers import REPO

DEMO = REPO / "dags" / "policies" / "demo.yaml"


@pytest.fixture
def cluster(
    airflow_db: None, emulated_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The emulated cluster, reachable through the ``kubernetes_default`` connection."""
    kubeconfig = emulated_cluster.write_kubeconfig(tmp_path / "kubeconfig")
    conn = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(conn))
    monkeypatch.setenv("CONVOY_EXECUTION_MODE", "local")
    return emulated_cluster


@pytest.fixture
def policy_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Write a variant of the demo policy as the only policy; returns its LoadedPolicy."""
    from convoy.policy import load_policy

    root = tmp_path / "policies"
    root.mkdir()
    monkeypatch.setenv("CONVOY_POLICIES_DIR", str(root))

    def write(*, crashloop: bool) -> Any:
        data = yaml.safe_load(DEMO.read_text())
        # These tests are about the rollout: the demo's datastore needs its own
        # database and migration files (tests/e2e/test_datastore_e2e.py covers it).
        data.pop("datastores", None)
        if not crashloop:
            for svc in data["services"]:
                svc["containers"] = {
                    c: i.removesuffix("-crashloop") for c, i in svc["containers"].items()
                }
        path = root / "shop.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return load_policy(path)

    return write


@pytest.fixture
def run_env() -> dict[str, str]:
    return dict(os.environ)


@pytest.fixture
def pg_database(postgres_server: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """``make(conn_id)``: a fresh database on the embedded server, reachable as ``conn_id``.

    The connection is an ``AIRFLOW_CONN_<ID>`` URI with the server's Unix socket
    directory as the ``host`` query parameter (what ``server.get_uri()`` gives);
    returns the psycopg conninfo of the database.
    """
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    base = str(postgres_server.get_uri())

    def make(conn_id: str) -> str:
        name = f"e2e_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        uri = urlunsplit(urlsplit(base)._replace(path=f"/{name}"))
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", uri)
        return uri

    return make
