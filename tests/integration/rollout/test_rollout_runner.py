"""RolloutRunner against the emulated API server over real HTTP (no mocks)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from convoy.emulator import EmulatedCluster
from convoy.rollout import (
    ApiUnavailable,
    ConflictRetriesExhausted,
    ContainerNotFound,
    CrashLooping,
    DeadlineExceeded,
    Forbidden,
    ImagePullFailed,
    NothingToRevert,
    PodUnschedulable,
    RolloutRunner,
    Target,
    WorkloadNotFound,
)
from convoy.rollout.runner import PREVIOUS_IMAGES, RUN_ID

pytestmark = pytest.mark.integration

NS = "shop"


def since(cluster: Any, start: int) -> list[Any]:
    return list(cluster.requests[start:])


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet"])
def test_apply_rolls_out_each_kind(emulated_cluster: Any, runner: RolloutRunner, kind: str) -> None:
    emulated_cluster.add_workload(kind, NS, "cart", {"server": "cart:2.3.0", "sidecar": "envoy:1"})
    result = runner.apply(
        Target(NS, kind, "cart", {"server": "cart:2.4.0"}), deadline_seconds=10, run_id="run-1"
    )
    assert result.status == "complete"
    assert result.changed
    assert result.previous_images == {"server": "cart:2.3.0"}
    assert result.images == {"server": "cart:2.4.0"}
    assert result.replicas == {"desired": 3, "updated": 3, "ready": 3, "available": 3}
    # strategic merge by name: the other container is untouched
    assert emulated_cluster.images(kind, NS, "cart") == {
        "server": "cart:2.4.0",
        "sidecar": "envoy:1",
    }
    annotations = emulated_cluster.get_workload(kind, NS, "cart")["metadata"]["annotations"]
    assert json.loads(annotations[PREVIOUS_IMAGES]) == {"server": "cart:2.3.0"}
    assert annotations[RUN_ID] == "run-1"
    pods = emulated_cluster.pods(kind, NS, "cart")
    assert len(pods) == 3
    assert all(p["spec"]["containers"][0]["image"] == "cart:2.4.0" for p in pods)
    json.dumps(result.to_dict())  # JSON-able


def test_slow_rollout_completes_with_progress_lines(
    emulated_cluster: Any, runner: RolloutRunner, log_lines: list[str]
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"}, replicas=2)
    result = runner.apply(
        Target(NS, "Deployment", "cart", {"server": "cart:2.4.0-slow"}), deadline_seconds=20
    )
    assert result.status == "complete"
    assert result.ready_seconds > 0.5  # 4 steps of 10 ticks of 20 ms
    progress = [line for line in log_lines if " updated, " in line]
    assert progress[-1].startswith("cart: 2/2 updated, 2/2 ready (100%)")
    assert any("replicas/s ETA" in line for line in progress)


def test_never_ready_hits_deadline_with_reason(
    emulated_cluster: Any, runner: RolloutRunner
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"})
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        runner.apply(
            Target(NS, "Deployment", "cart", {"server": "cart:2.4.0-never-ready"}),
            deadline_seconds=2,
        )
    assert time.monotonic() - start < 6
    assert "running but not ready" in info.value.details["reason"]
    assert info.value.to_dict()["error"] == "DeadlineExceeded"


def test_progress_deadline_exceeded_fails_before_the_runner_deadline(
    emulated_cluster: Any, make_runner: Callable[..., RolloutRunner]
) -> None:
    emulated_cluster.add_workload(
        "Deployment", NS, "cart", {"server": "cart:2.3.0"}, progress_deadline_seconds=1
    )
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        make_runner(stall_seconds=60).apply(
            Target(NS, "Deployment", "cart", {"server": "cart:2.4.0-never-ready"}),
            deadline_seconds=60,
        )
    assert time.monotonic() - start < 10
    assert "exceeded its progress deadline" in info.value.message


@pytest.mark.parametrize(
    ("tag", "error", "reasons"),
    [
        ("2.4.0-crashloop", CrashLooping, {"CrashLoopBackOff"}),
        ("2.4.0-imagepull", ImagePullFailed, {"ErrImagePull", "ImagePullBackOff"}),
        ("2.4.0-unschedulable", PodUnschedulable, {"Unschedulable"}),
    ],
)
@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_pod_failures_are_named(
    emulated_cluster: Any,
    runner: RolloutRunner,
    kind: str,
    tag: str,
    error: type[Exception],
    reasons: set[str],
) -> None:
    emulated_cluster.add_workload(kind, NS, "cart", {"server": "cart:2.3.0"})
    start = time.monotonic()
    with pytest.raises(error) as info:
        runner.apply(Target(NS, kind, "cart", {"server": f"cart:{tag}"}), deadline_seconds=30)
    assert time.monotonic() - start < 8  # explained at the first stall, not at the deadline
    details = info.value.to_dict()  # type: ignore[attr-defined]
    assert details["reason"] in reasons
    assert details["pod"].startswith("cart-")
    assert details["pod"] in {
        p["metadata"]["name"] for p in emulated_cluster.pods(kind, NS, "cart")
    }
    if error is not PodUnschedulable:
        assert details["container"] == "server"
    assert details["pod"] in details["message"]


def test_conflicts_are_retried(emulated_cluster: Any, runner: RolloutRunner) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"})
    emulated_cluster.inject_conflicts(2)
    start = len(emulated_cluster.requests)
    result = runner.apply(
        Target(NS, "Deployment", "cart", {"server": "cart:2.4.0"}), deadline_seconds=10
    )
    assert result.status == "complete"
    patches = [r.status for r in since(emulated_cluster, start) if r.method == "PATCH"]
    assert patches == [409, 409, 200]
    gets = [r for r in since(emulated_cluster, start) if r.verb == "GET"]
    assert len(gets) == 3  # re-read before every retry


def test_real_stale_resource_version_conflict_is_retried(
    emulated_cluster: Any, runner: RolloutRunner
) -> None:
    """Someone else changes the workload between our GET and PATCH (no injection)."""
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0", "log": "fb:1"})
    io = runner.io
    original_patch = io.patch
    calls = {"n": 0}

    def racing_patch(ref: Any, body: Any, **kw: Any) -> Any:
        if calls["n"] == 0:  # a concurrent writer wins the race once
            calls["n"] += 1
            original_patch(ref, {"metadata": {"labels": {"touched": "yes"}}})
        return original_patch(ref, body, **kw)

    io.patch = racing_patch  # type: ignore[method-assign]
    start = len(emulated_cluster.requests)
    runner.apply(Target(NS, "Deployment", "cart", {"server": "cart:2.4.0"}), deadline_seconds=10)
    patches = [r.status for r in since(emulated_cluster, start) if r.method == "PATCH"]
    assert patches == [200, 409, 200]
    assert emulated_cluster.images("Deployment", NS, "cart")["server"] == "cart:2.4.0"


def test_conflict_retries_are_bounded(emulated_cluster: Any, runner: RolloutRunner) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"})
    emulated_cluster.inject_conflicts(100)
    with pytest.raises(ConflictRetriesExhausted) as info:
        runner.apply(
            Target(NS, "Deployment", "cart", {"server": "cart:2.4.0"}), deadline_seconds=10
        )
    assert info.value.details["attempts"] == runner.retry.conflict_attempts
    assert emulated_cluster.images("Deployment", NS, "cart") == {"server": "cart:2.3.0"}


def test_server_errors_are_retried(emulated_cluster: Any, runner: RolloutRunner) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"})
    emulated_cluster.inject_errors(status=503, n=2)
    start = len(emulated_cluster.requests)
    result = runner.apply(
        Target(NS, "Deployment", "cart", {"server": "cart:2.4.0"}), deadline_seconds=10
    )
    assert result.status == "complete"
    assert [r.status for r in since(emulated_cluster, start)][:3] == [503, 503, 200]


def test_server_errors_retries_are_bounded(emulated_cluster: Any, runner: RolloutRunner) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"})
    emulated_cluster.inject_errors(status=500, n=100)
    with pytest.raises(ApiUnavailable) as info:
        runner.apply(
            Target(NS, "Deployment", "cart", {"server": "cart:2.4.0"}), deadline_seconds=10
        )
    assert "HTTP 500" in info.value.message


def test_unreachable_server_is_api_unavailable(make_runner: Callable[..., RolloutRunner]) -> None:
    with EmulatedCluster() as cluster:
        client = cluster.api_client()
    runner = make_runner(api_client=client)
    with pytest.raises(ApiUnavailable):
        runner.status(Target(NS, "Deployment", "cart"))


def test_forbidden_patch_names_verb_and_resource(
    emulated_cluster: Any, runner: RolloutRunner
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"})
    emulated_cluster.forbid("patch", "deployments")
    with pytest.raises(Forbidden) as info:
        runner.apply(
            Target(NS, "Deployment", "cart", {"server": "cart:2.4.0"}), deadline_seconds=10
        )
    d = info.value.to_dict()
    assert (d["verb"], d["resource"], d["group"], d["namespace"]) == (
        "patch",
        "deployments",
        "apps",
        NS,
    )
    assert d["user"] == "system:serviceaccount:default:convoy-rollout"
    assert 'verb "patch"' in d["message"]
    assert 'resource "deployments"' in d["message"]


def test_forbidden_pod_list_is_reported_when_explaining(
    emulated_cluster: Any, runner: RolloutRunner
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"})
    emulated_cluster.forbid("list", "pods")
    with pytest.raises(Forbidden) as info:
        runner.apply(
            Target(NS, "Deployment", "cart", {"server": "cart:2-crashloop"}), deadline_seconds=10
        )
    assert (info.value.details["verb"], info.value.details["resource"]) == ("list", "pods")
    assert info.value.details["group"] == ""


def test_workload_not_found(emulated_cluster: Any, runner: RolloutRunner) -> None:
    with pytest.raises(WorkloadNotFound) as info:
        runner.apply(Target(NS, "Deployment", "nope", {"server": "x:1"}), deadline_seconds=5)
    assert info.value.to_dict() == {
        "error": "WorkloadNotFound",
        "message": 'Deployment "nope" not found in namespace "shop"',
        "namespace": NS,
        "kind": "Deployment",
        "name": "nope",
    }


def test_container_not_found_lists_existing(emulated_cluster: Any, runner: RolloutRunner) -> None:
    emulated_cluster.add_workload("StatefulSet", NS, "db", {"postgres": "pg:16", "exporter": "e:1"})
    start = len(emulated_cluster.requests)
    with pytest.raises(ContainerNotFound) as info:
        runner.apply(Target(NS, "StatefulSet", "db", {"pg": "pg:17"}), deadline_seconds=5)
    assert info.value.details["missing"] == ["pg"]
    assert info.value.details["existing"] == ["exporter", "postgres"]
    assert not [r for r in since(emulated_cluster, start) if r.method == "PATCH"]


def test_reapply_is_a_noop_without_patch(emulated_cluster: Any, runner: RolloutRunner) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"})
    target = Target(NS, "Deployment", "cart", {"server": "cart:2.4.0"})
    runner.apply(target, deadline_seconds=10, run_id="a")
    start = len(emulated_cluster.requests)
    again = runner.apply(target, deadline_seconds=10, run_id="b")
    assert again.status == "noop"
    assert not again.changed
    assert again.previous_images == {"server": "cart:2.4.0"}
    assert [r.verb for r in since(emulated_cluster, start)] == ["GET"]
    annotations = emulated_cluster.get_workload("Deployment", NS, "cart")["metadata"]["annotations"]
    assert json.loads(annotations[PREVIOUS_IMAGES]) == {"server": "cart:2.3.0"}  # not overwritten
    assert annotations[RUN_ID] == "a"


def test_reapply_while_rolling_waits_without_patch(
    emulated_cluster: Any, runner: RolloutRunner
) -> None:
    """A retried task whose PATCH already landed just waits for the rollout."""
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"})
    runner.apply(
        Target(NS, "Deployment", "cart", {"server": "cart:2.4.0"}),
        deadline_seconds=10,
        dry_run=False,
    )
    emulated_cluster.inject_conflicts(0)
    body = {
        "spec": {
            "template": {"spec": {"containers": [{"name": "server", "image": "cart:2.5.0-slow"}]}}
        }
    }
    runner.io.patch(Target(NS, "Deployment", "cart").ref, body)
    start = len(emulated_cluster.requests)
    result = runner.apply(
        Target(NS, "Deployment", "cart", {"server": "cart:2.5.0-slow"}), deadline_seconds=10
    )
    assert result.status == "complete"
    assert not result.changed
    assert "PATCH" not in {r.verb for r in since(emulated_cluster, start)}


def test_dry_run_changes_nothing(emulated_cluster: Any, runner: RolloutRunner) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"})
    before = emulated_cluster.get_workload("Deployment", NS, "cart")
    start = len(emulated_cluster.requests)
    result = runner.apply(
        Target(NS, "Deployment", "cart", {"server": "cart:2.4.0"}),
        deadline_seconds=10,
        dry_run=True,
    )
    assert result.status == "dry-run"
    assert result.dry_run
    assert not result.changed
    assert result.images == {"server": "cart:2.4.0"}  # what the server would make of it
    assert result.previous_images == {"server": "cart:2.3.0"}
    after = emulated_cluster.get_workload("Deployment", NS, "cart")
    assert after == before
    patches = [r for r in since(emulated_cluster, start) if r.method == "PATCH"]
    assert len(patches) == 1
    assert patches[0].query["dryRun"] == "All"
    assert not [r for r in since(emulated_cluster, start) if r.verb in ("LIST", "WATCH")]


def test_revert_restores_images(emulated_cluster: Any, runner: RolloutRunner) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0", "log": "fb:1"})
    applied = runner.apply(
        Target(NS, "Deployment", "cart", {"server": "cart:2.4.0", "log": "fb:2"}),
        deadline_seconds=10,
    )
    reverted = runner.revert(
        Target(NS, "Deployment", "cart", applied.previous_images), deadline_seconds=10
    )
    assert reverted.status == "complete"
    assert reverted.changed
    assert emulated_cluster.images("Deployment", NS, "cart") == {
        "server": "cart:2.3.0",
        "log": "fb:1",
    }
    again = runner.revert(
        Target(NS, "Deployment", "cart", applied.previous_images), deadline_seconds=10
    )
    assert again.status == "noop"


def test_revert_from_annotation(emulated_cluster: Any, runner: RolloutRunner) -> None:
    emulated_cluster.add_workload("DaemonSet", NS, "agent", {"agent": "agent:1.0"})
    runner.apply(Target(NS, "DaemonSet", "agent", {"agent": "agent:2.0"}), deadline_seconds=10)
    result = runner.revert(Target(NS, "DaemonSet", "agent"), deadline_seconds=10)
    assert result.images == {"agent": "agent:1.0"}
    assert emulated_cluster.images("DaemonSet", NS, "agent") == {"agent": "agent:1.0"}
    # the annotation still names the pre-apply images: reverting twice is a noop
    assert runner.revert(Target(NS, "DaemonSet", "agent"), deadline_seconds=10).status == "noop"


def test_revert_without_anything_to_revert(emulated_cluster: Any, runner: RolloutRunner) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"})
    with pytest.raises(NothingToRevert):
        runner.revert(Target(NS, "Deployment", "cart"), deadline_seconds=10)


def test_revert_only_if_changed_by_the_given_run(
    emulated_cluster: Any, runner: RolloutRunner
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"})
    emulated_cluster.add_workload("Deployment", NS, "currency", {"server": "cur:2.3.0"})
    cart, currency = Target(NS, "Deployment", "cart"), Target(NS, "Deployment", "currency")
    runner.apply(
        Target(NS, "Deployment", "cart", {"server": "cart:2.4.0"}), deadline_seconds=10,
        run_id="run-1",
    )  # fmt: skip
    runner.apply(
        Target(NS, "Deployment", "currency", {"server": "cur:2.4.0"}), deadline_seconds=10,
        run_id="run-2",
    )  # fmt: skip
    start = len(emulated_cluster.requests)
    left = runner.revert(currency, deadline_seconds=10, run_id="undo-1", only_if_run_id="run-1")
    assert left.status == "skipped"
    assert not left.changed
    assert left.message == "not changed by run-1: Deployment/currency was last changed by run run-2"
    assert left.images == {"server": "cur:2.4.0"}
    assert [r.verb for r in since(emulated_cluster, start)] == ["GET"]  # read, never patched
    assert emulated_cluster.images("Deployment", NS, "currency") == {"server": "cur:2.4.0"}

    done = runner.revert(cart, deadline_seconds=10, run_id="undo-1", only_if_run_id="run-1")
    assert (done.status, done.changed) == ("complete", True)
    assert emulated_cluster.images("Deployment", NS, "cart") == {"server": "cart:2.3.0"}
    annotations = emulated_cluster.get_workload("Deployment", NS, "cart")["metadata"]["annotations"]
    assert annotations[RUN_ID] == "undo-1"


def test_revert_only_if_retried_by_the_same_run_finishes(
    emulated_cluster: Any, runner: RolloutRunner
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"})
    runner.apply(
        Target(NS, "Deployment", "cart", {"server": "cart:2.4.0"}), deadline_seconds=10,
        run_id="run-1",
    )  # fmt: skip
    cart = Target(NS, "Deployment", "cart")
    runner.revert(cart, deadline_seconds=10, run_id="undo-1", only_if_run_id="run-1")
    # The retry finds the annotation of its own earlier try: it finishes, it does not skip.
    again = runner.revert(cart, deadline_seconds=10, run_id="undo-1", only_if_run_id="run-1")
    assert again.status == "noop"
    # Another manual rollback of run-1 after that one leaves the workload alone.
    other = runner.revert(cart, deadline_seconds=10, run_id="undo-2", only_if_run_id="run-1")
    assert other.status == "skipped"
    assert other.message.endswith("was last changed by run undo-1")


def test_revert_only_if_without_any_run_annotation(
    emulated_cluster: Any, runner: RolloutRunner
) -> None:
    emulated_cluster.add_workload("StatefulSet", NS, "db", {"pg": "pg:16"})
    left = runner.revert(
        Target(NS, "StatefulSet", "db"), deadline_seconds=10, run_id="r", only_if_run_id="run-1"
    )
    assert left.status == "skipped"
    assert left.message.endswith("was last changed by run (none)")


def test_status(emulated_cluster: Any, runner: RolloutRunner) -> None:
    emulated_cluster.add_workload("StatefulSet", NS, "db", {"pg": "pg:16"})
    status = runner.status(Target(NS, "StatefulSet", "db"))
    assert status.status == "complete"
    assert status.images == {"pg": "pg:16"}


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet"])
def test_request_budget_of_a_rollout(
    emulated_cluster: Any, runner: RolloutRunner, kind: str
) -> None:
    emulated_cluster.add_workload(kind, NS, "cart", {"server": "cart:2.3.0"}, replicas=5)
    start = len(emulated_cluster.requests)
    runner.apply(Target(NS, kind, "cart", {"server": "cart:2.4.0"}), deadline_seconds=10)
    requests = since(emulated_cluster, start)
    verbs = Counter(r.verb for r in requests)
    assert verbs == {"GET": 1, "PATCH": 1, "LIST": 1, "WATCH": 1}
    assert len(requests) <= 10
    watch = next(r for r in requests if r.verb == "WATCH")
    assert watch.query["fieldSelector"] == "metadata.name=cart"
    listed = next(r for r in requests if r.verb == "LIST")
    assert listed.query["fieldSelector"] == "metadata.name=cart"


def test_slow_rollout_reports_progress_records_while_it_waits(
    emulated_cluster: Any, make_runner: Callable[..., RolloutRunner], log_lines: list[str]
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"}, replicas=3)
    records: list[dict[str, Any]] = []
    runner = make_runner(progress_sink_interval=0)
    result = runner.apply(
        Target(NS, "Deployment", "cart", {"server": "cart:2.4.0-slow"}),
        deadline_seconds=20,
        progress=lambda value: records.append(dict(value)),
    )
    assert result.status == "complete"
    assert {r["unit"] for r in records} == {"replicas"}
    assert {r["label"] for r in records} == {"cart"}
    assert {r["total"] for r in records} == {3}
    assert any(0 < r["done"] < 3 for r in records[:-1])
    assert records[-1]["done"] == 3
    assert records[-1]["pct"] == 100.0
    assert records[-1]["eta_seconds"] == 0.0
    assert records[-1]["rate"] > 0
    assert all(r["updated_at"] for r in records)
    # before the controller observed the new spec, the old revision's ready
    # replicas must not show up as done
    assert records[0]["done"] < 3
    json.dumps(records)
    # the log lines keep their shape
    assert [line for line in log_lines if " updated, " in line][-1].startswith(
        "cart: 3/3 updated, 3/3 ready (100%)"
    )


def test_revert_reports_progress_and_the_interval_bounds_it(
    emulated_cluster: Any, make_runner: Callable[..., RolloutRunner]
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"}, replicas=3)
    target = Target(NS, "Deployment", "cart", {"server": "cart:2.4.0-slow"})
    make_runner().apply(target, deadline_seconds=20)
    records: list[dict[str, Any]] = []
    # An interval longer than any test: only the first record and the final one.
    runner = make_runner(progress_sink_interval=3600)
    result = runner.revert(
        Target(NS, "Deployment", "cart", {}),
        deadline_seconds=20,
        progress=lambda value: records.append(dict(value)),
    )
    assert result.images == {"server": "cart:2.3.0"}
    assert len(records) == 2
    assert records[-1]["done"] == records[-1]["total"] == 3


def test_a_failing_progress_callback_does_not_fail_the_rollout(
    emulated_cluster: Any, make_runner: Callable[..., RolloutRunner]
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"}, replicas=2)

    def broken(value: Any) -> None:
        raise RuntimeError("xcom backend down")

    result = make_runner(progress_sink_interval=0).apply(
        Target(NS, "Deployment", "cart", {"server": "cart:2.4.0"}),
        deadline_seconds=20,
        progress=broken,
    )
    assert result.status == "complete"


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet"])
def test_progress_records_of_each_kind_never_exceed_and_end_at_the_total(
    emulated_cluster: Any, make_runner: Callable[..., RolloutRunner], kind: str
) -> None:
    emulated_cluster.add_workload(kind, NS, "cart", {"server": "cart:2.3.0"}, replicas=3)
    records: list[dict[str, Any]] = []
    make_runner(progress_sink_interval=0).apply(
        Target(NS, kind, "cart", {"server": "cart:2.4.0"}),
        deadline_seconds=20,
        progress=lambda value: records.append(dict(value)),
    )
    assert records
    assert all(0 <= r["done"] <= r["total"] for r in records)
    assert records[-1]["done"] == records[-1]["total"] > 0
