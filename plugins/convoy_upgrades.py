"""convoy "Upgrades" page: an Airflow 3 plugin (FastAPI app + a nav entry; no Flask).

The api-server mounts the app at ``/convoy`` (``fastapi_apps``); the nav entry
(``external_views``, ``url_route="upgrades"``) embeds ``/convoy/`` in the Airflow
UI at ``/plugin/upgrades``. Routes:

- ``GET /convoy/``                        the page (HTML)
- ``GET /convoy/api/upgrades``            the same data as JSON (with each policy's
  latest drift check, :mod:`convoy.ui.drift`)
- ``GET /convoy/reports/{policy}/{run_id}`` the run's HTML report (policy = dag_id)

Every route authenticates with Airflow's own dependency (``get_user``: the JWT
of the ``Authorization: Bearer`` header or the UI's ``_token`` cookie):
401 without credentials, 403 with an invalid token or without read access to
DAGs. Policies and runs are further filtered per DAG with the auth manager's
``is_authorized_dag``. Airflow's API modules are imported only when the app is
built (by the api-server), so other processes that load plugins stay light.
"""

# No ``from __future__ import annotations``: FastAPI must see the real objects of the
# dependency annotations, which are local to ``create_app``.
import datetime as dt
import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin

from convoy.redaction import get_logger, redact, redact_data

log = get_logger(__name__)

URL_PREFIX = "/convoy"
RUNS_PER_POLICY = 5
#: Content-Security-Policy of every response: no script at all, inline CSS only,
#: framed only by the Airflow UI (same origin).
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"

RunsProvider = Callable[[Iterable[str]], dict[str, list[Any]]]


def _default_runs(dag_ids: Iterable[str]) -> dict[str, list[Any]]:
    from convoy.ui.airflow_runs import fetch_runs

    return dict(fetch_runs(dag_ids, limit=RUNS_PER_POLICY))


def _default_drift(policies: Iterable[str]) -> dict[str, Any]:
    from convoy.ui.drift import fetch_drift

    return dict(fetch_drift(policies))


def _default_policies_dir() -> Path:
    from airflow.configuration import conf

    from convoy.ui import policies_dir

    return policies_dir(conf.get("core", "dags_folder"))


def _can_read_dag(user: Any, dag_id: str) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )
    from airflow.configuration import conf

    team = None
    if conf.getboolean("core", "multi_team", fallback=False):
        from airflow.models.dag import DagModel

        team = DagModel.get_team_name(dag_id)
    return bool(
        get_auth_manager().is_authorized_dag(
            method="GET",
            access_entity=DagAccessEntity.RUN,
            details=DagDetails(id=dag_id, team_name=team),
            user=user,
        )
    )


