"""An inconclusive analysis in a rollout pod (execution: kubernetes) and the approval gate.

The pod cannot wait for the approver: it ends with its checkpoint, the task
parks with it as a local task does, and the answer either starts a
continuation pod (``verify --resume-json``) or fails the step at once. No
pod is started: ``run_pod`` (the KPO's own execute) is replaced by reading
the next result through the KPO's pod manager, as in ``test_verified_pods.py``;
the HITL request goes to a stand-in for the task runner's channel to the
supervisor, which records it. The real park and resume with pods are not
run here.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.bases.operator import ExecutorSafeguard
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskAwaitingInput
from airflow.sdk.execution_time import task_runner
from dag_policies import policy_dict
from fake_ti import FakePodManager, FakeTI

from convoy.airflow import build_dag, inconclusive
from convoy.airflow.analysis import ANALYSIS_KEY
from convoy.policy import load_policy

APPROVAL = {"required": True, "approvers": ["alice", "bob"], "timeoutMinutes": 15}
TASK = "wave_1.rollout_cart"
QUERY = 'sum(rate(http_requests_total{workload="cartservice", code=~"5.."}[1m]))'


def _run(**overrides: Any) -> dict[str, Any]:
    return {
        "template": "errors", "provider": "prometheus", "query": QUERY, "range": "[-inf, 0.01]",
        "where": "canary step 2 (1/3 pods updated)", "service": "cart", "phase": "inconclusive",
        "count": 1, "dryRun": False,
        "measurements": [{"at": "2026-11-26T21:00:00+00:00", "value": None,
                          "verdict": "inconclusive", "message": "no data"}],
        **overrides,
    }  # fmt: skip


STEP = {"step": 1, "pods": 1, "updated": 1}
PARKED = {
    "ok": False, "action": "verify", "error": "AnalysisInconclusive",
    "message": "analysis errors of cart (canary step 2 (1/3 pods updated)) was inconclusive",
    "analysis": [_run()], "canary": [STEP],
    "checkpoint": {"stage": "canary", "index": 2, "previous": {"server": "reg/cart:2.3.0"},
                   "result": None, "steps": [STEP], "runs": [_run()]},
}  # fmt: skip


class Comms:
    """The task runner's channel to the supervisor: keeps what the task sends."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, msg: Any) -> None:
        self.sent.append(msg)


@pytest.fixture
def comms(monkeypatch: pytest.MonkeyPatch) -> Comms:
    channel = Comms()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", channel, raising=False)
    return channel


def _policy() -> dict[str, Any]:
    """The shop policy in pods, behind an approval gate, with the template ``errors``."""
    return policy_dict(
        "shop",
        execution="kubernetes",
        approval=APPROVAL,
        analysisTemplates=[
            {"name": "errors", "query": QUERY, "thresholdRange": {"max": 0.01},
             "provider": {"prometheus": {"connId": "prom", "secretRef": {"name": "prom-creds"}}}},
        ],
    )  # fmt: skip


def _task(path: Path, task_id: str) -> tuple[Any, dict[str, Any]]:
    """The pod (runner) of task ``task_id`` of the policy at ``path``, rendered, and its context."""
    operator = build_dag(load_policy(path)).task_dict[task_id]
    operator.render_template_fields({"run_id": "manual__1", "params": {}})
    task = operator.pod_runner()
    ti = FakeTI(task_id)
    ti.freeze(path)
    ti.id = uuid.uuid4()
    context = {"ti": ti, "task_instance": ti, "task": operator, "dag": operator.dag}
    return task, {**context, "run_id": "manual__1"}


@pytest.fixture
def rollout(write_policy: Callable[..., Path]) -> tuple[Any, dict[str, Any]]:
    """The rollout task of cart (a canary analysed at step 2) and its task context."""
    data = _policy()
    data["services"][2]["canary"] = {"steps": [{"pods": 1}, {"analysis": "errors"}]}
    return _task(write_policy("shop.yaml", data), TASK)


