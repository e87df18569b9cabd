"""``python -m convoy.rollout verify|analyze`` as a subprocess: what a rollout pod runs.

The provider is the HTTP check against a small local server that answers only
with the bearer token of the pod's Secret (handed over as the environment
variables the pod's ``secretKeyRef`` would set), and fails images tagged
``-errors``; one test measures on the real Prometheus scraping the emulator
instead. The workloads are on the emulated cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from health_server import HealthServer
from rollout_cli import run_rollout_cli

from convoy.plan.verify import service_verify
from convoy.policy import load_policy
from convoy.rollout.providers.secrets import secret_env

pytestmark = pytest.mark.integration

NS = "shop"
TOKEN = "s3cret-token"
OLD, NEW = "registry.example.com/db:1.0.0", "registry.example.com/db:2.0.0"


@pytest.fixture
def health() -> Iterator[HealthServer]:
    server = HealthServer(TOKEN)
    yield server
    server.close()


POLICY = f"""\
apiVersion: convoy/v1
kind: UpgradePolicy
metadata: {{name: shop}}
kubernetes: {{namespace: {NS}, runnerImage: registry.example.com/convoy:0.1.0}}
analysisTemplates:
  - name: health
    provider: {{http: {{connId: gateway, path: "/health/{{{{ image }}}}",
                       secretRef: {{name: gateway-creds}}}}}}
    count: 2
    interval: 100ms
services:
  - name: db
    workload: {{kind: StatefulSet, name: db}}
    containers: {{server: IMAGE}}
    analysis: [health]
    canary:
      steps:
        - pods: 1
        - analysis: health
"""


def spec_for(tmp_path: Path, image: str) -> dict[str, Any]:
    """The frozen verify spec of the policy's service, as preflight would put in the run record."""
    path = tmp_path / "shop.yaml"
    path.write_text(POLICY.replace("IMAGE", image))
    return service_verify(load_policy(path).policy, "db")


def secret_environ(spec: dict[str, Any], address: str) -> dict[str, str]:
    """The variables the pod's ``secretKeyRef`` env gives the runner (Secret gateway-creds)."""
    values = {"address": address, "token": TOKEN}
    return {e.env: values[e.key] for e in secret_env(spec["templates"]) if e.key in values}


def run_cli(
    kubeconfig: Path, xcom: Path, extra_env: dict[str, str], *args: str
) -> tuple[int, dict[str, Any], subprocess.CompletedProcess[str]]:
    return run_rollout_cli(kubeconfig, xcom, *args, env=extra_env)


@pytest.fixture
def kubeconfig(emulated_cluster: Any, tmp_path: Path) -> Path:
    emulated_cluster.add_workload("StatefulSet", NS, "db", {"server": OLD}, replicas=3)
    return Path(emulated_cluster.write_kubeconfig(tmp_path / "kubeconfig"))


def verify(
    kubeconfig: Path, tmp_path: Path, spec: dict[str, Any], env: dict[str, str], image: str
) -> tuple[int, dict[str, Any], subprocess.CompletedProcess[str]]:
    return run_cli(
        kubeconfig, tmp_path / "xcom" / "return.json", env,
        "verify", "--namespace", NS, "--kind", "StatefulSet", "--name", "db",
        "--container", f"server={image}", "--service", "db", "--spec-json", json.dumps(spec),
        "--deadline-seconds", "30", "--run-id", "run-1",
    )  # fmt: skip


def test_verify_passes_canary_and_analyses(
    emulated_cluster: Any, kubeconfig: Path, tmp_path: Path, health: HealthServer
) -> None:
    spec = spec_for(tmp_path, NEW)
    code, out, proc = verify(kubeconfig, tmp_path, spec, secret_environ(spec, health.url), NEW)
    assert code == 0, proc.stderr
    assert out["ok"] is True
    assert out["verified"] is True
    assert out["action"] == "apply"
    assert out["status"] == "complete"
    assert out["previousImages"] == {"server": OLD}
    assert [(r["where"], r["phase"]) for r in out["analysis"]] == [
        ("canary step 2 (1/3 pods updated)", "successful"),
        ("after rollout", "successful"),
    ]
    assert [m["verdict"] for r in out["analysis"] for m in r["measurements"]] == ["pass"] * 4
    (step1, step2) = out["canary"]
    assert step1["pods"] == 1
    assert step1["updated"] == 1
    assert step2 == {"step": 2, "analysis": "health", "phase": "successful"}
    assert json.loads((tmp_path / "xcom" / "return.json").read_text()) == out
    assert emulated_cluster.images("StatefulSet", NS, "db") == {"server": NEW}
    # The token went to the provider in the header, and nowhere else.
    assert {auth for _path, auth in health.seen} == {f"Bearer {TOKEN}"}
    assert TOKEN not in proc.stdout + proc.stderr


