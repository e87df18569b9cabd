"""`make demo` end to end: the demo policy fails in its last wave and rolls back data and images."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_fails_as_designed_and_restores_every_image(
    repo_root: Path, tmp_path: Path
) -> None:
    env = dict(os.environ)
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow")
    env["CONVOY_DEMO_DIR"] = str(tmp_path / "demo")
    env.pop("KUBECONFIG", None)
    result = subprocess.run(
        [sys.executable, "-m", "convoy.demo"],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "Every image back where it started after the rollback: yes" in report
    assert "| checkout |" in report
    assert "| failed | success |" in report
    assert "failed rollouts: checkout; reverted after success: 6 service(s)" in result.stdout
    assert "wave" in result.stdout.lower()
    # The orders datastore was migrated and back-filled, then reverted to identical data.
    assert "| orders | 1, 2 | 2, 1 | 300000 | success | yes |" in report
    assert "data restored: yes" in result.stdout
    if not os.environ.get("MONGO_URI"):
        assert "MongoDB datastore 'catalog'" in report
        assert "skipped, MONGO_URI is not set" in report
