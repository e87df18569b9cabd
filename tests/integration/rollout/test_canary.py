"""Canary steps step by step on the emulated cluster: which pods run which image.

A StatefulSet canary moves ``spec.updateStrategy.rollingUpdate.partition``
(highest ordinals first); a Deployment canary pauses the rollout
(``spec.paused``) once N new pods exist. The ``analysis`` steps use a provider
that looks at the cluster at the moment it is asked (what a metric query sees
while the canary holds), so each step's pods, images and spec are recorded
while the runner holds it there. Reverts after a failed canary restore the
images, the pause and the partition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from convoy.emulator import EmulatedCluster
from convoy.rollout import RolloutRunner
from convoy.rollout.analysis import AnalysisFailed, AnalysisSpec, Analyzer
from convoy.rollout.canary import CANARY_PREVIOUS, VerifiedRollout
from convoy.rollout.runner import Target

NS = "shop"
OLD, NEW = "registry.example.com/app:1.0.0", "registry.example.com/app:2.0.0"


class ClusterSnapshot:
    """A provider whose measurement records the workload's pods (name -> image, ready) and spec.

    It answers ``0`` (pass) or, for the measurement numbers in ``fail_at``, ``1`` (fail).
    """

    def __init__(self, cluster: EmulatedCluster, kind: str, name: str, fail_at: int = 0) -> None:
        self.cluster, self.kind, self.name, self.fail_at = cluster, kind, name, fail_at
        self.seen: list[dict[str, Any]] = []

    def measure(self, query: str) -> float | None:
        self.seen.append(snapshot(self.cluster, self.kind, self.name))
        return 1.0 if len(self.seen) == self.fail_at else 0.0


@pytest.fixture
def emulated_cluster() -> Iterator[EmulatedCluster]:
    """A controller replacing one pod every 0.1 s (the runner pauses within that time).

    A Deployment canary pauses the rollout once N new pods exist; Kubernetes'
    controller does not wait for that, so a controller much faster than the
    runner's two requests overshoots (the step record would say so).
    """
    with EmulatedCluster(tick_seconds=0.1) as cluster:
        yield cluster


def snapshot(cluster: EmulatedCluster, kind: str, name: str) -> dict[str, Any]:
    spec = cluster.get_workload(kind, NS, name)["spec"]
    pods = {
        p["metadata"]["name"]: (p["spec"]["containers"][0]["image"], _ready(p))
        for p in cluster.pods(kind, NS, name)
    }
    return {
        "pods": pods,
        "new": sorted(n for n, (image, _) in pods.items() if image == NEW),
        "old": sorted(n for n, (image, _) in pods.items() if image == OLD),
        "paused": bool(spec.get("paused", False)),
        "partition": ((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get(
            "partition"
        ),
    }


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _spec(name: str = "look") -> AnalysisSpec:
    return AnalysisSpec(name=name, provider="test", conn_id="cluster", query="up", min=0, max=0,
                        interval_s=0.0, count=1)  # fmt: skip


@pytest.fixture
def canary(
    emulated_cluster: EmulatedCluster, runner: RolloutRunner, log_lines: list[str]
) -> Callable[..., tuple[VerifiedRollout, ClusterSnapshot]]:
    def make(kind: str, name: str, *, fail_at: int = 0) -> tuple[VerifiedRollout, ClusterSnapshot]:
        provider = ClusterSnapshot(emulated_cluster, kind, name, fail_at)
        analyzer = Analyzer({("test", "cluster"): provider}, log=log_lines.append)
        return VerifiedRollout(runner, analyzer, poll_seconds=0.02), provider

    return make


STEPS = [{"pods": 1}, {"analysis": "look"}, {"pods": 3}, {"analysis": "look"}]


def test_statefulset_canary_by_partition_updates_the_highest_ordinals_first(
    emulated_cluster: EmulatedCluster, canary: Callable[..., Any]
) -> None:
    emulated_cluster.add_workload("StatefulSet", NS, "db", {"main": OLD}, replicas=4)
    verified, provider = canary("StatefulSet", "db")
    result = verified.apply(
        Target(NS, "StatefulSet", "db", {"main": NEW}), service="db", canary=STEPS,
        analyses=[], templates={"look": _spec()}, deadline_seconds=30, run_id="r1",
    )  # fmt: skip
    first, second = provider.seen
    # pods: 1 -> partition 3: only the highest ordinal is updated (and ready).
    assert first["partition"] == 3
    assert first["new"] == ["db-3"]
    assert first["old"] == ["db-0", "db-1", "db-2"]
    assert first["pods"]["db-3"] == (NEW, True)
    # pods: 3 -> partition 1: ordinals 1..3 on the new image, db-0 held back.
    assert second["partition"] == 1
    assert second["new"] == ["db-1", "db-2", "db-3"]
    assert second["old"] == ["db-0"]
    assert all(ready for _, ready in second["pods"].values())
    # The end lowers the partition back to what it was: every pod is updated.
    final = snapshot(emulated_cluster, "StatefulSet", "db")
    assert final["partition"] == 0
    assert final["new"] == ["db-0", "db-1", "db-2", "db-3"]
    assert result.rollout.status == "complete"
    assert result.rollout.previous_images == {"main": OLD}
    annotations = emulated_cluster.get_workload("StatefulSet", NS, "db")["metadata"]["annotations"]
    assert annotations[CANARY_PREVIOUS] == '{"partition": 0}'
    # The step records say the same.
    records = result.to_dict()["canary"]
    assert [r.get("updated") for r in records] == [1, None, 3, None]
    assert [r.get("phase") for r in records] == [None, "successful", None, "successful"]
    assert sorted(n for n, i in records[2]["images"].items() if i == NEW) == second["new"]


def test_deployment_canary_by_pause_holds_the_new_pods_at_each_step(
    emulated_cluster: EmulatedCluster, canary: Callable[..., Any]
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": OLD}, replicas=4)
    verified, provider = canary("Deployment", "cart")
    result = verified.apply(
        Target(NS, "Deployment", "cart", {"server": NEW}), service="cart", canary=STEPS,
        analyses=[_spec()], templates={"look": _spec()}, deadline_seconds=30, run_id="r1",
    )  # fmt: skip
    first, second, after = provider.seen
    assert first["paused"] is True
    assert len(first["new"]) == 1, first
    assert len(first["old"]) == 3, first
    assert all(ready for _, ready in first["pods"].values())
    assert second["paused"] is True
    assert len(second["new"]) == 3, second
    assert len(second["old"]) == 1, second
    assert set(first["new"]) <= set(second["new"])  # the canary's pod stays
    # The last step resumed the Deployment; the analysis after the rollout sees all new.
    assert after["paused"] is False
    assert len(after["new"]) == 4
    assert not after["old"]
    assert result.rollout.status == "complete"
    records = result.to_dict()["canary"]
    assert [r.get("updated") for r in records] == [1, None, 3, None]
    assert [r["where"] for r in result.to_dict()["analysis"]] == [
        "canary step 2 (1/4 pods updated)",
        "canary step 4 (3/4 pods updated)",
        "after rollout",
    ]
    annotations = emulated_cluster.get_workload("Deployment", NS, "cart")["metadata"]["annotations"]
    assert annotations[CANARY_PREVIOUS] == '{"paused": false}'


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_revert_after_a_failed_canary_restores_images_pause_and_partition(
    emulated_cluster: EmulatedCluster,
    canary: Callable[..., Any],
    runner: RolloutRunner,
    kind: str,
) -> None:
    emulated_cluster.add_workload(kind, NS, "app", {"main": OLD}, replicas=3)
    verified, provider = canary(kind, "app", fail_at=1)
    with pytest.raises(AnalysisFailed):
        verified.apply(
            Target(NS, kind, "app", {"main": NEW}), service="app", canary=STEPS,
            analyses=[], templates={"look": _spec()}, deadline_seconds=30, run_id="r1",
        )  # fmt: skip
    [held] = provider.seen
    # The failed analysis left the canary where it was: one new pod, the rest held back.
    assert len(held["new"]) == 1, held
    assert len(held["old"]) == 2, held
    left = snapshot(emulated_cluster, kind, "app")
    assert len(left["new"]) == 1, left
    if kind == "Deployment":
        assert left["paused"] is True
    else:
        assert left["partition"] == 2
        assert left["new"] == ["app-2"]

    result = runner.revert(Target(NS, kind, "app", {}), deadline_seconds=30, run_id="r1")
    assert result.status == "complete"
    back = snapshot(emulated_cluster, kind, "app")
    assert back["new"] == [], back
    assert len(back["old"]) == 3, back
    assert all(ready for _, ready in back["pods"].values())
    assert back["paused"] is False
    if kind == "StatefulSet":
        assert back["partition"] == 0
    assert emulated_cluster.images(kind, NS, "app") == {"main": OLD}
