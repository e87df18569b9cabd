"""`make demo` end to end: the demo policy fails in its last wave and rolls back data and images."""

from __future__ import annotations

import os
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_fails_as_designed_and_restores_every_image(demo_run: Any) -> None:
    result = demo_run.result
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout
    report = (demo_run.demo_dir / "report.md").read_text()
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
