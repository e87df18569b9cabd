"""The emulator checked by the real ``kubectl`` (a client written elsewhere).

For every behaviour (ready, crashloop, imagepull, never-ready, unschedulable,
slow, paused, partitioned) ``kubectl set image`` + ``kubectl rollout status
--timeout`` on one workload and convoy's runner on a twin workload must reach
the same verdict, and kubectl's last status line must be what
:func:`convoy.rollout.status.judge` says of the same object. ``kubectl rollout
pause/resume/undo``, ``set image --dry-run=server`` and ``get`` (server-side
Table with the usual columns) must behave as on a cluster, and so must the pods
kubectl shows: an unschedulable pod is ``Pending`` on no node, a crash-looping
one ``CrashLoopBackOff`` with its restarts and the last termination.

``kubectl`` is the one on PATH (v1.32 on these machines); ``make system-deps``
installs Debian's ``kubernetes-client`` only where there is none.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from convoy.emulator import EmulatedCluster
from convoy.rollout import RetryPolicy, RolloutRunner
from convoy.rollout.errors import CrashLooping, PodUnschedulable, RolloutError
from convoy.rollout.runner import Target
from convoy.rollout.status import diagnose, judge

KUBECTL = shutil.which("kubectl")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        KUBECTL is None,
        reason="no kubectl on PATH (make system-deps installs Debian's kubernetes-client as root)",
    ),
]

NS = "shop"
OLD = "registry.example.com/app:1.0.0"
#: Seconds kubectl and the runner wait for a rollout that does not finish (and for one
#: that does: it returns as soon as it finishes, a loaded machine only makes it slower).
TIMEOUT_S = 4
FINISH_TIMEOUT_S = 30
#: A Deployment's progressDeadlineSeconds: kubectl reports "exceeded its progress deadline".
PROGRESS_DEADLINE_S = 2
FAST_RETRY = RetryPolicy(attempts=4, base_seconds=0.01, max_seconds=0.05, conflict_attempts=4)


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def last(self) -> str:
        """kubectl's last status line (stdout), or its error without ``error: ``."""
        if self.rc != 0 and "timed out waiting" not in self.err:
            return self.err.strip().splitlines()[-1].removeprefix("error: ")
        lines = [line for line in self.out.splitlines() if line.strip()]
        return lines[-1] if lines else ""


