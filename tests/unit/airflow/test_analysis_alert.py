"""The onFailure alert names the failed analysis: template, where, query and the values."""

from __future__ import annotations

from typing import Any

from convoy.airflow.analysis import failure_lines
from convoy.airflow.notifiers import alert_message, alert_payload

RUN_ID = "manual__2026-11-26T10:00:00+00:00"
QUERY = 'sum(rate(http_requests_total{workload="cartservice", code=~"5.."}[1m]))'
FAILED = {
    "template": "error-rate", "provider": "prometheus", "query": QUERY, "range": "[-inf, 0.05]",
    "where": "canary step 2 (1/3 pods updated)", "service": "cart", "phase": "failed",
    "count": 3, "dryRun": False,
    "measurements": [
        {"at": "2026-11-26T10:00:05+00:00", "value": 0.01, "verdict": "pass", "message": ""},
        {"at": "2026-11-26T10:00:06+00:00", "value": 0.2173, "verdict": "fail", "message": ""},
    ],
}  # fmt: skip
PASSED = {**FAILED, "service": "redis", "phase": "successful", "measurements": []}
STATES = {
    "preflight": "success",
    "wave_0.rollout_redis": "success",
    "wave_1.rollout_cart": "failed",
    "wave_2.rollout_checkout": "upstream_failed",
    "rollback.gate": "success",
    "rollback.revert_cart": "success",
    "outcome": "failed",
}


class XComTI:
    """Answers ``xcom_pull(task_ids=..., key="analysis")`` from a dict."""

    dag_id = "shop"

    def __init__(self, analyses: dict[str, Any]) -> None:
        self.analyses = analyses
        self.pulled: list[str] = []

    def xcom_pull(self, *, task_ids: str, key: str) -> Any:
        self.pulled.append(task_ids)
        return self.analyses.get(task_ids) if key == "analysis" else None


def _context(ti: XComTI) -> dict[str, Any]:
    from airflow.sdk import DAG

    return {
        "dag": DAG(dag_id="shop", schedule=None),
        "run_id": RUN_ID,
        "dag_run": {"dag_id": "shop", "run_id": RUN_ID, "state": "failed"},
        "convoy_task_states": STATES,
        "ti": ti,
    }


def test_failure_lines_name_template_where_query_and_failing_values() -> None:
    [line] = failure_lines([PASSED, FAILED, {**FAILED, "dryRun": True}])
    assert line == (
        "cart: analysis error-rate (canary step 2 (1/3 pods updated)) failed: values 0.2173 "
        f"outside [-inf, 0.05]; query: {QUERY}"
    )
    inconclusive = {**FAILED, "phase": "inconclusive", "measurements": [
        {"at": "t", "value": None, "verdict": "inconclusive", "message": "HTTP 503"}]}  # fmt: skip
    assert "inconclusive: values no data" in failure_lines([inconclusive])[0]
    assert failure_lines(None) == []


def test_failure_alert_names_the_query_and_the_values_that_failed_it() -> None:
    ti = XComTI({"wave_1.rollout_cart": [FAILED], "wave_0.rollout_redis": [PASSED]})
    subject, body = alert_message(_context(ti), policy="shop")
    assert "failed and was rolled back" in subject
    assert f"Analysis: cart: analysis error-rate (canary step 2 (1/3 pods updated)) failed: " \
        f"values 0.2173 outside [-inf, 0.05]; query: {QUERY}\n" in body  # fmt: skip
    # Only failed steps are read (and never the successful ones' analyses).
    assert "wave_1.rollout_cart" in ti.pulled
    assert "wave_0.rollout_redis" not in ti.pulled
    payload = alert_payload(_context(XComTI({"wave_1.rollout_cart": [FAILED]})), policy="shop")
    assert payload["analyses"] == [body.split("Analysis: ")[1].split("\n")[0]]


def test_alert_without_analyses_has_no_analysis_line() -> None:
    _subject, body = alert_message(_context(XComTI({})), policy="shop")
    assert "Analysis:" not in body
