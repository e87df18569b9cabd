"""The orders database password of a demo run never reaches logs, reports or output.

The session's demo run (``tests/demo_run.py``) plants a password on the orders
database's owner, and the demo passes it to ``airflow dags test`` as
``AIRFLOW_CONN_ORDERS_DB``: the orders datastore is backed up, migrated,
transformed and reverted through that connection, and checkout fails, so the
error and rollback paths run too.

Afterwards every file under ``AIRFLOW_HOME`` (task log files if any,
``convoy-reports``), under the demo directory (``demo.log``, which holds the
output of ``airflow dags test`` and so every task's log, ``report.md``, the
runs directory with ``report.json``; the PostgreSQL data directory excluded:
the demo run itself created the role there), the Markdown and HTML reports named
by ``report.json`` and the captured stdout/stderr are searched for the password
(raw; it reads the same URL-encoded).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from demo_run import PASSWORD

pytestmark = pytest.mark.e2e


def _files(root: Path, exclude: Path | None = None) -> list[Path]:
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and not (exclude is not None and exclude in p.parents)
    ]


def test_demo_run_never_writes_the_orders_password(demo_run: Any) -> None:
    assert quote(PASSWORD, safe="") == PASSWORD
    result, demo_dir = demo_run.result, demo_run.demo_dir
    output = result.stdout + result.stderr
    # The run went through the password-bearing connection: the datastore did its work.
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (
        "| orders | 1, 2 | 2, 1 | 300000 | success | yes |" in (demo_dir / "report.md").read_text()
    )

    files = _files(demo_run.airflow_home) + _files(demo_dir, exclude=demo_dir / "postgres")
    # `airflow dags test` runs the tasks in its own process: the task logs are its
    # output, which the demo appends to demo.log.
    demo_log = (demo_dir / "demo.log").read_text()
    assert "Task started" in demo_log
    assert "rollout_checkout" in demo_log
    run_reports = [p for p in files if p.name == "report.json"]
    assert run_reports, "no run report was written"
    for run_report in run_reports:
        summary = json.loads(run_report.read_text())
        # the Markdown and HTML reports, wherever the run put them
        files += [Path(summary[k]) for k in ("reportMd", "reportHtml") if summary.get(k)]
    leaks = [str(p) for p in files if PASSWORD.encode() in p.read_bytes()]
    if PASSWORD in output:
        leaks.append("<demo stdout/stderr>")
    assert leaks == [], f"the orders password was written to: {leaks}"
