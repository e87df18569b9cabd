"""The Upgrades page shows each run's analyses: phase, verdict and latest value, escaped."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from convoy.ui import RunRecord, TaskRecord, gather_policies, render_page, summarize_run

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def _run(phase: str, values: list[float | None], *, where: str = "after rollout") -> dict:
    return {
        "template": "error-rate", "provider": "prometheus", "query": "q", "range": "[-inf, 0.05]",
        "where": where, "service": "cart", "phase": phase, "count": 3, "dryRun": False,
        "measurements": [
            {"at": "t", "value": v, "verdict": "pass" if v is not None and v <= 0.05 else "fail",
             "message": ""}
            for v in values
        ],
    }  # fmt: skip


def _record(state: str, analysis: dict) -> RunRecord:
    tasks = (TaskRecord("wave_1.rollout_cart", state),)
    return RunRecord("shop-ui", "r1", state, start=NOW, tasks=tasks, analysis=analysis)


def test_a_failed_canary_analysis_shows_its_phase_and_failing_value(policies_dir: Path) -> None:
    failed = _run("failed", [0.193], where="canary step 2 (1/3 pods updated)")
    view = summarize_run(_record("failed", {"wave_1.rollout_cart": [failed]}), now=NOW)
    assert view.analyses == (
        ("cart error-rate (canary step 2 (1/3 pods updated)): failed · 0.193 fail", "failed"),
    )
    assert view.to_dict()["analyses"] == [view.analyses[0][0]]
    page = render_page(gather_policies(policies_dir), {"shop-ui": [view]}, now=NOW)
    assert (
        '<span class="chip s-failed" title="failed">cart error-rate (canary step 2 '
        "(1/3 pods updated)): failed · 0.193 fail</span>"
    ) in page


def test_a_running_analysis_shows_how_far_it_is(policies_dir: Path) -> None:
    runs = {
        "wave_0.analysis": [_run("successful", [0.0, 0.0, 0.0], where="wave 0")],
        "wave_1.rollout_cart": [_run("running", [0.001])],
    }
    view = summarize_run(_record("running", runs), now=NOW)
    assert view.analyses == (
        ("cart error-rate (wave 0): successful · 0 pass", "success"),
        ("cart error-rate (after rollout): running 1/3 · 0.001 pass", "running"),
    )
    inconclusive = summarize_run(
        _record("failed", {"wave_1.rollout_cart": [_run("inconclusive", [None])]}), now=NOW
    )
    assert inconclusive.analyses[0][1] == "up_for_retry"
    assert "no data" in inconclusive.analyses[0][0]


def test_the_page_escapes_analysis_labels(policies_dir: Path) -> None:
    evil = {**_run("failed", [1.0]), "template": "<script>x</script>"}
    view = summarize_run(_record("failed", {"wave_1.rollout_cart": [evil]}), now=NOW)
    page = render_page(gather_policies(policies_dir), {"shop-ui": [view]}, now=NOW)
    assert "<script>x</script>" not in page
    assert "&lt;script&gt;" in page


def test_runs_without_analyses_show_none() -> None:
    assert summarize_run(_record("success", {}), now=NOW).analyses == ()


def test_an_inconclusive_analysis_shows_the_approvers_decision() -> None:
    waiting = _run("inconclusive", [None]) | {"decision": "awaiting approval"}
    view = summarize_run(_record("running", {"wave_1.rollout_cart": [waiting]}), now=NOW)
    assert view.analyses == (
        (
            "cart error-rate (after rollout): inconclusive · no data fail · awaiting approval",
            "up_for_retry",
        ),
    )
    approved = _run("inconclusive", [None]) | {"decision": "approved by alice"}
    view = summarize_run(_record("success", {"wave_1.rollout_cart": [approved]}), now=NOW)
    assert view.analyses[0][0].endswith(" · approved by alice")
