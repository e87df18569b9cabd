"""The run report shows every analysis measurement (Markdown and HTML)."""

from __future__ import annotations

from pathlib import Path

from convoy.airflow.analysis import verify_kwargs
from convoy.observe.report import build_report, render_html, render_markdown
from convoy.policy import load_policy

GOOD = Path(__file__).resolve().parents[2] / "policies" / "good" / "analysis.yaml"

COMMON = {
    "triggered_by": "manual",
    "dry_run": False,
    "started": None,
    "finished": None,
    "final_state": "failed",
}
RUN = {
    "template": "error-rate",
    "provider": "prometheus",
    "query": 'sum(rate(http_requests_total{workload="cart", code=~"5.."}[30s]))',
    "range": "[-inf, 0.01]",
    "where": "canary step 2 (1/3 pods updated)",
    "service": "cart",
    "phase": "failed",
    "count": 3,
    "dryRun": False,
    "measurements": [
        {"at": "2026-11-26T17:00:00+00:00", "value": 0.004, "verdict": "pass", "message": ""},
        {"at": "2026-11-26T17:00:10+00:00", "value": 0.2, "verdict": "fail", "message": ""},
    ],
}


def _report() -> object:
    return build_report(
        policy_name="verified",
        digest="d",
        run_id="manual__1",
        services=[{"name": "cart", "status": "failed", "analysis": [RUN]}],
        **COMMON,
    )


def test_markdown_lists_each_measurement() -> None:
    text = render_markdown(_report())  # type: ignore[arg-type]
    assert "## Analyses" in text
    assert "error-rate canary step 2 (1/3 pods updated): **failed**" in text
    assert "| 2026-11-26T17:00:10+00:00 | 0.2 | fail |" in text
    assert "| 2026-11-26T17:00:00+00:00 | 0.004 | pass |" in text


def test_html_lists_each_measurement_escaped() -> None:
    page = render_html(_report())  # type: ignore[arg-type]
    assert '<section id="analyses">' in page
    assert "<td>0.2</td><td>fail</td>" in page
    assert "code=~&#34;5..&#34;" in page
    assert 'code=~"5..' not in page


def test_report_without_analyses_has_no_section() -> None:
    report = build_report(
        policy_name="p", digest="d", run_id="r", services=[{"name": "cart"}], **COMMON
    )
    assert "Analyses" not in render_markdown(report)


def test_verify_arguments_of_each_service() -> None:
    policy = load_policy(GOOD).policy
    cart = verify_kwargs(policy, "cart")
    assert [list(s) for s in cart["canary"]] == [["pods"], ["analysis"], ["pause"], ["pods"],
                                                 ["analysis"]]  # fmt: skip
    assert cart["analyses"] == ["error-rate"]  # rollout.analysis, the default
    assert sorted(cart["templates"]) == ["error-rate", "latency"]
    assert cart["templates"]["error-rate"]["max"] == 0.01
    redis = verify_kwargs(policy, "redis")
    assert redis["analyses"] == []  # analysis: [] turns the default off
    agent = verify_kwargs(policy, "log-agent")
    assert agent["canary"] == []
    assert agent["analyses"] == ["error-rate", "latency"]


def test_the_decision_about_an_inconclusive_analysis_is_shown() -> None:
    decided = {**RUN, "phase": "inconclusive", "decision": "approved by alice"}
    decided["measurements"] = [
        {"at": "2026-11-26T17:00:00+00:00", "value": None, "verdict": "inconclusive",
         "message": "no data"},
    ]  # fmt: skip
    report = build_report(
        policy_name="verified",
        digest="d",
        run_id="manual__1",
        services=[{"name": "cart", "status": "complete", "analysis": [decided]}],
        **COMMON,
    )
    text = render_markdown(report)
    assert "error-rate canary step 2 (1/3 pods updated): **inconclusive**" in text
    assert "Decision: **approved by alice**" in text
    assert "<p>Decision: <strong>approved by alice</strong></p>" in render_html(report)


def test_the_approvers_request_shows_every_measurement() -> None:
    from convoy.observe.report_analysis import approval_markdown

    run = {**RUN, "phase": "inconclusive", "query": 'sum(x{a="|"})'}
    run["measurements"] = [
        {"at": "t1", "value": None, "verdict": "inconclusive", "message": "no data"},
        {"at": "t2", "value": 0.5, "verdict": "fail", "message": ""},
    ]
    body = approval_markdown(
        run, workload="shop/Deployment/cartservice", images={"server": "cart:2.4.0"},
        then="the canary goes on with step 3 (pods: 2)",
    )  # fmt: skip
    assert body.startswith(
        "Analysis **error-rate** of service `cart` (canary step 2 (1/3 pods updated)) "
        "was **inconclusive**"
    )
    assert "`server` → `cart:2.4.0`" in body
    assert 'Query (prometheus): `sum(x{a="|"})`; passes in [-inf, 0.01]' in body
    assert "| t1 | no data | inconclusive | no data |" in body
    assert "| t2 | 0.5 | fail |  |" in body
    assert "- **Approve**: the canary goes on with step 3 (pods: 2)." in body