def create_app(
    *,
    policies_dir: Path | None = None,
    reports_dir: Path | None = None,
    runs_provider: RunsProvider | None = None,
    authorize_dag: Callable[[Any, str], bool] | None = None,
    airflow_root: str = "/",
    drift_provider: RunsProvider | None = None,
) -> Any:
    """Build the FastAPI app. Arguments default to the api-server's configuration."""
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse, JSONResponse

    from convoy.observe.report import default_reports_dir, find_report
    from convoy.ui import gather_policies, render_page, summarize_run

    UserDep = Annotated[Any, Depends(get_user)]
    runs_of = runs_provider or _default_runs
    drift_of = drift_provider or _default_drift
    can_read = authorize_dag or _can_read_dag

    # 401 without credentials, 403 for a bad token or no read access to DAGs at all.
    read_dags = Depends(requires_access_dag("GET"))
    app = FastAPI(
        title="convoy upgrades",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[read_dags],
    )

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    def _report_url(base: str, dag_id: str, run_id: str) -> str | None:
        try:
            find_report(
                reports_dir or default_reports_dir(), run_id, policy=dag_id, name="report.html"
            )
        except (FileNotFoundError, LookupError, OSError):
            return None
        return f"{base}reports/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"

    def _gather(request: Request, user: Any) -> tuple[list[Any], dict[str, list[Any]], str | None]:
        base = str(request.scope.get("root_path", "")).rstrip("/") + "/"
        policies = [
            p
            for p in gather_policies(policies_dir or _default_policies_dir())
            if p.dag_id is None or can_read(user, p.dag_id)
        ]
        orders = {
            p.dag_id: (
                [s for w in p.waves for s in w],
                [str(d["datastore"]) for d in (p.plan or {}).get("datastore_phases", [])],
            )
            for p in policies
            if p.dag_id
        }
        runs: dict[str, list[Any]] = {}
        error: str | None = None
        try:
            records = runs_of(list(orders))
        except Exception as exc:  # the page still shows policies and plans
            log.exception("convoy upgrades: cannot read runs")
            error = type(exc).__name__
            records = {}
        now = dt.datetime.now(dt.UTC)
        for dag_id, recs in records.items():
            services, stores = orders.get(dag_id, ([], []))
            runs[dag_id] = [
                summarize_run(
                    r,
                    now=now,
                    service_order=services,
                    datastore_order=stores,
                    report_url=_report_url(base, dag_id, r.run_id),
                )
                for r in recs
            ]
        return policies, runs, error

    def _drift(user: Any, policies: list[Any]) -> dict[str, Any]:
        """The latest drift check of each policy whose drift DAG the user may read."""
        from convoy.ui.drift import SUFFIX

        names = [p.dag_id for p in policies if p.dag_id and can_read(user, p.dag_id + SUFFIX)]
        try:
            return dict(drift_of(names)) if names else {}
        except Exception:  # the page still shows everything else
            log.exception("convoy upgrades: cannot read drift checks")
            return {}

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request, user: UserDep) -> HTMLResponse:
        policies, runs, error = _gather(request, user)
        html = render_page(
            policies,
            runs,
            now=dt.datetime.now(dt.UTC),
            airflow_root=airflow_root,
            runs_error=error,
            drift=_drift(user, policies),
        )
        return HTMLResponse(html)

    @app.get("/api/upgrades")
    def data(request: Request, user: UserDep) -> JSONResponse:
        from convoy.ui.drift import drift_view

        policies, runs, error = _gather(request, user)
        drift = _drift(user, policies)
        return JSONResponse(
            redact_data(
                {
                    "policies": [
                        {
                            **p.to_dict(),
                            "runs": [r.to_dict() for r in runs.get(p.dag_id or "", [])],
                            "drift": drift_view(p.dag_id, drift.get(p.dag_id), airflow_root)
                            if p.dag_id
                            else None,
                        }
                        for p in policies
                    ],
                    "runs_error": error,
                }
            )
        )

    # The path parameter is not called ``dag_id`` on purpose: the app-wide
    # ``requires_access_dag("GET")`` would then look the DAG's team up in the DB
    # even without multi-team; ``can_read`` does the per-DAG check instead.
    @app.get("/reports/{policy}/{run_id}", response_class=HTMLResponse)
    def report(policy: str, run_id: str, user: UserDep) -> HTMLResponse:
        if not can_read(user, policy):
            raise HTTPException(403, "Forbidden")
        try:
            path = find_report(
                reports_dir or default_reports_dir(), run_id, policy=policy, name="report.html"
            )
        except (FileNotFoundError, LookupError) as exc:
            raise HTTPException(404, "no report for this run") from exc
        return HTMLResponse(redact(path.read_text(encoding="utf-8")))

    return app


@functools.cache
def _api_server_app() -> Any:
    return create_app(airflow_root=_airflow_root())


def _airflow_root() -> str:
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="") or ""
    path = urlsplit(base).path or "/"
    return path if path.endswith("/") else path + "/"


class ConvoyUpgradesPlugin(AirflowPlugin):
    """Registers the page's FastAPI app and its entry in the Airflow UI navigation."""

    name = "convoy_upgrades"
    external_views = [
        {
            "name": "Upgrades",
            "href": URL_PREFIX + "/",
            "url_route": "upgrades",
            "destination": "nav",
            "category": "browse",
        }
    ]

    @property  # type: ignore[override]
    def fastapi_apps(self) -> list[dict[str, Any]]:
        """Built on first use: only the api-server asks for it."""
        if os.environ.get("CONVOY_UI_DISABLED"):
            return []
        return [{"app": _api_server_app(), "url_prefix": URL_PREFIX, "name": "convoy upgrades"}]
