"""``airflow dags test`` of a policy with ``alerts.deadlineMinutes`` reports the run's outcome.

Airflow 3.3.2's ``DAG.test()`` crashes after a successful run of a DAG with a
Deadline Alert (apache/airflow#73428), so ``airflow dags test`` exited 1 for
every such policy; ``convoy.airflow.dag_builder.PolicyDAG`` works around it.
The last test calls Airflow's own ``DAG.test`` on the same DAG: it fails once
the pinned Airflow is fixed, the signal to drop the workaround.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_helpers import AIRFLOW, load_dag

pytestmark = pytest.mark.e2e

NAMESPACE = "deadline-cli"


def _policy(name: str, image: str, webhook: str) -> dict[str, Any]:
    return {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {"name": name},
        "execution": "local",
        "kubernetes": {
            "namespace": NAMESPACE,
            "connId": "kubernetes_default",
            "runnerImage": "registry.example.com/convoy:0.1.0",
        },
        "rollout": {"maxParallel": 1, "progressDeadlineSeconds": 10},
        "services": [
            {
                "name": "api",
                "workload": {"kind": "Deployment", "name": name},
                "containers": {"server": image},
            }
        ],
        "alerts": {"onFailure": [webhook], "deadlineMinutes": 30},
    }


@pytest.fixture
def policies(
    cluster: Any, webhook_receiver: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Two policies with a deadline: ``deadline-ok`` rolls out, ``deadline-fails`` crash-loops."""
    from convoy.policy import load_policy

    root = tmp_path / "policies"
    root.mkdir()
    monkeypatch.setenv("CONVOY_POLICIES_DIR", str(root))
    monkeypatch.setenv("CONVOY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("CONVOY_REPORTS_DIR", str(tmp_path / "reports"))
    images = {
        "deadline-ok": "registry.example.com/api:2.0.0",
        "deadline-fails": "registry.example.com/api:2.0.0-crashloop",
    }
    for name, image in images.items():
        path = root / f"{name}.yaml"
        path.write_text(
            yaml.safe_dump(_policy(name, image, webhook_receiver.url("/hooks")), sort_keys=False)
        )
        cluster.seed_from_policy(load_policy(path).policy)
    return root


def _dags_test(dag_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AIRFLOW, "dags", "test", dag_id],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
    )


def test_dags_test_exits_0_after_a_successful_run(policies: Path, cluster: Any) -> None:
    proc = _dags_test("deadline-ok")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "object has no attribute 'hex'" not in output
    assert "Marking run" in output
    assert "successful" in output
    assert cluster.images("Deployment", NAMESPACE, "deadline-ok") == {
        "server": "registry.example.com/api:2.0.0"
    }
    # Parsed again by ``dags test``: the DAG in the metadata DB keeps its alert.
    dag = load_dag("deadline-ok")
    assert dag.deadline is not None
    assert [a.name for a in dag.deadline] == ["convoy-deadline-ok-deadline"]


def test_dags_test_exits_non_zero_after_a_failed_run(policies: Path) -> None:
    proc = _dags_test("deadline-fails")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-4000:]
    assert "DagRun failed" in output, output[-4000:]
    assert "object has no attribute 'hex'" not in output


def test_pinned_airflow_still_needs_the_workaround(policies: Path) -> None:
    """Airflow's own ``DAG.test`` still crashes after success (apache/airflow#73428).

    When this fails, the pinned Airflow has the fix (apache/airflow#73430):
    remove ``PolicyDAG.test`` and its entry in docs/decisions.md.
    """
    from airflow.sdk import DAG
    from sqlalchemy.exc import StatementError

    dag = load_dag("deadline-ok")
    with pytest.raises(StatementError, match="'dict' object has no attribute 'hex'"):
        DAG.test(dag)
