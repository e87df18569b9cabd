"""The drift column of the Upgrades page: the latest drift check per policy, linked to its run."""

from __future__ import annotations

import datetime as dt
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from convoy.ui.drift import DriftRecord, drift_view

PLUGIN_FILE = Path(__file__).resolve().parents[2] / "plugins" / "convoy_upgrades.py"


def _plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("convoy_upgrades_drift_test", PLUGIN_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _runs(dag_ids: Iterable[str]) -> dict[str, list[Any]]:
    return {d: [] for d in dag_ids}


@pytest.fixture
def auth(monkeypatch: pytest.MonkeyPatch) -> Any:
    from airflow.api_fastapi.app import init_auth_manager
    from airflow.models.revoked_token import RevokedToken

    monkeypatch.setattr(RevokedToken, "is_revoked", classmethod(lambda cls, jti, **_: False))
    return init_auth_manager()


def _token(auth: Any) -> str:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return str(auth.generate_jwt(SimpleAuthManagerUser(username="tester", role="viewer")))


WHEN = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)
STATUS = {
    "verdict": "drift",
    "services": [
        {"name": "cart", "verdict": "drift", "reasons": ["server: runs cart:x"]},
        {"name": "redis", "verdict": "in sync", "reasons": []},
    ],
    "datastores": [{"name": "orders", "verdict": "pending", "reasons": ["pending: 3"]}],
}
RECORD = DriftRecord("scheduled__2026-11-26T10:00:00+00:00", "failed", WHEN, STATUS)


def test_drift_view() -> None:
    view = drift_view("shop-ui", RECORD, "/airflow")
    assert view == {
        "verdict": "drift",
        "badge": "up_for_retry",
        "when": "2026-11-26 10:00:00 UTC",
        "findings": [("cart", "up_for_retry"), ("orders", "queued")],
        "url": "/airflow/dags/shop-ui__drift/runs/scheduled__2026-11-26T10%3A00%3A00%2B00%3A00",
    }
    assert drift_view("shop-ui", None, "/") is None
    running = drift_view("shop-ui", DriftRecord("r", "running", None), "/")
    assert running is not None
    assert (running["verdict"], running["when"]) == ("running", "-")


@pytest.fixture
def drift_client(policies_dir: Path) -> Any:
    from fastapi.testclient import TestClient

    def drift_of(policies: Iterable[str]) -> dict[str, DriftRecord]:
        return dict.fromkeys(policies, RECORD)

    app = _plugin().create_app(
        policies_dir=policies_dir,
        runs_provider=_runs,
        drift_provider=drift_of,
        authorize_dag=lambda user, dag_id: True,
    )
    return TestClient(app)


def test_page_and_json_show_the_drift_column(drift_client: Any, auth: Any) -> None:
    headers = {"Authorization": f"Bearer {_token(auth)}"}
    page = drift_client.get("/", headers=headers).text
    assert "Drift check:" in page
    assert 'href="/dags/shop-ui__drift/runs/scheduled__2026-11-26T10%3A00%3A00%2B00%3A00"' in page
    assert '<span class="badge s-up_for_retry">drift</span>' in page
    assert '<span class="chip s-up_for_retry" title="up_for_retry">cart</span>' in page
    data = {
        p["file"]: p for p in drift_client.get("/api/upgrades", headers=headers).json()["policies"]
    }
    assert data["good.yaml"]["drift"]["verdict"] == "drift"
    assert data["bad.yaml"]["drift"] is None or data["bad.yaml"]["dag_id"] is not None


def test_no_drift_without_read_access_to_the_drift_dag(policies_dir: Path, auth: Any) -> None:
    from fastapi.testclient import TestClient

    asked: list[list[str]] = []

    def drift_of(policies: Iterable[str]) -> dict[str, DriftRecord]:
        asked.append(list(policies))
        return dict.fromkeys(policies, RECORD)

    app = _plugin().create_app(
        policies_dir=policies_dir,
        runs_provider=_runs,
        drift_provider=drift_of,
        authorize_dag=lambda user, dag_id: not dag_id.endswith("__drift"),
    )
    page = TestClient(app).get("/", headers={"Authorization": f"Bearer {_token(auth)}"}).text
    assert "Drift check:" not in page
    assert asked == []
