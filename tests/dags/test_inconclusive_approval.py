"""An inconclusive analysis and the approval gate: the operators, the answer, the resume.

The park itself (the HITL request, ``awaiting_input``) needs Airflow's task
runner and is covered end to end in ``tests/e2e/test_approval_e2e.py``; here
the tasks' callables run with the answer a parked task resumes with, against
the emulated cluster and an HTTP check on the emulator's ``/metrics``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from dag_policies import policy_dict
from fake_ti import FakeTI

from convoy.airflow import analysis, build_dag, inconclusive, local_rollout
from convoy.airflow.cheap_setattr import ConvoyPythonOperator
from convoy.policy import load_policy
from convoy.rollout.analysis import AnalysisInconclusive

APPROVAL = {"required": True, "approvers": ["alice"], "timeoutMinutes": 15}
HEALTH = {"name": "health", "provider": {"http": {"connId": "emu_http", "path": "/metrics"}},
          "count": 1}  # fmt: skip
NS = "shop"


def _policy(**overrides: Any) -> dict[str, Any]:
    data = policy_dict("shop", analysisTemplates=[copy.deepcopy(HEALTH)], **overrides)
    data["services"] = data["services"][:2]  # redis and currency: wave 0
    return data


def _event(option: str | None, user: str = "alice") -> dict[str, Any]:
    if option is None:
        return {"error": "no response", "error_type": "timeout"}
    return {
        "chosen_options": [option],
        "params_input": {},
        "responded_at": dt.datetime(2026, 11, 26, tzinfo=dt.UTC),
        "responded_by_user": {"id": user, "name": user},
    }


def _inconclusive(service: str, where: str) -> dict[str, Any]:
    return {
        "template": "health", "provider": "http", "query": "/metrics", "range": "2xx",
        "where": where, "service": service, "phase": "inconclusive", "count": 1,
        "dryRun": False, "decision": inconclusive.AWAITING,
        "measurements": [{"at": "2026-11-26T21:00:00+00:00", "value": None,
                          "verdict": "inconclusive", "message": "unreachable"}],
    }  # fmt: skip


def test_verified_steps_of_a_policy_with_approval_can_park(
    write_policy: Callable[..., Path],
) -> None:
    data = _policy(approval=APPROVAL)
    data["rollout"].update(waveAnalysis=["health"])
    data["services"][0]["analysis"] = ["health"]
    dag = build_dag(load_policy(write_policy("s.yaml", data)))
    t = dag.task_dict
    assert type(t["wave_0.rollout_redis"]) is inconclusive.VerifiedStepOperator
    assert type(t["wave_0.analysis"]) is inconclusive.VerifiedStepOperator
    # Nothing to decide about: currency has no analysis of its own.
    assert type(t["wave_0.rollout_currency"]) is ConvoyPythonOperator

    data.pop("approval")
    dag = build_dag(load_policy(write_policy("t.yaml", {**data, "metadata": {
        **data["metadata"], "name": "plain"}})))  # fmt: skip
    assert type(dag.task_dict["wave_0.rollout_redis"]) is ConvoyPythonOperator
    assert type(dag.task_dict["wave_0.analysis"]) is ConvoyPythonOperator


def test_the_answer_becomes_the_decision() -> None:
    gate = type("Gate", (), {"approvers": ("alice",), "timeout_minutes": 15})()
    assert inconclusive.decision(_event("Approve"), gate) == (True, "approved by alice")
    assert inconclusive.decision(_event("Reject", "bob"), gate) == (False, "rejected by bob")
    assert inconclusive.decision(_event(None), gate) == (
        False,
        "approval timed out: no answer within 15 min",
    )


def test_resume_runs_the_callable_again_with_the_answer() -> None:
    seen: list[dict[str, Any]] = []

    def step(**kwargs: Any) -> str:
        seen.append(kwargs)
        return "done"

    op = inconclusive.VerifiedStepOperator(task_id="t", python_callable=step, op_kwargs={"wave": 1})
    result = op.resume_after_decision(
        {"run_id": "r"}, event=_event("Approve"), checkpoint={"step": 0}
    )
    assert result == "done"
    [kwargs] = seen
    assert kwargs["wave"] == 1
    assert kwargs["resume"]["checkpoint"] == {"step": 0}
    assert kwargs["resume"]["event"]["chosen_options"] == ["Approve"]


@pytest.fixture
def wave(
    emulated_cluster: Any,
    write_policy: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[dict[str, Any]], Any]:
    """``run(resume)``: wave 0's analysis task callable, resumed with ``resume``."""
    kubeconfig = emulated_cluster.write_kubeconfig(tmp_path / "kubeconfig")
    conn = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(conn))
    url = urllib.parse.urlsplit(emulated_cluster.url)
    http = {"conn_type": "http", "host": url.hostname, "port": url.port, "schema": "http"}
    monkeypatch.setenv("AIRFLOW_CONN_EMU_HTTP", json.dumps(http))
    data = _policy(approval=APPROVAL)
    data["rollout"].update(waveAnalysis=["health"])
    path = write_policy("shop.yaml", data)
    loaded = load_policy(path)
    emulated_cluster.seed_from_policy(loaded.policy)
    task = build_dag(loaded).task_dict["wave_0.analysis"]

    def run(resume: dict[str, Any]) -> Any:
        ti = FakeTI("wave_0.analysis")
        ti.freeze(path)
        try:
            return analysis.wave_analysis(
                wave=0, conn_id="kubernetes_default", in_cluster=False, resume=resume,
                ti=ti, task_instance=ti, task=task, run_id="r",
            ), ti  # fmt: skip
        except AnalysisInconclusive as exc:
            return exc, ti

    return run


