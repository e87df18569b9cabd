"""``convoy.operate`` is Airflow-free: only ``convoy.airflow.connections`` reaches Airflow."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    import convoy.operate as package
    names = [package.__name__] + [
        i.name for i in pkgutil.walk_packages(package.__path__, "convoy.operate.")
    ]
    for name in names:
        importlib.import_module(name)
    import convoy.cli
    convoy.cli.build_parser()
    loaded = sorted(n for n in sys.modules if n == "airflow" or n.startswith("airflow."))
    print(json.dumps({"modules": names, "airflow": loaded}))
    """
)


def test_operate_and_the_cli_import_no_airflow() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=180, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "convoy.operate.status" in found["modules"]
    assert found["airflow"] == []
