"""Fixtures of the operating commands: a policy on disk, its cluster and databases.

Connections go through Airflow as the commands' users have them: an
``AIRFLOW_CONN_KUBERNETES_DEFAULT`` pointing at the emulated cluster, an
``AIRFLOW_CONN_ORDERS_DB`` URI of a fresh database on the embedded
PostgreSQL, and for MongoDB ``CONVOY_MONGO_CLIENT_FACTORY`` naming
:func:`operate_helpers.mongo_client` (mongomock, and ``MONGO_URI``'s server in the
``mongo_server`` lane).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import operate_helpers


@pytest.fixture
def kube(emulated_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    kubeconfig = emulated_cluster.write_kubeconfig(tmp_path / "kubeconfig")
    conn = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(conn))
    return emulated_cluster


@pytest.fixture
def orders_db(postgres_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database reachable as ``orders_db``; returns its conninfo."""
    base = str(postgres_server.get_uri())
    name = f"op_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    uri = urlunsplit(urlsplit(base)._replace(path=f"/{name}"))
    monkeypatch.setenv("AIRFLOW_CONN_ORDERS_DB", uri)
    try:
        yield uri
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(
    params=[
        "mongomock",
        pytest.param(
            "server",
            marks=[
                pytest.mark.mongo_server,
                pytest.mark.skipif(
                    not os.environ.get("MONGO_URI"), reason="needs a real MongoDB: set MONGO_URI"
                ),
            ],
        ),
    ]
)
def catalog_mongo(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The client ``catalog_mongo`` resolves to; the test database is dropped after.

    Every test using it runs twice: on mongomock, and (marked ``mongo_server``,
    skipped without ``MONGO_URI``) on the real server of the opt-in lane.
    """
    client = operate_helpers.open_mongo(request.param)
    operate_helpers.MONGO["client"] = client
    monkeypatch.setenv("CONVOY_MONGO_CLIENT_FACTORY", "operate_helpers:mongo_client")
    database = f"convoy_op_{uuid.uuid4().hex[:8]}"
    operate_helpers.MONGO["database"] = database
    try:
        yield client
    finally:
        client.drop_database(database)
        client.close()
