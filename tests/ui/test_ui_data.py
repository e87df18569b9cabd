"""convoy.ui without a server: policies with validation state, plan waves, run summaries, HTML."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from convoy.ui import (
    RunRecord,
    TaskRecord,
    aggregate_state,
    gather_policies,
    policies_dir,
    render_page,
    summarize_run,
)
from convoy.ui.runs import progress_from_xcom

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def test_policies_dir_env_overrides_dags_folder(tmp_path: Path) -> None:
    assert policies_dir(tmp_path, environ={}) == tmp_path / "policies"
    assert policies_dir(tmp_path, environ={"CONVOY_POLICIES_DIR": "/x"}) == Path("/x")


def test_good_and_bad_policy(policies_dir: Path) -> None:
    views = {v.file: v for v in gather_policies(policies_dir)}
    assert sorted(views) == ["bad.yaml", "good.yaml"]  # _draft.yaml is a draft

    good = views["good.yaml"]
    assert good.valid
    assert good.dag_id == "shop-ui"
    assert not good.errors
    assert good.waves == [["redis"], ["cart"]]
    assert good.plan is not None
    assert [(p["datastore"], p["position"]) for p in good.plan["datastore_phases"]] == [
        ("orders", 0)
    ]

    bad = views["bad.yaml"]
    assert not bad.valid
    assert bad.plan is None
    assert bad.waves == []
    assert bad.dag_id == "broken-ui"  # the placeholder DAG id convoy.airflow registers
    located = [(d.file, d.line, d.path) for d in bad.errors]
    assert ("bad.yaml", 5, "metadata.colour") in located
    assert ("bad.yaml", 16, "services[0].dependsOn[1]") in located
    assert all(str(policies_dir) not in d.location for d in bad.errors)  # no server paths
    assert bad.to_dict()["errors"][0]["line"] == 5


def test_unreadable_name_gets_fallback_dag_id(tmp_path: Path) -> None:
    (tmp_path / "weird name.yaml").write_text(": : :\n", encoding="utf-8")
    (view,) = gather_policies(tmp_path)
    assert not view.valid
    assert view.errors
    assert view.dag_id == "convoy-invalid-weird-name"


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([], "none"),
        (["success", "success"], "success"),
        (["success", "skipped"], "success"),
        (["skipped", "skipped"], "skipped"),
        (["success", "failed"], "failed"),
        (["success", "upstream_failed"], "failed"),
        (["success", "running"], "running"),
        (["success", None], "running"),
        ([None, None], "none"),
        (["up_for_retry"], "running"),
    ],
)
def test_aggregate_state(states: list[str | None], expected: str) -> None:
    assert aggregate_state(states) == expected


def _running_run() -> RunRecord:
    t = TaskRecord
    return RunRecord(
        dag_id="shop-ui",
        run_id="manual__2026-11-25T11:50:00+00:00",
        state="running",
        run_type="manual",
        start=NOW - dt.timedelta(minutes=10),
        tasks=(
            t("preflight", "success"),
            t("wave_0.rollout_redis", "success"),
            t("datastore_orders.backup", "success"),
            t("datastore_orders.partitions_backfill-status", "success"),
            t("datastore_orders.transform_backfill-status", "success", map_index=0),
            t("datastore_orders.transform_backfill-status", "running", map_index=1),
            t("wave_1.rollout_cart", None),
            t("report", None),
            t("rollback.gate", None),
            t("rollback.revert_redis", None),
        ),
        progress={
            "datastore_orders.transform_backfill-status[1]": {
                "done": 2500,
                "total": 10000,
                "unit": "rows",
                "rate": 500.0,
                "eta_seconds": 15,
            },
            "datastore_orders.transform_backfill-status[0]": {"done": 1, "total": 1},  # finished
            "preflight": "garbage",
        },
    )


def test_summarize_running_run() -> None:
    view = summarize_run(_running_run(), now=NOW, service_order=["redis", "cart"])
    assert view.services == (("redis", "success"), ("cart", "none"))
    assert view.datastores == (("orders", "running"),)
    assert view.rollback == "none"
    # 8 tasks outside the rollback group, 5 finished, 10 min elapsed -> 6 min left.
    assert view.overall is not None
    assert (view.overall.done, view.overall.total) == (5, 8)
    assert view.overall.eta_seconds == pytest.approx(360)
    # Only the running instance's XCom progress is shown.
    (p,) = view.task_progress
    assert p.label == "datastore_orders.transform_backfill-status[1]"
    assert p.text == "2500/10000 rows (25.0%) 500 rows/s ETA 15s"
    assert view.to_dict()["progress"]["done"] == 5


def test_finished_run_has_no_progress() -> None:
    run = RunRecord(
        "shop-ui",
        "r1",
        "failed",
        start=NOW - dt.timedelta(minutes=3),
        end=NOW,
        tasks=(
            TaskRecord("wave_0.rollout_redis", "failed"),
            TaskRecord("rollback.gate", "success"),
        ),
    )
    view = summarize_run(run, now=NOW, report_url="/convoy/reports/shop-ui/r1")
    assert view.overall is None
    assert view.task_progress == ()
    assert view.rollback == "success"
    assert view.duration_seconds(NOW) == 180


def test_progress_eta_counts_down_from_when_it_was_pushed() -> None:
    pushed = {
        "done": 120_000,
        "total": 300_000,
        "pct": 40.0,
        "unit": "rows",
        "rate": 4000.0,
        "eta_seconds": 45.0,
        "label": "orders/fill-status",
        "updated_at": (NOW - dt.timedelta(seconds=12)).isoformat(),
    }
    p = progress_from_xcom("t", pushed, NOW)
    assert p is not None
    assert p.eta_seconds == 33.0
    assert p.age_seconds == 12.0
    assert p.text == "120000/300000 rows (40.0%) 4000 rows/s ETA 33s (updated 12s ago)"
    assert p.to_dict()["updated_at"] == pushed["updated_at"]
    # Without "now" (or with a malformed timestamp) the pushed ETA is shown as it is.
    assert progress_from_xcom("t", pushed).eta_seconds == 45.0  # type: ignore[union-attr]
    odd = progress_from_xcom("t", {**pushed, "updated_at": "yesterday"}, NOW)
    assert odd is not None
    assert (odd.eta_seconds, odd.age_seconds) == (45.0, None)


def test_progress_from_xcom_is_lenient() -> None:
    assert progress_from_xcom("t", None) is None
    assert progress_from_xcom("t", {"total": 3}) is None
    assert progress_from_xcom("t", {"done": True}) is None
    p = progress_from_xcom("t", {"done": 3, "label": "orders"})
    assert p is not None
    assert p.text == "3 rows"
    assert p.label == "orders"


def test_render_page_escapes_and_shows_everything(policies_dir: Path) -> None:
    policies = gather_policies(policies_dir)
    evil = RunRecord(
        "shop-ui",
        'x"><script>alert(1)</script>',
        "success",
        start=NOW - dt.timedelta(minutes=1),
        end=NOW,
    )
    runs = {
        "shop-ui": [
            summarize_run(_running_run(), now=NOW, service_order=["redis", "cart"]),
            summarize_run(evil, now=NOW, report_url="/convoy/reports/shop-ui/x"),
        ]
    }
    page = render_page(policies, runs, now=NOW)
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Shop &lt;b&gt;2.4&lt;/b&gt; rollout" in page
    assert "Wave 0" in page
    assert "Wave 1" in page
    assert "datastore orders (postgres)" in page
    assert "bad.yaml:16:9: services[0].dependsOn[1]: unknown service" in page
    assert 'http-equiv="refresh"' in page  # a run is in progress
    assert "ETA 6m00s" in page
    assert "2500/10000 rows" in page
    assert 'href="/convoy/reports/shop-ui/x"' in page
    assert 'href="/dags/shop-ui/runs/manual__2026-11-25T11%3A50%3A00%2B00%3A00"' in page

    quiet = render_page(policies, {}, now=NOW, runs_error="OperationalError")
    assert 'http-equiv="refresh"' not in quiet
    assert "Runs are unavailable: OperationalError" in quiet
    assert quiet.count("no runs yet") == 2


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("awaiting_input", "awaiting approval"),
        ("deferred", "awaiting approval"),
        ("success", "approved"),
        ("failed", "not approved"),
        ("upstream_failed", "not approved"),
        ("skipped", None),
    ],
)
def test_approval_status_of_a_run(state: str, expected: str | None) -> None:
    run = RunRecord(
        "shop-ui",
        "r1",
        "running",
        start=NOW,
        tasks=(TaskRecord("preflight", "success"), TaskRecord("approve", state)),
    )
    view = summarize_run(run, now=NOW)
    assert view.approval == expected
    assert view.to_dict()["approval"] == expected


def test_no_gate_no_approval_status() -> None:
    assert summarize_run(_running_run(), now=NOW).approval is None


def test_page_shows_a_run_waiting_for_approval(policies_dir: Path) -> None:
    from convoy.airflow import approval

    run = RunRecord(
        "shop-ui",
        "r1",
        "running",
        start=NOW,
        tasks=(TaskRecord(approval.TASK_ID, "awaiting_input"),),
    )
    runs = {"shop-ui": [summarize_run(run, now=NOW)]}
    page = render_page(gather_policies(policies_dir), runs, now=NOW)
    assert '<span class="badge s-up_for_retry">awaiting approval</span>' in page
