"""The layer rule: only ``convoy.airflow`` (and the UI's adapter) imports Airflow.

Each package, with every module in it, is imported in a fresh interpreter; the
test fails if ``airflow`` (or any ``airflow.*``) ends up in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

#: The Airflow-free layers (README, "Layout").
AIRFLOW_FREE = (
    "convoy.policy",
    "convoy.plan",
    "convoy.engines",
    "convoy.engines.postgres",
    "convoy.engines.mongo",
    "convoy.rollout",
    "convoy.validation",
    "convoy.observe",
    "convoy.settings",
    "convoy.redaction",
    "convoy.templating",
)

PROBE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys

    package = importlib.import_module(sys.argv[1])
    modules = [package.__name__]
    if hasattr(package, "__path__"):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.rsplit(".", 1)[-1] == "__main__":
                continue  # runs the CLI when imported
            importlib.import_module(info.name)
            modules.append(info.name)
    loaded = sorted(n for n in sys.modules if n == "airflow" or n.startswith("airflow."))
    print(json.dumps({"modules": modules, "airflow": loaded}))
    """
)


@pytest.mark.parametrize("package", AIRFLOW_FREE)
def test_package_does_not_import_airflow(package: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, package],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["modules"][0] == package
    assert found["airflow"] == [], f"{package} imports Airflow ({found['modules']})"


def test_the_probe_sees_an_airflow_import() -> None:
    """The same probe on the Airflow layer finds Airflow (the test can fail)."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "convoy.airflow.retries"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "airflow" in json.loads(proc.stdout.strip().splitlines()[-1])["airflow"]
