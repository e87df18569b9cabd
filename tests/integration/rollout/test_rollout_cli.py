"""``python -m convoy.rollout`` end to end as a subprocess against the emulator."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from rollout_cli import run_rollout_cli

from convoy.rollout.cli import main

pytestmark = pytest.mark.integration

NS = "shop"


def run_cli(
    kubeconfig: Path, xcom: Path, *args: str
) -> tuple[int, dict[str, Any], subprocess.CompletedProcess[str]]:
    return run_rollout_cli(kubeconfig, xcom, *args, timeout=60)


@pytest.fixture
def kubeconfig(emulated_cluster: Any, tmp_path: Path) -> Path:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"})
    return Path(emulated_cluster.write_kubeconfig(tmp_path / "kubeconfig"))


def test_apply_then_revert(emulated_cluster: Any, kubeconfig: Path, tmp_path: Path) -> None:
    xcom = tmp_path / "xcom" / "return.json"
    target = ["--namespace", NS, "--kind", "Deployment", "--name", "cart"]
    code, out, proc = run_cli(
        kubeconfig, xcom, "apply", *target, "--container", "server=cart:2.4.0",
        "--deadline-seconds", "30", "--run-id", "manual__1",
    )  # fmt: skip
    assert code == 0, proc.stderr
    assert out["ok"] is True
    assert out["status"] == "complete"
    assert out["previousImages"] == {"server": "cart:2.3.0"}
    assert out["runId"] == "manual__1"
    assert json.loads(xcom.read_text()) == out
    assert "cart: 3/3 updated, 3/3 ready (100%)" in proc.stderr  # logs on stderr
    assert emulated_cluster.images("Deployment", NS, "cart") == {"server": "cart:2.4.0"}

    code, out, proc = run_cli(
        kubeconfig, xcom, "revert", *target,
        "--previous-json", json.dumps(out["previousImages"]), "--deadline-seconds", "30",
    )  # fmt: skip
    assert code == 0, proc.stderr
    assert out["action"] == "revert"
    assert emulated_cluster.images("Deployment", NS, "cart") == {"server": "cart:2.3.0"}


def test_failure_prints_error_json_without_traceback(kubeconfig: Path, tmp_path: Path) -> None:
    xcom = tmp_path / "return.json"
    code, out, proc = run_cli(
        kubeconfig, xcom, "apply", "--namespace", NS, "--kind", "Deployment", "--name", "cart",
        "--container", "server=cart:2.4.0-imagepull", "--deadline-seconds", "20",
        "--stall-seconds", "1",
    )  # fmt: skip
    assert code == 1
    assert out["ok"] is False
    assert out["error"] == "ImagePullFailed"
    assert out["container"] == "server"
    assert "Traceback" not in proc.stderr + proc.stdout
    assert json.loads(xcom.read_text())["error"] == "ImagePullFailed"


def run_main(
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    xcom: Path,
    *args: str,
) -> tuple[int, dict[str, Any]]:
    """The same CLI in-process (the Kubernetes client is already imported: faster)."""
    monkeypatch.setenv("CONVOY_XCOM_PATH", str(xcom))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code = main([*args, "--kubeconfig", str(kubeconfig)])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_not_found_exit_code(
    kubeconfig: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out = run_main(
        kubeconfig, capsys, monkeypatch, tmp_path / "r.json", "apply", "--namespace", NS,
        "--kind", "StatefulSet", "--name", "cart", "--container", "server=x:1",
    )  # fmt: skip
    assert code == 1
    assert out["error"] == "WorkloadNotFound"
    assert json.loads((tmp_path / "r.json").read_text()) == out


def test_dry_run_and_status(
    emulated_cluster: Any,
    kubeconfig: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = ["--namespace", NS, "--kind", "Deployment", "--name", "cart"]
    code, out = run_main(
        kubeconfig, capsys, monkeypatch, tmp_path / "r.json", "apply", *target,
        "--container", "server=cart:9", "--dry-run",
    )  # fmt: skip
    assert code == 0
    assert (out["status"], out["dryRun"], out["images"]) == ("dry-run", True, {"server": "cart:9"})
    assert emulated_cluster.images("Deployment", NS, "cart") == {"server": "cart:2.3.0"}
    code, out = run_main(kubeconfig, capsys, monkeypatch, tmp_path / "s.json", "status", *target)
    assert code == 0
    assert (out["status"], out["images"]) == ("complete", {"server": "cart:2.3.0"})


def test_revert_only_if_run_id(
    emulated_cluster: Any,
    kubeconfig: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "currency", {"server": "cur:2.3.0"})
    xcom = tmp_path / "r.json"
    cart = ["--namespace", NS, "--kind", "Deployment", "--name", "cart"]
    currency = ["--namespace", NS, "--kind", "Deployment", "--name", "currency"]
    for target, image, run in ((cart, "server=cart:2.4.0", "run-1"),
                               (currency, "server=cur:2.4.0", "run-2")):  # fmt: skip
        code, _ = run_main(
            kubeconfig, capsys, monkeypatch, xcom, "apply", *target, "--container", image,
            "--deadline-seconds", "30", "--run-id", run,
        )  # fmt: skip
        assert code == 0
    manual = ["--deadline-seconds", "30", "--run-id", "undo-1", "--only-if-run-id", "run-1"]

    # A later run changed currency last: left alone, and that is a success.
    code, out = run_main(kubeconfig, capsys, monkeypatch, xcom, "revert", *currency, *manual)
    assert code == 0
    assert (out["ok"], out["reverted"], out["changed"]) == (True, False, False)
    assert out["status"] == "skipped"
    assert (
        out["reason"] == "not changed by run-1: Deployment/currency was last changed by run run-2"
    )
    assert json.loads(xcom.read_text()) == out
    assert emulated_cluster.images("Deployment", NS, "currency") == {"server": "cur:2.4.0"}

    # run-1 changed cart last: reverted from the previous-images annotation.
    code, out = run_main(kubeconfig, capsys, monkeypatch, xcom, "revert", *cart, *manual)
    assert code == 0
    assert (out["ok"], out["reverted"], out["changed"], out["status"]) == (
        True, True, True, "complete",
    )  # fmt: skip
    assert "reason" not in out
    assert emulated_cluster.images("Deployment", NS, "cart") == {"server": "cart:2.3.0"}

    # A retry of the same task (same --run-id) finds its own annotation and finishes.
    code, out = run_main(kubeconfig, capsys, monkeypatch, xcom, "revert", *cart, *manual)
    assert code == 0
    assert (out["reverted"], out["status"]) == (True, "noop")
    assert emulated_cluster.images("Deployment", NS, "cart") == {"server": "cart:2.3.0"}


@pytest.mark.parametrize(
    "args",
    [
        ["apply", "--namespace", NS, "--kind", "Deployment", "--name", "cart"],  # no --container
        ["apply", "--namespace", NS, "--kind", "Pod", "--name", "cart", "--container", "a=b"],
        ["apply", "--namespace", NS, "--kind", "Deployment", "--name", "c", "--container", "ab"],
        [
            "revert",
            "--namespace",
            NS,
            "--kind",
            "Deployment",
            "--name",
            "c",
            "--previous-json",
            "[",
        ],
        ["frobnicate"],
        ["revert", "--namespace", NS, "--kind", "Deployment", "--name", "c", "--only-if-run-id="],
        ["apply", "--namespace", NS, "--kind", "Deployment", "--name", "c", "--only-if-run-id=x"],
    ],
)
def test_usage_errors_exit_2(kubeconfig: Path, tmp_path: Path, args: list[str]) -> None:
    code, out, proc = run_cli(kubeconfig, tmp_path / "r.json", *args)
    assert code == 2
    assert out["error"] == "UsageError"
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r.json").exists()
