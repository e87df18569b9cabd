"""The runner against a real cluster: ``KUBECONFIG=... .venv/bin/pytest -m cluster tests/cluster``.

Creates a throw-away namespace with a Deployment of ``registry.k8s.io/pause``,
applies a new tag, reverts it, and deletes the namespace. Needs permission to
create and delete namespaces and Deployments.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="needs KUBECONFIG"),
]

OLD, NEW = "registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.10"


def test_apply_and_revert_on_a_real_cluster(
    namespace: str, pause_deployment: Callable[..., Any]
) -> None:
    from convoy.rollout import Target

    runner = pause_deployment(OLD, replicas=2)

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