class Kubectl:
    def __init__(self, kubeconfig: Path, home: Path) -> None:
        assert KUBECTL is not None
        self.binary = KUBECTL
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),  # discovery cache under the test's own directory
            "KUBECONFIG": str(kubeconfig),
            "LANG": "C",
        }

    def __call__(self, *args: str, check: bool = True, timeout: float = 60) -> Result:
        proc = subprocess.run(
            [self.binary, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} -> {proc.returncode}: {proc.stderr}")
        return result


@pytest.fixture
def cluster() -> Iterator[EmulatedCluster]:
    with EmulatedCluster(tick_seconds=0.03) as emulated:
        yield emulated


@pytest.fixture
def kubectl(cluster: EmulatedCluster, tmp_path: Path) -> Kubectl:
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    (tmp_path / "home").mkdir()
    return Kubectl(kubeconfig, tmp_path / "home")


def runner(cluster: EmulatedCluster) -> RolloutRunner:
    return RolloutRunner(cluster.api_client(), retry=FAST_RETRY, stall_seconds=1.0,
                         progress_interval=5.0)  # fmt: skip


def resource(kind: str) -> str:
    return {"Deployment": "deploy", "StatefulSet": "sts", "DaemonSet": "ds"}[kind]


def add(cluster: EmulatedCluster, kind: str, name: str) -> None:
    cluster.add_workload(kind, NS, name, {"main": OLD}, replicas=3,
                         progress_deadline_seconds=PROGRESS_DEADLINE_S)  # fmt: skip


# (kind, behaviour, does the rollout finish?)
CASES = [
    *[
        (kind, behaviour, behaviour in ("ready", "slow"))
        for kind in ("Deployment", "StatefulSet")
        for behaviour in ("ready", "crashloop", "imagepull", "never-ready", "unschedulable", "slow")
    ],
    ("Deployment", "paused", False),
    ("StatefulSet", "partitioned", True),
    ("DaemonSet", "ready", True),
    ("DaemonSet", "crashloop", False),
]


@pytest.mark.parametrize(("kind", "behaviour", "finishes"), CASES)
def test_rollout_status_agrees_with_the_runner(
    cluster: EmulatedCluster, kubectl: Kubectl, kind: str, behaviour: str, finishes: bool
) -> None:
    image = OLD.replace("1.0.0", "2.0.0") + (
        f"-{behaviour}" if behaviour not in ("ready", "paused", "partitioned") else ""
    )
    res = resource(kind)
    add(cluster, kind, "by-kubectl")
    add(cluster, kind, "by-runner")
    for name in ("by-kubectl", "by-runner"):
        if behaviour == "paused":
            assert kubectl("rollout", "pause", f"{res}/{name}").out.strip() == (
                f"deployment.apps/{name} paused"
            )
        if behaviour == "partitioned":
            patch = '{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}'
            kubectl("patch", f"{res}/{name}", "--type=merge", "-p", patch)

    # The runner rolls its twin out at the same time as kubectl watches its own.
    timeout = FINISH_TIMEOUT_S if finishes else TIMEOUT_S
    verdict: dict[str, Any] = {}

    def run() -> None:
        try:
            verdict["result"] = runner(cluster).apply(
                Target(NS, kind, "by-runner", {"main": image}), deadline_seconds=timeout
            )
        except RolloutError as err:
            verdict["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    kubectl("set", "image", f"{res}/by-kubectl", f"main={image}")
    status = kubectl("rollout", "status", f"{res}/by-kubectl", f"--timeout={timeout}s",
                     check=False)  # fmt: skip
    thread.join(timeout=timeout + 30)
    assert not thread.is_alive()

    kubectl_finished = status.rc == 0
    runner_finished = "result" in verdict and verdict["result"].status == "complete"
    assert kubectl_finished == finishes, (status, verdict)
    assert runner_finished == finishes, (status, verdict)
    # kubectl's last word is what convoy's judgement says of the same object.
    obj = cluster.get_workload(kind, NS, "by-kubectl")
    assert judge(kind, obj).message == status.last, (status, obj["status"])
    if not finishes and "timed out waiting" not in status.err:
        assert kind == "Deployment"
        assert status.last == 'deployment "by-kubectl" exceeded its progress deadline'

    if behaviour == "paused":
        # Resumed, both finish; the deadline counts from the resume.
        for name in ("by-kubectl", "by-runner"):
            assert kubectl("rollout", "resume", f"deploy/{name}").out.strip() == (
                f"deployment.apps/{name} resumed"
            )
        done = kubectl("rollout", "status", "deploy/by-kubectl", "--timeout=20s")
        assert done.last == 'deployment "by-kubectl" successfully rolled out'
        # the runner's twin finishes too (wait_idle only waits for the controller
        # to observe the resume, not for the new pods to become ready)
        deadline = time.monotonic() + 20
        while (
            runner(cluster).status(Target(NS, kind, "by-runner")).status != "complete"
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert runner(cluster).status(Target(NS, kind, "by-runner")).status == "complete"
    if behaviour == "partitioned":
        assert status.last == "partitioned roll out complete: 1 new pods have been updated..."
        for name in ("by-kubectl", "by-runner"):
            images = {p["metadata"]["name"]: p["spec"]["containers"][0]["image"]
                      for p in cluster.pods(kind, NS, name)}  # fmt: skip
            assert images == {f"{name}-0": OLD, f"{name}-1": OLD, f"{name}-2": image}


def table(out: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in out.splitlines() if line.strip()]
    header = re.split(r"\s{2,}", lines[0].strip())
    return header, [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


def test_get_prints_the_usual_columns(cluster: EmulatedCluster, kubectl: Kubectl) -> None:
    add(cluster, "Deployment", "cart")
    add(cluster, "StatefulSet", "db")
    add(cluster, "DaemonSet", "agent")
    header, rows = table(kubectl("get", "deploy").out)
    assert header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert rows[0][:4] == ["cart", "3/3", "3", "3"]
    assert re.fullmatch(r"\d+s", rows[0][4])
    header, rows = table(kubectl("get", "deploy", "cart", "-o", "wide").out)
    assert header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES",
                      "SELECTOR"]  # fmt: skip
    assert rows[0][5:] == ["main", OLD, "app=cart"]
    header, rows = table(kubectl("get", "sts").out)
    assert header == ["NAME", "READY", "AGE"]
    assert rows[0][:2] == ["db", "3/3"]
    header, rows = table(kubectl("get", "ds").out)
    assert header == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE",
                      "NODE SELECTOR", "AGE"]  # fmt: skip
    assert rows[0][:7] == ["agent", "3", "3", "3", "3", "3", "<none>"]
    header, rows = table(kubectl("get", "pods", "-l", "app=db").out)
    assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [r[:4] for r in rows] == [[f"db-{i}", "1/1", "Running", "0"] for i in range(3)]
    header, _ = table(kubectl("get", "rs").out)
    assert header == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    header, rows = table(kubectl("get", "controllerrevisions", "-l", "app=db").out)
    assert header == ["NAME", "CONTROLLER", "REVISION", "AGE"]
    assert rows[0][1:3] == ["statefulset.apps/db", "1"]
    # Stuck pods show the reason kubectl shows on a cluster.
    kubectl("set", "image", "sts/db", "main=" + OLD.replace("1.0.0", "2.0.0-crashloop"))
    kubectl("set", "image", "deploy/cart", "main=" + OLD.replace("1.0.0", "2.0.0-imagepull"))
    cluster.wait_idle()
    _, rows = table(kubectl("get", "pods", "db-2").out)
    assert rows[0][1:3] in (["0/1", "CrashLoopBackOff"], ["0/1", "ContainerCreating"])
    _, rows = table(kubectl("get", "pods", "-l", "app=cart").out)
    assert {r[2] for r in rows} >= {"Running"}
    assert {r[2] for r in rows} & {"ErrImagePull", "ImagePullBackOff"}


def wait_for_pod(cluster: EmulatedCluster, name: str, check: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pods = {p["metadata"]["name"]: p for p in cluster.pods("StatefulSet", NS, "db")}
        if name in pods and check(pods[name]):
            return pods[name]
        time.sleep(0.03)
    raise AssertionError(f"pod {name} not as expected within 10 s")


def test_unschedulable_pod_is_pending_on_no_node(
    cluster: EmulatedCluster, kubectl: Kubectl
) -> None:
    """As a real scheduler leaves it: not bound (no spec.nodeName), no containers created."""
    add(cluster, "StatefulSet", "db")
    image = OLD.replace("1.0.0", "2.0.0-unschedulable")
    kubectl("set", "image", "sts/db", f"main={image}")
    pod = wait_for_pod(cluster, "db-2", lambda p: p["spec"]["containers"][0]["image"] == image)
    assert "nodeName" not in pod["spec"]
    assert pod["status"]["phase"] == "Pending"
    assert "containerStatuses" not in pod["status"]
    [scheduled] = pod["status"]["conditions"]
    assert (scheduled["type"], scheduled["status"], scheduled["reason"]) == (
        "PodScheduled", "False", "Unschedulable"
    )  # fmt: skip
    assert re.fullmatch(r"0/3 nodes are available: 3 Insufficient cpu\. preemption: .+",
                        scheduled["message"])  # fmt: skip
    failure = diagnose([pod], {"main": image})
    assert isinstance(failure, PodUnschedulable)
    assert failure.details["podMessage"] == scheduled["message"]

    header, rows = table(kubectl("get", "pods", "db-2", "db-1", "-o", "wide").out)
    assert header[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    by_name = {r[0]: r for r in rows}
    assert by_name["db-2"][1:4] == ["0/1", "Pending", "0"]
    assert by_name["db-2"][6] == "<none>"
    assert by_name["db-1"][2:4] == ["Running", "0"]  # the old pod still runs on its node
    assert by_name["db-1"][6] == "emulated-node"
    assert kubectl("get", "pod", "db-2", "-o", "jsonpath={.spec.nodeName}").out == ""


def test_crashloop_pod_reports_its_last_termination(
    cluster: EmulatedCluster, kubectl: Kubectl
) -> None:
    """As a kubelet between two restarts: waiting CrashLoopBackOff, restartCount > 0 and
    lastState.terminated; kubectl prints RESTARTS as ``N (Xs ago)``."""
    add(cluster, "StatefulSet", "db")
    image = OLD.replace("1.0.0", "2.0.0-crashloop")
    kubectl("set", "image", "sts/db", f"main={image}")

    def crash_looping(pod: dict[str, Any]) -> bool:
        statuses = pod["status"].get("containerStatuses") or [{}]
        waiting = (statuses[0].get("state") or {}).get("waiting") or {}
        return bool(waiting.get("reason") == "CrashLoopBackOff")

    pod = wait_for_pod(cluster, "db-2", crash_looping)
    [main] = pod["status"]["containerStatuses"]
    assert main["restartCount"] > 0
    assert (main["ready"], main["started"]) == (False, False)
    terminated = main["lastState"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (1, "Error")
    assert terminated["startedAt"] <= terminated["finishedAt"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", terminated["finishedAt"])
    assert re.fullmatch(r"back-off \w+ restarting failed container=main pod=db-2_shop\(.+\)",
                        main["state"]["waiting"]["message"])  # fmt: skip
    failure = diagnose([pod], {"main": image})
    assert isinstance(failure, CrashLooping)
    assert failure.details["exitCode"] == 1
    assert failure.details["restartCount"] == main["restartCount"]

    _, rows = table(kubectl("get", "pods", "db-2").out)
    assert rows[0][1:3] == ["0/1", "CrashLoopBackOff"]
    restarts = re.fullmatch(r"(\d+) \((\d+)s ago\)", rows[0][3])
    assert restarts, rows[0]
    assert int(restarts[1]) > 0
    _, rows = table(kubectl("get", "pods", "db-0").out)
    assert rows[0][1:4] == ["1/1", "Running", "0"]  # never restarted: no "(... ago)"


def test_set_image_server_dry_run_changes_nothing(
    cluster: EmulatedCluster, kubectl: Kubectl
) -> None:
    add(cluster, "Deployment", "cart")
    before = cluster.get_workload("Deployment", NS, "cart")
    out = kubectl("set", "image", "deploy/cart", "main=app:9", "--dry-run=server", "-o",
                  "jsonpath={.spec.template.spec.containers[0].image}").out  # fmt: skip
    assert out == "app:9"  # the server's answer carries the change...
    after = cluster.get_workload("Deployment", NS, "cart")
    assert after == before  # ...and stores nothing
    assert kubectl("set", "image", "deploy/cart", "main=app:9", "--dry-run=server").out.strip() == (
        "deployment.apps/cart image updated (server dry run)"
    )
    patches = [r for r in cluster.requests if r.method == "PATCH"]
    assert patches
    assert all(r.query.get("dryRun") == "All" for r in patches)


def test_pause_resume_and_undo_as_on_a_cluster(cluster: EmulatedCluster, kubectl: Kubectl) -> None:
    add(cluster, "Deployment", "cart")
    add(cluster, "StatefulSet", "db")
    new = OLD.replace("1.0.0", "2.0.0")
    kubectl("set", "image", "deploy/cart", f"main={new}")
    kubectl("rollout", "status", "deploy/cart", "--timeout=20s")
    # Paused: kubectl refuses an undo, as on a cluster.
    kubectl("rollout", "pause", "deploy/cart")
    refused = kubectl("rollout", "undo", "deploy/cart", check=False)
    assert refused.rc == 1
    assert "you cannot rollback a paused deployment" in refused.err
    again = kubectl("rollout", "pause", "deploy/cart", check=False)
    assert again.rc == 1
    assert "already paused" in again.err
    kubectl("rollout", "resume", "deploy/cart")
    # Undo goes back to revision 1 (which becomes revision 3), and again to revision 2.
    assert (
        kubectl("rollout", "undo", "deploy/cart").out.strip() == "deployment.apps/cart rolled back"
    )
    kubectl("rollout", "status", "deploy/cart", "--timeout=20s")
    assert cluster.images("Deployment", NS, "cart") == {"main": OLD}
    assert {
        p["spec"]["containers"][0]["image"] for p in cluster.pods("Deployment", NS, "cart")
    } == {OLD}
    history = kubectl("rollout", "history", "deploy/cart").out
    assert re.findall(r"^(\d+)\s", history, re.M) == ["2", "3"]
    kubectl("rollout", "undo", "deploy/cart")
    kubectl("rollout", "status", "deploy/cart", "--timeout=20s")
    assert cluster.images("Deployment", NS, "cart") == {"main": new}
    # StatefulSets: no pause, undo through ControllerRevisions.
    refused = kubectl("rollout", "pause", "sts/db", check=False)
    assert refused.rc == 1
    assert 'statefulsets.apps "db" pausing is not supported' in refused.err
    kubectl("set", "image", "sts/db", f"main={new}")
    kubectl("rollout", "status", "sts/db", "--timeout=20s")
    assert kubectl("rollout", "undo", "sts/db").out.strip() == "statefulset.apps/db rolled back"
    kubectl("rollout", "status", "sts/db", "--timeout=20s")
    assert cluster.images("StatefulSet", NS, "db") == {"main": OLD}
    assert {p["spec"]["containers"][0]["image"] for p in cluster.pods("StatefulSet", NS, "db")} == {
        OLD
    }
    skipped = kubectl("rollout", "undo", "sts/db", "--to-revision=3")
    assert "skipped rollback" in skipped.out
