"""A verified rollout stopped by an inconclusive analysis goes on from its checkpoint.

When the approver accepts an inconclusive analysis, the rollout task runs again
with the :class:`~convoy.rollout.canary.Checkpoint` it parked with (through
JSON, as Airflow stores it): a fresh ``VerifiedRollout`` must go on at the next
canary step, from the state the cluster holds (paused Deployment, partition),
without patching the images again or repeating a step, and keep the first
part's step records, analyses and rollout result (the revert needs its
``previousImages``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from convoy.emulator import EmulatedCluster
from convoy.rollout import RolloutRunner
from convoy.rollout.analysis import AnalysisInconclusive, AnalysisSpec, Analyzer
from convoy.rollout.canary import Checkpoint, VerifiedRollout
from convoy.rollout.errors import ChangedWhileWaiting
from convoy.rollout.runner import Target

NS = "shop"
OLD, NEW = "registry.example.com/app:1.0.0", "registry.example.com/app:2.0.0"
STEPS = [{"pods": 1}, {"analysis": "look"}, {"pods": 2}, {"analysis": "look"}]


class Answers:
    """A provider answering ``None`` (no data) for the measurement numbers in ``empty``, else 0.

    Each answer also records how many pods run the new image at that moment.
    """

    def __init__(self, cluster: EmulatedCluster, kind: str, name: str, empty: set[int]) -> None:
        self.cluster, self.kind, self.name, self.empty = cluster, kind, name, empty
        self.calls = 0
        self.new_pods: list[int] = []

    def measure(self, query: str) -> float | None:
        self.calls += 1
        pods = self.cluster.pods(self.kind, NS, self.name)
        self.new_pods.append(sum(p["spec"]["containers"][0]["image"] == NEW for p in pods))
        return None if self.calls in self.empty else 0.0


@pytest.fixture
def emulated_cluster() -> Iterator[EmulatedCluster]:
    """One pod replaced every 0.1 s, so the runner's pause lands on the first new pod."""
    with EmulatedCluster(tick_seconds=0.1) as cluster:
        yield cluster


def _spec(name: str = "look") -> AnalysisSpec:
    return AnalysisSpec(name=name, provider="test", conn_id="cluster", query="up", min=0, max=0,
                        interval_s=0.0, count=1)  # fmt: skip


Make = Callable[[Answers], VerifiedRollout]


@pytest.fixture
def verified(runner: RolloutRunner, log_lines: list[str]) -> Make:
    """A new ``VerifiedRollout`` per call, as a resumed task builds one."""

    def make(provider: Answers) -> VerifiedRollout:
        analyzer = Analyzer({("test", "cluster"): provider}, log=log_lines.append)
        return VerifiedRollout(runner, analyzer, poll_seconds=0.02)

    return make


def _stop(verified: VerifiedRollout, target: Target, **kwargs: Any) -> Checkpoint:
    """Run until the inconclusive analysis; its checkpoint after a JSON round trip."""
    with pytest.raises(AnalysisInconclusive):
        verified.apply(target, service="app", deadline_seconds=30, run_id="r1", **kwargs)
    checkpoint = verified.checkpoint()
    assert checkpoint is not None
    return Checkpoint.from_dict(json.loads(json.dumps(checkpoint.to_dict())))


def _image_patches(cluster: EmulatedCluster) -> int:
    return sum(1 for r in cluster.requests if r.verb == "PATCH")


def test_deployment_canary_resumes_at_the_next_step(
    emulated_cluster: EmulatedCluster, verified: Make
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "app", {"main": OLD}, replicas=3)
    target = Target(NS, "Deployment", "app", {"main": NEW})
    first = Answers(emulated_cluster, "Deployment", "app", empty={1})
    checkpoint = _stop(verified(first), target, canary=STEPS, analyses=[],
                       templates={"look": _spec()})  # fmt: skip
    assert (checkpoint.stage, checkpoint.index) == ("canary", 2)
    assert checkpoint.previous == {"main": OLD}
    assert [s["step"] for s in checkpoint.steps] == [1, 2]
    assert checkpoint.steps[1]["phase"] == "inconclusive"
    [stopped] = checkpoint.runs
    assert stopped["phase"] == "inconclusive"
    assert stopped["where"] == "canary step 2 (1/3 pods updated)"
    # The task parks here: the Deployment stays paused with its one new pod.
    workload = emulated_cluster.get_workload("Deployment", NS, "app")
    assert workload["spec"]["paused"] is True
    assert first.new_pods == [1]
    patches = _image_patches(emulated_cluster)

    second = Answers(emulated_cluster, "Deployment", "app", empty=set())
    result = verified(second).apply(
        target, service="app", canary=STEPS, analyses=[_spec("after")],
        templates={"look": _spec()}, deadline_seconds=30, run_id="r1", resume=checkpoint,
    )  # fmt: skip
    # Step 3 (pods: 2) and step 4 ran; steps 1 and 2 were not done again.
    assert [s["step"] for s in result.steps] == [1, 2, 3, 4]
    assert result.steps[2]["updated"] == 2
    assert second.new_pods[0] == 2  # step 4's analysis saw two new pods, then "after" all three
    assert second.new_pods[1] == 3
    # resume (step 3), pause at 2 pods, resume at the end: no second image PATCH.
    assert _image_patches(emulated_cluster) - patches == 3
    assert [(r.where.split(" (")[0], r.phase) for r in result.analyses] == [
        ("canary step 2", "inconclusive"),
        ("canary step 4", "successful"),
        ("after rollout", "successful"),
    ]
    assert emulated_cluster.images("Deployment", NS, "app") == {"main": NEW}
    assert emulated_cluster.get_workload("Deployment", NS, "app")["spec"].get("paused") is False
    # The revert of a later failure needs what the first part replaced.
    assert result.rollout.changed is True
    assert dict(result.rollout.previous_images) == {"main": OLD}