def test_an_approved_wave_analysis_goes_on_with_the_next_service(wave: Any) -> None:
    parked = _inconclusive("currency", "wave 0")  # wave 0 is currency, then redis
    runs, ti = wave({"event": _event("Approve"), "checkpoint": {
        "step": 0, "template": 0, "runs": [parked]}})  # fmt: skip
    # currency's analysis is not measured again; redis's is.
    assert [(r["service"], r["phase"], r.get("decision")) for r in runs] == [
        ("currency", "inconclusive", "approved by alice"),
        ("redis", "successful", None),
    ]
    assert _pushed(ti) == runs


def test_a_rejected_wave_analysis_fails_with_the_decision(wave: Any) -> None:
    parked = _inconclusive("redis", "wave 0")
    before = {k: v for k, v in parked.items() if k != "decision"}
    error, ti = wave({"event": _event("Reject"), "checkpoint": {
        "step": 1, "template": 0, "runs": [before | {"phase": "successful", "service": "currency"},
                                            parked]}})  # fmt: skip
    assert isinstance(error, AnalysisInconclusive)
    assert "was inconclusive: unreachable; rejected by alice" in str(error)
    assert error.details["decision"] == "rejected by alice"
    pushed = _pushed(ti)
    assert [r.get("decision") for r in pushed] == [None, "rejected by alice"]


def test_a_rejected_rollout_fails_at_once_and_keeps_its_first_record(
    emulated_cluster: Any, write_policy: Callable[..., Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    kubeconfig = emulated_cluster.write_kubeconfig(tmp_path / "kubeconfig")
    conn = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(conn))
    data = _policy(approval=APPROVAL)
    data["services"][1]["analysis"] = ["health"]
    path = write_policy("shop.yaml", data)
    emulated_cluster.seed_from_policy(load_policy(path).policy)
    ti = FakeTI("wave_0.rollout_currency")
    ti.freeze(path)
    parked = _inconclusive("currency", "after rollout")
    result = {"action": "apply", "namespace": NS, "kind": "Deployment", "name": "currencyservice",
              "changed": True, "dryRun": False, "previousImages": {"server": "reg/currency:2.3.0"},
              "images": {"server": "reg/currency:2.4.0"}, "status": "complete",
              "readySeconds": 1.0, "replicas": {"desired": 3}, "runId": "r",
              "message": ""}  # fmt: skip
    checkpoint = {"stage": "analysis", "index": 0, "result": result, "runs": [parked]}
    step = local_rollout.step_dict(_step(path, "currency"))
    with pytest.raises(AirflowFailException, match="rejected by alice"):
        local_rollout.rollout_local(
            step=step, conn_id="kubernetes_default", in_cluster=False, deadline_seconds=30,
            verify=analysis.FROM_RUN_RECORD, ti=ti, run_id="r",
            resume={"event": _event("Reject"), "checkpoint": checkpoint},
        )  # fmt: skip
    # The images before the first part stay what the revert restores.
    assert local_rollout.BEFORE_KEY not in ti.keys()  # noqa: SIM118 (a list of pushes)
    assert _pushed(ti)[0]["decision"] == "rejected by alice"


def _pushed(ti: FakeTI) -> Any:
    return ti.xcom_pull(task_ids=ti.task_id, key=analysis.ANALYSIS_KEY)


def _step(path: Path, service: str) -> Any:
    from convoy.plan import build_plan

    return build_plan(load_policy(path)).step(service)


def test_failure_lines_leave_out_approved_analyses() -> None:
    approved = _inconclusive("redis", "wave 0") | {"decision": "approved by alice"}
    rejected = _inconclusive("cart", "after rollout") | {"decision": "rejected by alice"}
    lines = analysis.failure_lines([approved, rejected])
    assert lines == [
        "cart: analysis health (after rollout) inconclusive (rejected by alice): "
        "values no data outside 2xx; query: /metrics"
    ]
