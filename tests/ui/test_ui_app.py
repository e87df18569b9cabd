"""The plugin's FastAPI app mounted alone (TestClient): Airflow auth, HTML, JSON, reports.

Authentication is Airflow's own (``get_user`` with SimpleAuthManager JWTs). The
metadata DB is not migrated in these fast tests, so the revoked-token lookup of a
*valid* token is stubbed; the full chain with a real DB runs in test_ui_browser.py.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from convoy.observe.report import report_dir
from convoy.ui import RunRecord, TaskRecord

REPO_ROOT = Path(__file__).resolve().parents[2]
PLUGIN_FILE = REPO_ROOT / "plugins" / "convoy_upgrades.py"
RUN_ID = "manual__2026-11-25T10:00:00+00:00"


def _plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("convoy_upgrades_under_test", PLUGIN_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plugin() -> ModuleType:
    return _plugin()


@pytest.fixture
def auth(monkeypatch: pytest.MonkeyPatch) -> Any:
    from airflow.api_fastapi.app import init_auth_manager
    from airflow.models.revoked_token import RevokedToken

    monkeypatch.setattr(RevokedToken, "is_revoked", classmethod(lambda cls, jti, **_: False))
    return init_auth_manager()


def _token(auth: Any, role: str = "viewer") -> str:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return str(auth.generate_jwt(SimpleAuthManagerUser(username="tester", role=role)))


def _runs(dag_ids: Iterable[str]) -> dict[str, list[RunRecord]]:
    now = dt.datetime.now(dt.UTC)
    run = RunRecord(
        "shop-ui",
        RUN_ID,
        "failed",
        "manual",
        now - dt.timedelta(minutes=5),
        now,
        (
            TaskRecord("wave_0.rollout_redis", "success"),
            TaskRecord("wave_1.rollout_cart", "failed"),
        ),
    )
    return {d: [run] if d == "shop-ui" else [] for d in dag_ids}


@pytest.fixture
def client(plugin: ModuleType, policies_dir: Path, tmp_path: Path) -> Any:
    from fastapi.testclient import TestClient

    reports = tmp_path / "reports"
    target = report_dir(reports, "shop-ui", RUN_ID)
    target.mkdir(parents=True)
    (target / "report.html").write_text("<html><body>REPORT shop-ui</body></html>")
    app = plugin.create_app(
        policies_dir=policies_dir,
        reports_dir=reports,
        runs_provider=_runs,
        authorize_dag=lambda user, dag_id: dag_id != "secret",
    )
    return TestClient(app)


@pytest.mark.parametrize("path", ["/", "/api/upgrades", f"/reports/shop-ui/{RUN_ID}"])
def test_unauthenticated_requests_are_refused(client: Any, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert "REPORT" not in response.text
    assert "shop-ui" not in response.text


@pytest.mark.usefixtures("auth")
def test_invalid_token_is_refused(client: Any) -> None:
    response = client.get("/", headers={"Authorization": "Bearer not-a-jwt"})
    assert response.status_code == 403
    client.cookies.set("_token", "not-a-jwt")
    assert client.get("/").status_code == 403


def test_page_with_bearer_token(client: Any, auth: Any) -> None:
    response = client.get("/", headers={"Authorization": f"Bearer {_token(auth)}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src" not in response.headers["content-security-policy"]
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = response.text
    assert "<h1>Upgrades</h1>" in page
    assert "shop-ui" in page
    assert "broken-ui" in page
    assert "bad.yaml:5:3: metadata.colour: unknown field" in page
    assert "Wave 0" in page
    assert "Wave 1" in page
    assert "Shop &lt;b&gt;2.4&lt;/b&gt;" in page
    # the run, its per-service states and the link to its report
    assert "chip s-failed" in page
    assert ">cart<" in page
    assert 'href="/reports/shop-ui/manual__2026-11-25T10%3A00%3A00%2B00%3A00"' in page


def test_json_with_ui_cookie(client: Any, auth: Any) -> None:
    client.cookies.set("_token", _token(auth))
    response = client.get("/api/upgrades")
    assert response.status_code == 200
    data = {p["file"]: p for p in response.json()["policies"]}
    assert data["good.yaml"]["waves"] == [["redis"], ["cart"]]
    assert data["good.yaml"]["runs"][0]["services"] == {"redis": "success", "cart": "failed"}
    assert data["bad.yaml"]["valid"] is False
    assert {(e["line"], e["path"]) for e in data["bad.yaml"]["errors"]} >= {
        (5, "metadata.colour"),
        (16, "services[0].dependsOn[1]"),
    }


def test_report_is_served_with_dag_access_only(client: Any, auth: Any) -> None:
    headers = {"Authorization": f"Bearer {_token(auth)}"}
    response = client.get(f"/reports/shop-ui/{RUN_ID}", headers=headers)
    assert response.status_code == 200
    assert "REPORT shop-ui" in response.text
    assert client.get("/reports/shop-ui/no-such-run", headers=headers).status_code == 404
    assert client.get(f"/reports/secret/{RUN_ID}", headers=headers).status_code == 403


def test_plugin_registration(plugin: ModuleType) -> None:
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES

    instance = plugin.ConvoyUpgradesPlugin()
    (view,) = instance.external_views
    assert view["href"] == "/convoy/"
    assert view["url_route"] == "upgrades"
    (app,) = instance.fastapi_apps
    assert app["url_prefix"] == "/convoy"
    assert not any(app["url_prefix"].startswith(p) for p in RESERVED_URL_PREFIXES)