def test_statefulset_canary_resumes_from_its_partition(
    emulated_cluster: EmulatedCluster, verified: Make
) -> None:
    emulated_cluster.add_workload("StatefulSet", NS, "db", {"main": OLD}, replicas=4)
    target = Target(NS, "StatefulSet", "db", {"main": NEW})
    steps = [{"pods": 1}, {"analysis": "look"}, {"pods": 3}, {"analysis": "look"}]
    first = Answers(emulated_cluster, "StatefulSet", "db", empty={1})
    checkpoint = _stop(verified(first), target, canary=steps, analyses=[],
                       templates={"look": _spec()})  # fmt: skip
    spec = emulated_cluster.get_workload("StatefulSet", NS, "db")["spec"]
    assert spec["updateStrategy"]["rollingUpdate"]["partition"] == 3

    second = Answers(emulated_cluster, "StatefulSet", "db", empty=set())
    result = verified(second).apply(
        target, service="db", canary=steps, analyses=[], templates={"look": _spec()},
        deadline_seconds=30, run_id="r1", resume=checkpoint,
    )  # fmt: skip
    assert second.new_pods == [3]  # partition 1: db-1..db-3 when step 4 measured
    assert [s["step"] for s in result.steps] == [1, 2, 3, 4]
    spec = emulated_cluster.get_workload("StatefulSet", NS, "db")["spec"]
    assert spec["updateStrategy"]["rollingUpdate"]["partition"] == 0
    assert emulated_cluster.images("StatefulSet", NS, "db") == {"main": NEW}
    assert dict(result.rollout.previous_images) == {"main": OLD}


def test_after_rollout_analysis_resumes_at_the_next_analysis(
    emulated_cluster: EmulatedCluster, verified: Make
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "app", {"main": OLD}, replicas=2)
    target = Target(NS, "Deployment", "app", {"main": NEW})
    analyses = [_spec("a"), _spec("b"), _spec("c")]
    first = Answers(emulated_cluster, "Deployment", "app", empty={2})
    checkpoint = _stop(verified(first), target, canary=[], analyses=analyses, templates={})
    assert (checkpoint.stage, checkpoint.index) == ("analysis", 1)
    assert checkpoint.result is not None
    assert checkpoint.result["changed"] is True
    patches = _image_patches(emulated_cluster)

    second = Answers(emulated_cluster, "Deployment", "app", empty=set())
    result = verified(second).apply(
        target, service="app", canary=[], analyses=analyses, templates={},
        deadline_seconds=30, run_id="r1", resume=checkpoint,
    )  # fmt: skip
    assert second.calls == 1  # only "c"
    assert [(r.template, r.phase) for r in result.analyses] == [
        ("a", "successful"),
        ("b", "inconclusive"),
        ("c", "successful"),
    ]
    assert _image_patches(emulated_cluster) == patches
    assert result.rollout.to_dict() == checkpoint.result


def test_a_workload_changed_while_waiting_is_not_resumed(
    emulated_cluster: EmulatedCluster, verified: Make, runner: RolloutRunner
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "app", {"main": OLD}, replicas=3)
    target = Target(NS, "Deployment", "app", {"main": NEW})
    first = Answers(emulated_cluster, "Deployment", "app", empty={1})
    checkpoint = _stop(verified(first), target, canary=STEPS, analyses=[],
                       templates={"look": _spec()})  # fmt: skip
    # Someone rolls it back by hand while the approver thinks.
    runner.revert(Target(NS, "Deployment", "app", {"main": OLD}), deadline_seconds=30)
    with pytest.raises(ChangedWhileWaiting, match="changed while the canary waited"):
        verified(Answers(emulated_cluster, "Deployment", "app", empty=set())).apply(
            target, service="app", canary=STEPS, analyses=[], templates={"look": _spec()},
            deadline_seconds=30, run_id="r1", resume=checkpoint,
        )  # fmt: skip
    assert emulated_cluster.images("Deployment", NS, "app") == {"main": OLD}
