"""Run ``python -m convoy.rollout`` as a subprocess, as a rollout pod runs it (tests only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def run_rollout_cli(
    kubeconfig: Path,
    xcom: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 90,
) -> tuple[int, dict[str, Any], subprocess.CompletedProcess[str]]:
    """Exit code, the JSON result (its last stdout line) and the process.

    ``xcom`` is where the runner writes the pod's XCom file; ``env`` adds
    variables (the Secret's values a pod's ``secretKeyRef`` would set). The
    in-cluster variable is dropped so the runner uses ``kubeconfig``.
    """
    environ = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    environ.update(env or {}, CONVOY_XCOM_PATH=str(xcom))
    proc = subprocess.run(
        [sys.executable, "-m", "convoy.rollout", *args, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    return proc.returncode, (json.loads(lines[-1]) if lines else {}), proc
