"""``approval.required``: a run waits for a human, who answers through Airflow's REST API.

A real ``airflow api-server`` (SimpleAuthManager with two users, ``approver``
and ``bystander``; JWT tokens from ``POST /auth/token``) shares the tests'
metadata DB with an ``airflow dags test`` subprocess (local execution against
the emulated cluster). The ``approve`` task parks in ``awaiting_input``; once
``dags test`` logs that it waits, the test finds its HITL detail with
``GET /api/v2/dags/<dag>/dagRuns/~/hitlDetails`` and answers with
``PATCH .../taskInstances/approve/-1/hitlDetails`` (see :func:`wait_for_request`):

- approve -> the run rolls out and succeeds (a non-approver gets 403 first);
- reject -> the run fails, no workload was patched, the report says rejected;
- no answer: the scheduler's ``awaiting_input`` timeout sweep (called here,
  with the deadline moved into the past, since ``dags test`` runs no
  scheduler) ends it like a rejection.

An inconclusive analysis goes to the same approvers: cart rolls out as a
canary (one pod, then an analysis on a real Prometheus whose query finds no
series), its rollout task parks with the measurements as the request body, and

- approve -> the canary goes on from its next step and the run succeeds, the
  decision in the XCom ``analysis`` and the report;
- reject -> the step fails and the rollback restores the image.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_helpers import AIRFLOW, images

pytestmark = pytest.mark.e2e

DAG_ID = "shop-demo"
PREVIOUS = "2.3.0"
APPROVER, BYSTANDER = "approver", "bystander"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Api:
    """The REST API of one api-server, with a bearer token per user."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.tokens: dict[str, str] = {}

    def call(
        self, method: str, path: str, body: Any = None, user: str | None = APPROVER
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if user is not None:
            headers["Authorization"] = f"Bearer {self.tokens[user]}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 (local http)
            self.base + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
                text = response.read().decode()
                return int(response.status), json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            text = exc.read().decode()
            try:
                return exc.code, json.loads(text)
            except ValueError:
                return exc.code, text

    def login(self, user: str, password: str) -> None:
        status, body = self.call(
            "POST", "/auth/token", {"username": user, "password": password}, user=None
        )
        assert status == 201, body
        self.tokens[user] = body["access_token"]


@pytest.fixture(scope="module")
def api(airflow_db: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """``airflow api-server`` over the tests' AIRFLOW_HOME, logged in as both users."""
    root = tmp_path_factory.mktemp("api-server")
    passwords = root / "passwords.json"
    port = _free_port()
    env = {
        **os.environ,
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{APPROVER}:admin,{BYSTANDER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": "convoy-approval-test-" + "x" * 64,
    }
    log = root / "api-server.log"
    proc = subprocess.Popen(
        [AIRFLOW, "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = Api(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"api-server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                if client.call("GET", "/api/v2/monitor/health", user=None)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"api-server not healthy:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        for user, password in json.loads(passwords.read_text()).items():
            client.login(user, password)
        yield client
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def approval_policy(policy_dir: Callable[..., Any]) -> Any:
    """The demo policy cut to redis -> cart (two waves), with an approval by ``approver``."""
    from convoy.policy import load_policy

    path = policy_dir(crashloop=False).path
    data = yaml.safe_load(path.read_text())
    data["services"] = [s for s in data["services"] if s["name"] in ("redis", "cart")]
    data["approval"] = {"required": True, "approvers": [APPROVER], "timeoutMinutes": 30}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_policy(path)


class DagsTest:
    """``airflow dags test`` in the background; its output in a file."""

    def __init__(self, tmp_path: Path, env: dict[str, str], dag_id: str = DAG_ID) -> None:
        self.log = tmp_path / "dags-test.log"
        self.proc = subprocess.Popen(
            [AIRFLOW, "dags", "test", dag_id],
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"airflow dags test did not finish:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def dags_test(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., DagsTest]]:
    monkeypatch.setenv("CONVOY_REPORTS_DIR", str(tmp_path / "reports"))
    started: list[DagsTest] = []

    def start(dag_id: str = DAG_ID) -> DagsTest:
        started.append(DagsTest(tmp_path, dict(os.environ), dag_id))
        return started[-1]

    yield start
    for run in started:
        run.stop()


#: What ``airflow dags test`` logs, once per loop pass, while ``approve`` is parked.
WAITING = "Waiting for Human-in-the-loop input for tasks: ['{task}']"


def wait_for_request(
    api: Api, run: DagsTest, timeout: float = 90, *, dag_id: str = DAG_ID, task: str = "approve"
) -> dict[str, Any]:
    """The pending HITL detail of ``task``, once ``dags test`` waits for the answer.

    An answer must not be recorded as soon as the detail is visible. The operator
    writes the detail, then parks the task through the in-process Execution API
    (``awaiting_input``); only after that does Airflow 3.3.2's ``DAG.test``
    (``_run_task`` in ``airflow/sdk/definitions/dag.py``) write the state the task
    runner returned, ``awaiting_input``, back onto the task instance
    (``ti.set_state(taskrun_result.ti.state)``, which re-reads the row and merges).
    An answer whose ``PATCH`` lands between the park and that write keeps its
    response (``response_received``; a second ``PATCH`` gets 409), but its resume
    (``awaiting_input`` -> ``scheduled``) is overwritten, and with no scheduler
    nothing resumes the task again: ``dags test`` logs :data:`WAITING` until it is
    killed. That window holds the task runner's ``finalize`` (listeners), so load
    widens it. :data:`WAITING` is logged by the next pass of ``DAG.test``'s loop,
    after the write-back, so an answer after it always resumes the task (as a
    human answering in the UI does); it also keeps the answer clear of the park
    itself, whose guard against an earlier answer relies on row locks that SQLite
    does not take. The write-back is ``DAG.test``'s own: a worker only reports
    the park to the Execution API.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run.proc.poll() is not None:
            pytest.fail(f"dags test ended before the approval:\n{run.output()}")
        if WAITING.format(task=task) not in run.output():
            time.sleep(0.5)
            continue
        status, body = api.call(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/~/hitlDetails?response_received=false"
        )
        assert status == 200, body
        pending = [d for d in body["hitl_details"] if d["task_instance"]["task_id"] == task]
        if pending:
            return dict(pending[-1])
        time.sleep(0.5)
    pytest.fail(f"no request of {task} after {timeout}s:\n{run.output()}")


def respond(
    api: Api,
    run_id: str,
    option: str,
    user: str = APPROVER,
    *,
    dag_id: str = DAG_ID,
    task: str = "approve",
) -> tuple[int, Any]:
    return api.call(
        "PATCH",
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task}/-1/hitlDetails",
        {"chosen_options": [option]},
        user=user,
    )


def task_states(api: Api, run_id: str, dag_id: str = DAG_ID) -> dict[str, str | None]:
    status, body = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
    assert status == 200, body
    return {ti["task_id"]: ti["state"] for ti in body["task_instances"]}


def run_state(api: Api, run_id: str, dag_id: str = DAG_ID) -> str:
    status, body = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
    assert status == 200, body
    return str(body["state"])


def assert_nothing_changed(
    cluster: Any, policy: Any, seeded: dict[str, dict[str, str]], states: dict[str, Any]
) -> None:
    assert images(cluster, policy) == seeded
    assert not [r for r in cluster.requests if r.verb == "PATCH"]
    assert states["approve"] == "failed"
    assert states["preflight"] == "success"
    assert {states[t] for t in states if ".rollout_" in t} == {"upstream_failed"}
    assert states["rollback.gate"] == "skipped"
    assert {states[t] for t in states if t.startswith("rollback.revert")} == {"skipped"}
    assert states["report"] == "success"
    assert states["outcome"] == "failed"


def test_approved_run_rolls_out(
    api: Api, cluster: Any, approval_policy: Any, dags_test: Callable[[], DagsTest]
) -> None:
    seeded = cluster.seed_from_policy(approval_policy.policy, previous_tag=PREVIOUS)
    run = dags_test()
    request = wait_for_request(api, run)
    run_id = request["task_instance"]["dag_run_id"]
    assert request["options"] == ["Approve", "Reject"]
    assert request["subject"] == f"Approve the upgrade {DAG_ID}?"
    assert [u["id"] for u in request["assigned_users"]] == [APPROVER]
    # The body is the run's dry-run diff: current images read from the cluster.
    body = request["body"]
    redis_now = seeded["redis"]["redis"]
    assert f"| `redis` | StatefulSet/redis-cart | `redis` | `{redis_now}` |" in body
    assert "`registry.example.com/cart:2.4.0`" in body
    assert "**2 container image(s) change**" in body
    # Nothing happened while waiting.
    assert not [r for r in cluster.requests if r.verb == "PATCH"]

    status, answer = respond(api, run_id, "Approve", user=BYSTANDER)
    assert status == 403, answer
    status, answer = respond(api, run_id, "Approve")
    assert status == 200, answer
    assert answer["chosen_options"] == ["Approve"]

    assert run.wait() == 0, run.output()
    assert run_state(api, run_id) == "success"
    states = task_states(api, run_id)
    assert states["approve"] == "success"
    assert {states[t] for t in states if ".rollout_" in t} == {"success"}
    assert states["rollback.gate"] == "skipped"
    assert images(cluster, approval_policy.policy) == {
        s.name: dict(s.containers) for s in approval_policy.policy.services
    }


def test_rejected_run_changes_nothing(
    api: Api,
    cluster: Any,
    approval_policy: Any,
    dags_test: Callable[[], DagsTest],
    tmp_path: Path,
) -> None:
    seeded = cluster.seed_from_policy(approval_policy.policy, previous_tag=PREVIOUS)
    run = dags_test()
    run_id = wait_for_request(api, run)["task_instance"]["dag_run_id"]
    status, answer = respond(api, run_id, "Reject")
    assert status == 200, answer

    assert run.wait() != 0, run.output()
    assert run_state(api, run_id) == "failed"
    assert_nothing_changed(cluster, approval_policy.policy, seeded, task_states(api, run_id))
    assert f"rejected by {APPROVER}; nothing was changed" in run.output()
    (md,) = (tmp_path / "reports" / DAG_ID).glob("*/report.md")
    assert "**Final state: REJECTED**" in md.read_text()


def test_unanswered_approval_times_out(
    api: Api,
    cluster: Any,
    approval_policy: Any,
    dags_test: Callable[[], DagsTest],
    tmp_path: Path,
) -> None:
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    seeded = cluster.seed_from_policy(approval_policy.policy, previous_tag=PREVIOUS)
    run = dags_test()
    run_id = wait_for_request(api, run)["task_instance"]["dag_run_id"]
    with create_session() as session:
        ti = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == DAG_ID,
                TaskInstance.run_id == run_id,
                TaskInstance.task_id == "approve",
            )
        ).one()
        assert ti.state == "awaiting_input"
        # timeoutMinutes: 30 reached the task as its response deadline.
        left = ti.trigger_timeout - dt.datetime.now(dt.UTC)
        assert dt.timedelta(minutes=29) < left <= dt.timedelta(minutes=30)
        ti.trigger_timeout = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()

    assert run.wait() != 0, run.output()
    assert run_state(api, run_id) == "failed"
    assert_nothing_changed(cluster, approval_policy.policy, seeded, task_states(api, run_id))
    assert "approval timed out: no answer within 30 min" in run.output()
    (md,) = (tmp_path / "reports" / DAG_ID).glob("*/report.md")
    assert "**Final state: APPROVAL TIMED OUT**" in md.read_text()


# ------------------------------------------------------------ inconclusive analyses

CANARY_DAG = "cart-canary"
CART = "registry.example.com/cart:2.4.0"
#: A query about series nobody exports: Prometheus answers an empty vector ("no data").
NO_DATA = (
    'sum(rate(http_requests_total{namespace="{{ namespace }}", workload="{{ workload }}",'
    ' code="418"}[5s]))'
)


@pytest.fixture
def canary_policy(
    cluster: Any,
    start_prometheus: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """cart as a canary (one pod, then an analysis that finds no data), with an approval gate."""
    import urllib.parse

    from convoy.policy import load_policy

    url = urllib.parse.urlsplit(start_prometheus([urllib.parse.urlsplit(cluster.url).netloc]))
    conn = {"conn_type": "http", "host": url.hostname, "port": url.port, "schema": "http"}
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", json.dumps(conn))
    root = tmp_path / "policies"
    root.mkdir()
    monkeypatch.setenv("CONVOY_POLICIES_DIR", str(root))
    data = {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {"name": CANARY_DAG, "owner": "platform"},
        "schedule": None,
        "startDate": "2026-01-01",
        "execution": "local",
        "kubernetes": {"namespace": "shop", "runnerImage": "registry.example.com/convoy:0.1.0"},
        "approval": {"required": True, "approvers": [APPROVER], "timeoutMinutes": 30},
        "analysisTemplates": [
            {"name": "teapots", "provider": {"prometheus": {"connId": "prometheus_default"}},
             "query": NO_DATA, "thresholdRange": {"max": 0}, "interval": "500ms", "count": 2},
        ],
        "rollout": {"progressDeadlineSeconds": 60},
        "services": [
            {"name": "cart", "workload": {"kind": "Deployment", "name": "cartservice"},
             "containers": {"server": CART},
             "canary": {"steps": [{"pods": 1}, {"analysis": "teapots"}]}},
        ],
        "rollback": {"automatic": True},
    }  # fmt: skip
    path = root / "cart.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_policy(path)


CART_TASK = "wave_0.rollout_cart"


def _inconclusive_request(api: Api, run: DagsTest) -> tuple[str, dict[str, Any]]:
    """Approve the plan, then wait for cart's inconclusive analysis; its run id and request."""
    run_id = wait_for_request(api, run, dag_id=CANARY_DAG)["task_instance"]["dag_run_id"]
    assert respond(api, run_id, "Approve", dag_id=CANARY_DAG)[0] == 200
    request = wait_for_request(api, run, dag_id=CANARY_DAG, task=CART_TASK)
    assert request["options"] == ["Approve", "Reject"]
    assert [u["id"] for u in request["assigned_users"]] == [APPROVER]
    assert request["subject"].startswith("Inconclusive analysis teapots of cart (canary step 2 (")
    body = request["body"]
    assert "was **inconclusive**" in body
    assert 'code="418"' in body  # the rendered query
    assert 'workload="cartservice"' in body
    assert "passes in [-inf, 0]" in body
    assert body.count("| no data | inconclusive |") == 2  # every measurement
    assert "the canary rolls out the remaining pods" in body
    return run_id, request


def _xcom(api: Api, run_id: str, task: str, key: str) -> Any:
    status, body = api.call(
        "GET",
        f"/api/v2/dags/{CANARY_DAG}/dagRuns/{run_id}/taskInstances/{task}/xcomEntries/{key}"
        "?deserialize=true",
    )
    assert status == 200, body
    value = body["value"]
    return json.loads(value) if isinstance(value, str) else value


def test_approved_inconclusive_analysis_resumes_the_canary(
    api: Api, cluster: Any, canary_policy: Any, dags_test: Callable[..., DagsTest], tmp_path: Path
) -> None:
    seeded = cluster.seed_from_policy(canary_policy.policy, previous_tag=PREVIOUS)
    run = dags_test(CANARY_DAG)
    run_id, _request = _inconclusive_request(api, run)
    # Parked with the canary held: the Deployment paused, its first new pod alone.
    workload = cluster.get_workload("Deployment", "shop", "cartservice")
    assert workload["spec"]["paused"] is True
    pods = cluster.pods("Deployment", "shop", "cartservice")
    assert 1 <= sum(p["spec"]["containers"][0]["image"] == CART for p in pods) < len(pods)
    assert run_state(api, run_id, CANARY_DAG) == "running"

    assert respond(api, run_id, "Approve", dag_id=CANARY_DAG, task=CART_TASK)[0] == 200
    assert run.wait() == 0, run.output()
    assert run_state(api, run_id, CANARY_DAG) == "success"
    states = task_states(api, run_id, CANARY_DAG)
    assert states[CART_TASK] == "success"
    assert states["rollback.gate"] == "skipped"
    assert images(cluster, canary_policy.policy) == {"cart": {"server": CART}}
    assert cluster.get_workload("Deployment", "shop", "cartservice")["spec"]["paused"] is False
    # The canary went on after step 2; its steps were not done again.
    steps = _xcom(api, run_id, CART_TASK, "canary")
    assert [s["step"] for s in steps] == [1, 2]
    [analysis] = _xcom(api, run_id, CART_TASK, "analysis")
    assert analysis["phase"] == "inconclusive"
    assert analysis["decision"] == f"approved by {APPROVER}"
    result = _xcom(api, run_id, CART_TASK, "return_value")
    assert result["previousImages"] == seeded["cart"]
    (md,) = (tmp_path / "reports" / CANARY_DAG).glob("*/report.md")
    text = md.read_text()
    assert "**Final state: SUCCESS**" in text
    assert f"Decision: **approved by {APPROVER}**" in text
    (html,) = (tmp_path / "reports" / CANARY_DAG).glob("*/report.html")
    assert f"approved by {APPROVER}" in html.read_text()


def test_rejected_inconclusive_analysis_rolls_back(
    api: Api, cluster: Any, canary_policy: Any, dags_test: Callable[..., DagsTest], tmp_path: Path
) -> None:
    seeded = cluster.seed_from_policy(canary_policy.policy, previous_tag=PREVIOUS)
    run = dags_test(CANARY_DAG)
    run_id, _request = _inconclusive_request(api, run)
    assert respond(api, run_id, "Reject", dag_id=CANARY_DAG, task=CART_TASK)[0] == 200

    assert run.wait() != 0, run.output()
    assert run_state(api, run_id, CANARY_DAG) == "failed"
    states = task_states(api, run_id, CANARY_DAG)
    assert states[CART_TASK] == "failed"
    assert states["rollback.gate"] == "success"
    assert states["rollback.revert_cart"] == "success"
    assert images(cluster, canary_policy.policy) == seeded
    assert cluster.get_workload("Deployment", "shop", "cartservice")["spec"]["paused"] is False
    assert f"was inconclusive: no data; rejected by {APPROVER}" in run.output()
    [analysis] = _xcom(api, run_id, CART_TASK, "analysis")
    assert analysis["decision"] == f"rejected by {APPROVER}"
    (md,) = (tmp_path / "reports" / CANARY_DAG).glob("*/report.md")
    assert f"Decision: **rejected by {APPROVER}**" in md.read_text()
