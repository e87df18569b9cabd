"""The runner against a real cluster: ``KUBECONFIG=... .venv/bin/pytest -m cluster tests/cluster``.

Creates a throw-away namespace with a Deployment of ``registry.k8s.io/pause``,
applies a new tag, reverts it, and deletes the namespace. Needs permission to
create and delete namespaces and Deployments.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="needs KUBECONFIG"),
]

OLD, NEW = "registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.10"


def test_apply_and_revert_on_a_real_cluster(api_client: Any, namespace: str) -> None:
    from kubernetes import client

    from convoy.rollout import RolloutRunner, Target

    labels = {"app": "pause"}
    client.AppsV1Api(api_client).create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "pause", "labels": labels},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "pause", "image": OLD}]},
                },
            },
        },
    )
    runner = RolloutRunner(api_client, stall_seconds=60)
    status = runner.status(Target(namespace, "Deployment", "pause"))
    deadline = time.monotonic() + 180
    while status.status != "complete" and time.monotonic() < deadline:
        time.sleep(2)  # the initial creation, not what is under test
        status = runner.status(Target(namespace, "Deployment", "pause"))

    applied = runner.apply(
        Target(namespace, "Deployment", "pause", {"pause": NEW}), deadline_seconds=300
    )
    assert applied.status == "complete"
    assert applied.previous_images == {"pause": OLD}
    assert (
        runner.apply(
            Target(namespace, "Deployment", "pause", {"pause": NEW}), deadline_seconds=60
        ).status
        == "noop"
    )

    dry = runner.revert(
        Target(namespace, "Deployment", "pause", applied.previous_images),
        deadline_seconds=60,
        dry_run=True,
    )
    assert dry.status == "dry-run"
    assert runner.status(Target(namespace, "Deployment", "pause")).images == {"pause": NEW}

    reverted = runner.revert(Target(namespace, "Deployment", "pause"), deadline_seconds=300)
    assert reverted.status == "complete"
    assert reverted.images == {"pause": OLD}

    # A manual rollback of another run leaves the workload alone (one GET).
    applied = runner.apply(
        Target(namespace, "Deployment", "pause", {"pause": NEW}),
        deadline_seconds=300,
        run_id="run-a",
    )
    assert applied.status == "complete"
    other = runner.revert(
        Target(namespace, "Deployment", "pause"),
        deadline_seconds=60,
        run_id="manual-rollback",
        only_if_run_id="run-b",
    )
    assert other.status == "skipped"
    assert runner.status(Target(namespace, "Deployment", "pause")).images == {"pause": NEW}

    reverted = runner.revert(
        Target(namespace, "Deployment", "pause"),
        deadline_seconds=300,
        run_id="manual-rollback",
        only_if_run_id="run-a",
    )
    assert reverted.status == "complete"
    assert reverted.images == {"pause": OLD}