def test_failed_analysis_stops_the_canary_and_the_revert_undoes_it(
    emulated_cluster: Any, kubeconfig: Path, tmp_path: Path, health: HealthServer
) -> None:
    bad = NEW + "-errors"
    spec = spec_for(tmp_path, bad)
    code, out, proc = verify(kubeconfig, tmp_path, spec, secret_environ(spec, health.url), bad)
    assert code == 1, proc.stderr
    assert out["ok"] is False
    assert out["action"] == "verify"
    assert out["error"] == "AnalysisFailed"
    assert out["failedValues"] == [0.0]
    (run,) = out["analysis"]
    assert run["phase"] == "failed"
    assert run["where"] == "canary step 2 (1/3 pods updated)"
    assert out["canary"][0]["updated"] == 1
    assert "Traceback" not in proc.stderr
    # Held at the canary: one pod on the new image, the partition still up.
    sts = emulated_cluster.get_workload("StatefulSet", NS, "db")
    assert sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"] == 2

    # What the revert pod of the rollback runs after a failed verify (pods.py).
    code, out, proc = run_cli(
        kubeconfig, tmp_path / "revert.json", {},
        "revert", "--namespace", NS, "--kind", "StatefulSet", "--name", "db",
        "--deadline-seconds", "30", "--run-id", "run-1", "--only-if-run-id", "run-1",
    )  # fmt: skip
    assert code == 0, proc.stderr
    assert out["reverted"] is True
    assert emulated_cluster.images("StatefulSet", NS, "db") == {"server": OLD}
    sts = emulated_cluster.get_workload("StatefulSet", NS, "db")
    assert sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"] == 0


