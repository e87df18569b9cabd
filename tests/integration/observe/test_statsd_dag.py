"""`airflow dags test` of a tiny policy sends convoy's metrics to a real StatsD listener.

Local execution against the emulated cluster (as tests/e2e does), with Airflow's
StatsD settings pointing at a UDP socket on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from statsd_listener import StatsdListener, mapped_names

from convoy.policy import load_policy

pytestmark = pytest.mark.e2e

AIRFLOW = str(Path(sys.executable).with_name("airflow"))

TINY_POLICY = {
    "apiVersion": "convoy/v1",
    "kind": "UpgradePolicy",
    "metadata": {"name": "metrics-probe", "owner": "platform"},
    "schedule": None,
    "execution": "local",
    "kubernetes": {
        "namespace": "probe",
        "connId": "kubernetes_default",
        "serviceAccount": "convoy-rollout",
        "runnerImage": "registry.example.com/convoy:0.1.0",
    },
    "rollout": {"progressDeadlineSeconds": 20},
    "services": [
        {
            "name": "web",
            "workload": {"kind": "Deployment", "name": "web"},
            "containers": {"server": "registry.example.com/web:2.4.0"},
        }
    ],
}


def test_dags_test_run_emits_outcome_and_rollout_metrics(
    airflow_db: None, statsd: StatsdListener, emulated_cluster: Any, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    path = policies / "metrics-probe.yaml"
    path.write_text(yaml.safe_dump(TINY_POLICY, sort_keys=False))
    loaded = load_policy(path)
    emulated_cluster.seed_from_policy(loaded.policy, previous_tag="2.3.0")
    kubeconfig = emulated_cluster.write_kubeconfig(tmp_path / "kubeconfig")
    env = {
        **os.environ,
        **statsd.statsd_env(),
        "CONVOY_POLICIES_DIR": str(policies),
        "CONVOY_EXECUTION_MODE": "local",
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
        ),
    }
    env.pop("KUBECONFIG", None)
    proc = subprocess.run(
        [AIRFLOW, "dags", "test", "metrics-probe"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    outcome = "airflow.convoy.run.outcome.metrics-probe.success"
    rolled_out = "airflow.convoy.rollout.services_rolled_out.metrics-probe.web"
    got = statsd.wait_for({outcome, rolled_out}, timeout=5)
    names = {s.name for s in got}
    assert {outcome, rolled_out} <= names, sorted(names)
    for name in (n for n in names if n.startswith("airflow.convoy.")):
        assert len(mapped_names(name)) == 1, name