def _pods(task: Any, monkeypatch: pytest.MonkeyPatch, *results: dict[str, Any]) -> list[Any]:
    """Each pod the task starts ends with the next result; returns what each pod was given."""
    started: list[Any] = []
    pending = list(results)

    def run_pod(context: Any) -> Any:
        ti = context["ti"]
        started.append(
            (list(task.arguments), ti.xcom_pull(task_ids=task.task_id, key=ANALYSIS_KEY))
        )
        task.__dict__["pod_manager"] = FakePodManager(pending.pop(0))
        result = task.extract_xcom(pod=None)
        if result.get("ok") is False:
            raise AirflowException("Pod returned a failure")
        return result

    monkeypatch.setattr(task, "run_pod", run_pod)
    return started


def _event(option: str, user: str = "alice") -> dict[str, Any]:
    return {
        "chosen_options": [option],
        "params_input": {},
        "responded_at": dt.datetime(2026, 11, 26, tzinfo=dt.UTC),
        "responded_by_user": {"id": user, "name": user},
    }


def _park(task: Any, context: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(TaskAwaitingInput) as parked:
        task.execute(context)
    assert parked.value.method_name == inconclusive.RESUME_METHOD
    return dict(parked.value.kwargs["checkpoint"])


def _decisions(context: dict[str, Any], task_id: str = TASK) -> list[Any]:
    runs = context["ti"].xcom_pull(task_ids=task_id, key=ANALYSIS_KEY)
    return [r.get("decision") for r in runs]


def test_parked_pod_goes_on_in_a_continuation_pod_once_approved(
    rollout: Any, comms: Comms, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, context = rollout
    done = {
        "ok": True, "verified": True, "action": "apply", "namespace": "shop",
        "kind": "Deployment", "name": "cartservice", "changed": True, "dryRun": False,
        "previousImages": {"server": "reg/cart:2.3.0"}, "status": "complete",
        "readySeconds": 2.0, "runId": "manual__1", "message": "",
        "analysis": [_run(decision="approved by alice")], "canary": [STEP, {"step": 3}],
    }  # fmt: skip
    pods = _pods(task, monkeypatch, PARKED, done)
    checkpoint = _park(task, context)
    # The request: what was measured, on which workload, and what approving does.
    [request] = comms.sent
    assert request.options == [inconclusive.APPROVE, inconclusive.REJECT]
    assert [u.id for u in request.assigned_users] == ["alice", "bob"]
    assert request.subject.startswith("Inconclusive analysis errors of cart (canary step 2")
    assert "shop/Deployment/cartservice" in request.body
    assert "the canary rolls out the remaining pods" in request.body
    assert (checkpoint["stage"], checkpoint["index"]) == ("canary", 2)
    assert checkpoint["runs"][-1]["decision"] == inconclusive.AWAITING
    assert _decisions(context) == [inconclusive.AWAITING]
    assert "--resume-json" not in pods[0][0]

    result = task.resume_after_decision(context, event=_event("Approve"), checkpoint=checkpoint)

    assert len(comms.sent) == 1
    args, analyses_before = pods[1]
    assert args.count("--resume-json") == 1
    assert args.count("--spec-json") == 1
    given = json.loads(args[args.index("--resume-json") + 1])
    assert (given["stage"], given["index"], given["steps"]) == ("canary", 2, [STEP])
    assert given["runs"][-1]["decision"] == "approved by alice"
    # The decision is in XCom while the continuation runs, and after it.
    assert [r["decision"] for r in analyses_before] == ["approved by alice"]
    assert _decisions(context) == ["approved by alice"]
    assert result == {"service": "cart", **done}
    assert context["ti"].xcom_pull(task_ids=TASK, key="result")["status"] == "complete"


def test_the_dags_operator_parks_and_goes_on_through_its_pod(
    rollout: Any, comms: Comms, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Airflow calls on the DAG's task (execute, then the resume method) reaches the KPO."""
    runner, context = rollout
    operator = context["task"]
    assert operator.pod_runner() is runner
    done = {"ok": True, "action": "apply", "status": "complete", "runId": "manual__1",
            "analysis": [_run(decision="approved by alice")]}  # fmt: skip
    pods = _pods(runner, monkeypatch, PARKED, done)
    # As the task runner calls it, with Airflow's nested-operator check on and strict:
    # the runner's execute must count as the running task's.
    monkeypatch.setattr(ExecutorSafeguard, "test_mode", False)
    runner.allow_nested_operators = False

    def as_task_runner(call: Callable[..., Any], **kwargs: Any) -> Any:
        ctx = contextvars.copy_context()
        ctx.run(ExecutorSafeguard.tracker.set, operator)
        return ctx.run(call, context, **kwargs)

    with pytest.raises(TaskAwaitingInput) as parked:
        as_task_runner(operator.execute)
    checkpoint = dict(parked.value.kwargs["checkpoint"])
    assert pods[0][0][0] == "verify"
    assert "{{" not in " ".join(pods[0][0])  # the task's rendered arguments
    result = as_task_runner(
        operator.resume_after_decision, event=_event("Approve"), checkpoint=checkpoint
    )
    assert result["ok"] is True
    assert pods[1][0].count("--resume-json") == 1
    assert pods[1][0].count("--spec-json") == 1
    killed: list[bool] = []
    monkeypatch.setattr(runner, "on_kill", lambda: killed.append(True))
    operator.on_kill()
    assert killed == [True]


@pytest.mark.parametrize(
    ("event", "decision"),
    [
        (_event("Reject", "bob"), "rejected by bob"),
        ({"error": "no response", "error_type": "timeout"}, "approval timed out"),
    ],
)
def test_rejected_or_unanswered_fails_at_once_without_a_pod(
    rollout: Any, comms: Comms, monkeypatch: pytest.MonkeyPatch, event: Any, decision: str
) -> None:
    task, context = rollout
    pods = _pods(task, monkeypatch, PARKED)
    checkpoint = _park(task, context)
    with pytest.raises(AirflowFailException, match=f"rollout of cart failed: .*; {decision}"):
        task.resume_after_decision(context, event=event, checkpoint=checkpoint)
    assert len(pods) == 1
    [recorded] = _decisions(context)
    assert recorded.startswith(decision)
    # The parked pod's failed result stays what the revert reads (it reverts this run's patch).
    assert context["ti"].xcom_pull(task_ids=TASK, key="result")["error"] == "AnalysisInconclusive"


def test_continuation_that_is_inconclusive_again_is_not_asked_twice(
    rollout: Any, comms: Comms, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, context = rollout
    again = json.loads(json.dumps(PARKED))
    again["checkpoint"]["index"] = 3
    again["checkpoint"]["runs"] = [_run(decision="approved by alice"), _run()]
    again["analysis"] = again["checkpoint"]["runs"]
    _pods(task, monkeypatch, PARKED, again)
    checkpoint = _park(task, context)
    with pytest.raises(AirflowFailException, match="rollout of cart failed: analysis errors"):
        task.resume_after_decision(context, event=_event("Approve"), checkpoint=checkpoint)
    assert len(comms.sent) == 1
    assert _decisions(context) == ["approved by alice", inconclusive.NOT_ASKED]


def test_dry_run_never_parks(rollout: Any, comms: Comms, monkeypatch: pytest.MonkeyPatch) -> None:
    task, context = rollout
    _pods(task, monkeypatch, PARKED)
    preflight = context["dag"].get_task("preflight")
    context["ti"].freeze(preflight.op_kwargs["policy_path"], dry_run=True)
    with pytest.raises(AirflowFailException, match="rollout of cart failed"):
        task.execute(context)
    assert "--dry-run" in task.arguments
    assert comms.sent == []


class Recorded:
    """A logger that keeps every line."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _line(self, msg: str, *args: Any, **_: Any) -> None:
        self.lines.append(msg % args if args else msg)

    debug = info = warning = error = exception = _line


class PodCreator(FakePodManager):
    def __init__(self) -> None:
        super().__init__({})
        self._log = Recorded()

    @property
    def log(self) -> Any:
        return self._log

    def create_pod(self, pod: Any) -> Any:
        self.log.debug("Pod Creation Request: \n%s", json.dumps(pod.to_dict(), default=str))
        self.log.exception("Exception when attempting to create Namespaced Pod: %s", pod.to_dict())
        return pod


def test_continuation_pod_request_is_not_logged(rollout: Any) -> None:
    """Its checkpoint carries the rendered queries and their values."""
    task, context = rollout
    task.reattach_on_restart = False

    def created(resume: Any) -> list[str]:
        task._convoy_resume = resume
        task.prepare_arguments(context)
        manager, logger = PodCreator(), Recorded()
        task.__dict__["pod_manager"] = manager
        task._cached_logger = logger
        task.get_or_create_pod(task.build_pod_request_obj(dry_run=True), context)
        return logger.lines + manager._log.lines

    first = "\n".join(created(None))
    assert "Starting pod" in first
    assert "--spec-json" in first
    lines = created(dict(PARKED["checkpoint"]))
    assert "--resume-json" in task.arguments
    assert not [line for line in lines if "--resume-json" in line or QUERY in line]
    assert not [line for line in lines if "Starting pod" in line]
    assert lines[-1] == (
        "the continuation pod's request is not logged: its checkpoint carries the rendered queries"
    )


WAVE_TASK = "wave_0.analysis"


@pytest.fixture
def wave(write_policy: Callable[..., Path]) -> tuple[Any, dict[str, Any]]:
    """Wave 0's analysis pod (template errors on redis and currency) and its task context."""
    data = _policy()
    data["rollout"].update(waveAnalysis=["errors"])
    return _task(write_policy("shop.yaml", data), WAVE_TASK)


def _wave_parked(context: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Wave 0's steps, and an analyze result inconclusive on the first one's analysis."""
    from convoy.airflow.preflight import run_record

    steps = [s for w in run_record(context).plan.waves if w.index == 0 for s in w.steps]
    run = _run(where="wave 0", service=steps[0].service)
    return steps, {
        "ok": False, "action": "analyze", "error": "AnalysisInconclusive",
        "message": f"analysis errors of {steps[0].service} (wave 0) was inconclusive",
        "analysis": [run],
        "checkpoint": {"step": 0, "template": 0, "service": steps[0].service, "runs": [run]},
    }  # fmt: skip


def test_parked_wave_analysis_pod_goes_on_in_a_continuation_pod_once_approved(
    wave: Any, comms: Comms, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, context = wave
    steps, parked = _wave_parked(context)
    assert len(steps) > 1
    first, second = steps[0], steps[1]
    done = {
        "ok": True, "action": "analyze", "dryRun": False,
        "analysis": [_run(where="wave 0", service=first.service, decision="approved by alice"),
                     _run(where="wave 0", service=second.service, phase="successful")],
    }  # fmt: skip
    pods = _pods(task, monkeypatch, parked, done)
    checkpoint = _park(task, context)
    [request] = comms.sent
    assert request.subject.startswith(f"Inconclusive analysis errors of {first.service} (wave 0)")
    assert f"{first.namespace}/{first.kind}/{first.workload}" in request.body
    assert f"wave 0's analysis goes on with {second.service}" in request.body
    assert (checkpoint["step"], checkpoint["template"]) == (0, 0)
    assert _decisions(context, WAVE_TASK) == [inconclusive.AWAITING]
    assert "--resume-json" not in pods[0][0]

    result = task.resume_after_decision(context, event=_event("Approve"), checkpoint=checkpoint)

    assert len(comms.sent) == 1
    args, analyses_before = pods[1]
    assert args[0] == "analyze"
    assert args.count("--resume-json") == 1
    given = json.loads(args[args.index("--resume-json") + 1])
    assert (given["step"], given["template"]) == (0, 0)
    assert given["runs"][-1]["decision"] == "approved by alice"
    assert [r["decision"] for r in analyses_before] == ["approved by alice"]
    assert _decisions(context, WAVE_TASK) == ["approved by alice", None]
    assert result["ok"] is True


@pytest.mark.parametrize(
    ("event", "decision"),
    [
        (_event("Reject", "bob"), "rejected by bob"),
        ({"error": "no response", "error_type": "timeout"}, "approval timed out"),
    ],
)
def test_rejected_wave_analysis_fails_at_once_without_a_pod(
    wave: Any, comms: Comms, monkeypatch: pytest.MonkeyPatch, event: Any, decision: str
) -> None:
    task, context = wave
    _steps, parked = _wave_parked(context)
    pods = _pods(task, monkeypatch, parked)
    checkpoint = _park(task, context)
    with pytest.raises(AirflowFailException, match=f"wave 0 analysis failed: .*; {decision}"):
        task.resume_after_decision(context, event=event, checkpoint=checkpoint)
    assert len(pods) == 1
    [recorded] = _decisions(context, WAVE_TASK)
    assert recorded.startswith(decision)