def test_missing_secret_fails_before_anything_changes(
    emulated_cluster: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    spec = spec_for(tmp_path, NEW)
    code, out, proc = verify(kubeconfig, tmp_path, spec, {}, NEW)
    assert code == 1, proc.stderr
    assert out["error"] == "ProviderSecretMissing"
    assert "Secret 'gateway-creds' gives no address" in out["message"]
    assert not [r for r in emulated_cluster.requests if r.verb == "PATCH"]
    assert emulated_cluster.images("StatefulSet", NS, "db") == {"server": OLD}


@pytest.mark.parametrize(
    ("image", "code", "phase"), [(NEW, 0, "successful"), (NEW + "-errors", 1, "failed")]
)
def test_analyze_measures_a_wave_without_changing_it(
    emulated_cluster: Any,
    kubeconfig: Path,
    tmp_path: Path,
    health: HealthServer,
    image: str,
    code: int,
    phase: str,
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": image}, replicas=2)
    spec = spec_for(tmp_path, NEW)
    wave = {
        "analyses": ["health"],
        "templates": spec["templates"],
        "targets": [
            {"service": "cart", "namespace": NS, "kind": "Deployment", "workload": "cart",
             "containers": {"server": image}},
        ],
    }  # fmt: skip
    got, out, proc = run_cli(
        kubeconfig, tmp_path / "wave.json", secret_environ(spec, health.url),
        "analyze", "--spec-json", json.dumps(wave), "--where", "wave 1",
    )  # fmt: skip
    assert got == code, proc.stderr
    (run,) = out["analysis"]
    assert (run["service"], run["where"], run["phase"]) == ("cart", "wave 1", phase)
    assert run["query"] == f"/health/{image}"
    assert not [r for r in emulated_cluster.requests if r.verb == "PATCH"]
    if code:
        assert out["error"] == "AnalysisFailed"


ERROR_RATE = (
    '(sum(rate(http_requests_total{namespace="{{ namespace }}", workload="{{ workload }}",'
    ' image=~"{{ images }}", code=~"5.."}[5s])) or vector(0))'
    ' / sum(rate(http_requests_total{namespace="{{ namespace }}", workload="{{ workload }}",'
    ' image=~"{{ images }}"}[5s]))'
)


def test_verify_with_a_real_prometheus(
    emulated_cluster: Any,
    kubeconfig: Path,
    tmp_path: Path,
    start_prometheus: Callable[..., str],
) -> None:
    """The canary's analysis on the real query: the healthy image passes, ``-errors`` fails."""
    prometheus = start_prometheus([urllib.parse.urlsplit(emulated_cluster.url).netloc])
    emulated_cluster.add_workload("StatefulSet", NS, "bad", {"server": OLD}, replicas=3)
    spec = {
        "canary": [{"pods": 1}, {"analysis": "error-rate"}],
        "analyses": [],
        "templates": {
            "error-rate": {
                "name": "error-rate", "provider": "prometheus", "conn_id": "prometheus_default",
                "query": ERROR_RATE, "min": None, "max": 0.05, "interval_s": 1.0, "count": 2,
                "initial_delay_s": 4.0, "secret": "convoy-prometheus",
            }
        },
    }  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env.update({e.env: prometheus for e in secret_env(spec["templates"]) if e.key == "address"})

    def start(name: str, image: str) -> subprocess.Popen[str]:
        args = [
            "verify", "--namespace", NS, "--kind", "StatefulSet", "--name", name,
            "--container", f"server={image}", "--service", name, "--spec-json", json.dumps(spec),
            "--deadline-seconds", "30", "--kubeconfig", str(kubeconfig),
        ]  # fmt: skip
        return subprocess.Popen(
            [sys.executable, "-m", "convoy.rollout", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "CONVOY_XCOM_PATH": str(tmp_path / f"{name}.json")},
        )

    # Both at once: the test waits for one initial delay, not two.
    started = {"db": start("db", NEW), "bad": start("bad", NEW + "-errors")}
    outcomes = {}
    for name, proc in started.items():
        stdout, stderr = proc.communicate(timeout=90)
        out = json.loads(stdout.strip().splitlines()[-1])
        (run,) = out["analysis"]
        outcomes[name] = (proc.returncode, out.get("error"), run["phase"], run["measurements"])
        assert "Traceback" not in stderr
    assert outcomes["db"][:3] == (0, None, "successful")
    assert [m["value"] for m in outcomes["db"][3]] == [0.0, 0.0]
    assert outcomes["bad"][:3] == (1, "AnalysisFailed", "failed")
    (failed,) = outcomes["bad"][3]  # the first failed measurement stops the analysis
    assert failed["verdict"] == "fail"
    assert 0.1 < failed["value"] < 0.3  # 20 % of the canary pod's requests answer 500
    assert emulated_cluster.images("StatefulSet", NS, "db") == {"server": NEW}


def test_inconclusive_verify_ends_with_a_checkpoint_and_resume_goes_on_from_it(
    emulated_cluster: Any, kubeconfig: Path, tmp_path: Path, health: HealthServer
) -> None:
    spec = spec_for(tmp_path, NEW)
    # Nothing listens on port 1: every measurement of the canary's analysis has no number.
    code, out, proc = verify(
        kubeconfig, tmp_path, spec, secret_environ(spec, "http://127.0.0.1:1"), NEW
    )
    assert code == 1, proc.stderr
    assert out["error"] == "AnalysisInconclusive"
    checkpoint = out["checkpoint"]
    assert (checkpoint["stage"], checkpoint["index"]) == ("canary", 2)
    assert checkpoint["previous"] == {"server": OLD}
    assert [(r["where"], r["phase"]) for r in checkpoint["runs"]] == [
        ("canary step 2 (1/3 pods updated)", "inconclusive"),
    ]
    assert TOKEN not in proc.stdout + proc.stderr
    sts = emulated_cluster.get_workload("StatefulSet", NS, "db")
    assert sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"] == 2

    # The continuation, with the provider reachable again: the held canary goes on.
    code, out, proc = run_cli(
        kubeconfig, tmp_path / "xcom" / "return.json", secret_environ(spec, health.url),
        "verify", "--namespace", NS, "--kind", "StatefulSet", "--name", "db",
        "--container", f"server={NEW}", "--service", "db", "--spec-json", json.dumps(spec),
        "--deadline-seconds", "30", "--run-id", "run-1", "--resume-json", json.dumps(checkpoint),
    )  # fmt: skip
    assert code == 0, proc.stderr
    assert out["ok"] is True
    assert out["status"] == "complete"
    assert out["previousImages"] == {"server": OLD}
    # The first pod's step 1 and its analysis are kept, not done again.
    assert [(r["where"], r["phase"]) for r in out["analysis"]] == [
        ("canary step 2 (1/3 pods updated)", "inconclusive"),
        ("after rollout", "successful"),
    ]
    assert out["canary"][0] == checkpoint["steps"][0]
    assert [s.get("step") for s in out["canary"]] == [1, 2]
    assert emulated_cluster.images("StatefulSet", NS, "db") == {"server": NEW}
    sts = emulated_cluster.get_workload("StatefulSet", NS, "db")
    assert sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"] == 0
    # Only the after-rollout analysis measured: the canary step's was not run again.
    assert len(health.seen) == 2


def test_resume_json_must_be_a_checkpoint(kubeconfig: Path, tmp_path: Path) -> None:
    spec = spec_for(tmp_path, NEW)
    code, _out, proc = run_cli(
        kubeconfig, tmp_path / "xcom" / "return.json", {},
        "verify", "--namespace", NS, "--kind", "StatefulSet", "--name", "db",
        "--container", f"server={NEW}", "--service", "db", "--spec-json", json.dumps(spec),
        "--resume-json", "[1]",
    )  # fmt: skip
    assert code == 2, proc.stderr
    assert "--resume-json is not a checkpoint" in proc.stdout + proc.stderr


def test_inconclusive_analyze_ends_with_a_checkpoint_and_resume_goes_on_from_it(
    emulated_cluster: Any, kubeconfig: Path, tmp_path: Path, health: HealthServer
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": NEW}, replicas=2)
    spec = spec_for(tmp_path, NEW)
    wave = {
        "analyses": ["health"],
        "templates": spec["templates"],
        "targets": [
            {"service": "cart", "namespace": NS, "kind": "Deployment", "workload": "cart",
             "containers": {"server": NEW}},
            {"service": "db", "namespace": NS, "kind": "StatefulSet", "workload": "db",
             "containers": {"server": OLD}},
        ],
    }  # fmt: skip
    # Nothing listens on port 1: the first target's analysis has no number.
    code, out, proc = run_cli(
        kubeconfig, tmp_path / "wave.json", secret_environ(spec, "http://127.0.0.1:1"),
        "analyze", "--spec-json", json.dumps(wave), "--where", "wave 1",
    )  # fmt: skip
    assert code == 1, proc.stderr
    assert out["error"] == "AnalysisInconclusive"
    checkpoint = out["checkpoint"]
    assert (checkpoint["step"], checkpoint["template"], checkpoint["service"]) == (0, 0, "cart")
    assert [(r["service"], r["phase"]) for r in checkpoint["runs"]] == [("cart", "inconclusive")]
    assert TOKEN not in proc.stdout + proc.stderr

    # Approved, with the provider reachable again: the next target, cart is not measured again.
    checkpoint["runs"][-1]["decision"] = "approved by alice"
    code, out, proc = run_cli(
        kubeconfig, tmp_path / "wave.json", secret_environ(spec, health.url),
        "analyze", "--spec-json", json.dumps(wave), "--where", "wave 1",
        "--resume-json", json.dumps(checkpoint),
    )  # fmt: skip
    assert code == 0, proc.stderr
    assert [(r["service"], r["phase"], r.get("decision")) for r in out["analysis"]] == [
        ("cart", "inconclusive", "approved by alice"),
        ("db", "successful", None),
    ]
    assert [path for path, _ in health.seen] == [f"/health/{OLD}"] * 2
    assert not [r for r in emulated_cluster.requests if r.verb == "PATCH"]

    code, _out, proc = run_cli(
        kubeconfig, tmp_path / "wave.json", {},
        "analyze", "--spec-json", json.dumps(wave), "--resume-json", '{"step": 0}',
    )  # fmt: skip
    assert code == 2, proc.stderr
    assert "--resume-json is not a checkpoint" in proc.stdout + proc.stderr
