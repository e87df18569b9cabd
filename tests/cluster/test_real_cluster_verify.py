"""A verified rollout on a real cluster: what a rollout pod runs, from this machine.

``KUBECONFIG=... .venv/bin/pytest -m cluster tests/cluster``. The runner
(``python -m convoy.rollout verify``, as the rollout pod runs it) rolls a
Deployment of ``registry.k8s.io/pause`` out as a canary that pauses after one
new pod, measures an HTTP check served by this test on 127.0.0.1 (the runner
runs here, not in the cluster, so it can reach it) with the bearer token the
pod's ``secretKeyRef`` would give, and goes on or stops. A failed analysis
leaves the canary paused, and the revert the rollback's pod runs restores the
images and resumes the Deployment. Needs permission to create and delete
namespaces and Deployments.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from health_server import HealthServer
from rollout_cli import run_rollout_cli

from convoy.plan.verify import service_verify
from convoy.policy import load_policy
from convoy.rollout.providers.secrets import secret_env

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="needs KUBECONFIG"),
]

OLD, NEW = "registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.10"
TOKEN = "real-cluster-token"

POLICY = """\
apiVersion: convoy/v1
kind: UpgradePolicy
metadata: {name: real-cluster}
kubernetes: {namespace: NAMESPACE, runnerImage: registry.example.com/convoy:0.1.0}
analysisTemplates:
  - name: health
    provider: {http: {connId: gateway, path: "/health/{{ image }}",
                      secretRef: {name: gateway-creds}}}
    count: 2
    interval: 1s
services:
  - name: pause
    workload: {kind: Deployment, name: pause}
    containers: {pause: NEW_IMAGE}
    analysis: [health]
    canary:
      steps:
        - pods: 1
        - analysis: health
"""


@pytest.fixture
def kubeconfig() -> Path:
    return Path(os.environ["KUBECONFIG"])


@pytest.fixture
def deployment(
    api_client: Any, namespace: str, pause_deployment: Callable[..., Any]
) -> dict[str, Any]:
    """``pause`` with 3 replicas on the old image, rolled out before the test starts."""
    from kubernetes import client

    from convoy.rollout import Target

    runner = pause_deployment(OLD, replicas=3)
    target = Target(namespace, "Deployment", "pause")
    return {"apps": client.AppsV1Api(api_client), "runner": runner, "target": target}


@pytest.fixture
def health() -> Iterator[HealthServer]:
    server = HealthServer(TOKEN)
    yield server
    server.close()


def _spec(tmp_path: Path, namespace: str) -> dict[str, Any]:
    path = tmp_path / "real-cluster.yaml"
    path.write_text(POLICY.replace("NAMESPACE", namespace).replace("NEW_IMAGE", NEW))
    return service_verify(load_policy(path).policy, "pause")


def _verify(
    kubeconfig: Path, tmp_path: Path, namespace: str, health: HealthServer
) -> tuple[int, dict[str, Any], subprocess.CompletedProcess[str]]:
    spec = _spec(tmp_path, namespace)
    values = {"address": health.url, "token": TOKEN}
    env = {e.env: values[e.key] for e in secret_env(spec["templates"]) if e.key in values}
    return run_rollout_cli(
        kubeconfig, tmp_path / "verify.json",
        "verify", "--namespace", namespace, "--kind", "Deployment", "--name", "pause",
        "--container", f"pause={NEW}", "--service", "pause", "--spec-json", json.dumps(spec),
        "--deadline-seconds", "300", "--run-id", "run-1",
        env=env, timeout=600,
    )  # fmt: skip


def _images(deployment: dict[str, Any]) -> dict[str, str]:
    return dict(deployment["runner"].status(deployment["target"]).images)


def test_a_healthy_canary_goes_on_to_the_full_rollout(
    kubeconfig: Path,
    namespace: str,
    deployment: dict[str, Any],
    health: HealthServer,
    tmp_path: Path,
) -> None:
    code, out, proc = _verify(kubeconfig, tmp_path, namespace, health)
    assert code == 0, proc.stderr
    assert out["verified"] is True
    assert out["status"] == "complete"
    assert out["previousImages"] == {"pause": OLD}
    assert [r["phase"] for r in out["analysis"]] == ["successful", "successful"]
    assert out["canary"][0]["updated"] >= 1
    assert _images(deployment) == {"pause": NEW}
    live = deployment["apps"].read_namespaced_deployment("pause", namespace)
    assert not live.spec.paused
    assert {auth for _path, auth in health.seen} == {f"Bearer {TOKEN}"}
    assert TOKEN not in proc.stdout + proc.stderr


def test_a_failed_canary_stays_paused_and_the_revert_restores_it(
    kubeconfig: Path,
    namespace: str,
    deployment: dict[str, Any],
    health: HealthServer,
    tmp_path: Path,
) -> None:
    health.failing = True
    code, out, proc = _verify(kubeconfig, tmp_path, namespace, health)
    assert code == 1, proc.stderr
    assert out["error"] == "AnalysisFailed"
    assert out["analysis"][0]["phase"] == "failed"
    assert "Traceback" not in proc.stderr
    live = deployment["apps"].read_namespaced_deployment("pause", namespace)
    assert live.spec.paused is True  # held at the canary: nothing after it started

    code, out, proc = run_rollout_cli(
        kubeconfig, tmp_path / "revert.json",
        "revert", "--namespace", namespace, "--kind", "Deployment", "--name", "pause",
        "--deadline-seconds", "300", "--run-id", "run-1", "--only-if-run-id", "run-1",
        timeout=600,
    )  # fmt: skip
    assert code == 0, proc.stderr
    assert out["reverted"] is True
    assert _images(deployment) == {"pause": OLD}
    live = deployment["apps"].read_namespaced_deployment("pause", namespace)
    assert not live.spec.paused
