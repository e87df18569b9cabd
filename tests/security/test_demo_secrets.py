"""The orders database password of a demo run never reaches logs, reports or output.

The demo's embedded PostgreSQL needs no password, so the test plants one: the
demo runs in a subprocess whose ``convoy.demo._create_orders`` is wrapped to
hand the ``orders`` database and its table to a new role with a password and
to return the URI with that role and password, which the demo then passes to
``airflow dags test`` as ``AIRFLOW_CONN_ORDERS_DB`` (and uses for its own
state digests). Everything else is the real demo: the orders datastore is
backed up, migrated, transformed and reverted through that connection, and
checkout fails, so the error and rollback paths run too.

Afterwards every file under ``AIRFLOW_HOME`` (task log files if any,
``convoy-reports``), under the demo directory (``demo.log``, which holds the
output of ``airflow dags test`` and so every task's log, ``report.md``, the
runs directory with ``report.json``; the PostgreSQL data directory excluded:
the test itself created the role there), the Markdown and HTML reports named by
``report.json`` and the captured stdout/stderr are searched for the password
(raw; it reads the same URL-encoded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest

pytestmark = pytest.mark.e2e

#: Letters, digits and ``-`` only: identical URL-encoded, so one search covers both.
PASSWORD = "Pw-demo-3b9e51d7c2-do-not-leak"
ROLE = "convoy_demo_owner"

_WRAPPER = textwrap.dedent(
    """\
    import sys
    from urllib.parse import urlsplit, urlunsplit

    import psycopg
    from psycopg import sql

    import convoy.demo as demo

    ROLE, PASSWORD = sys.argv[1], sys.argv[2]
    original = demo._create_orders


    def create_orders_with_password(server_uri, rows):
        uri = original(server_uri, rows)
        with psycopg.connect(server_uri, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(PASSWORD)
                )
            )
            conn.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(demo.ORDERS_DB), sql.Identifier(ROLE)
                )
            )
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER TABLE public.orders OWNER TO {}").format(sql.Identifier(ROLE))
            )
        parts = urlsplit(uri)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{ROLE}:{PASSWORD}@{host}"))


    demo._create_orders = create_orders_with_password
    sys.exit(demo.main())
    """
)


def _files(root: Path, exclude: Path | None = None) -> list[Path]:
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and not (exclude is not None and exclude in p.parents)
    ]


def test_demo_run_never_writes_the_orders_password(repo_root: Path, tmp_path: Path) -> None:
    import convoy.demo

    assert hasattr(convoy.demo, "_create_orders"), "the wrapper needs demo._create_orders"
    assert quote(PASSWORD, safe="") == PASSWORD
    airflow_home = tmp_path / "airflow"
    demo_dir = tmp_path / "demo"
    env = dict(os.environ)
    env["AIRFLOW_HOME"] = str(airflow_home)
    env["CONVOY_DEMO_DIR"] = str(demo_dir)
    env["CONVOY_DEMO_ORDERS_ROWS"] = "20000"
    for name in ("KUBECONFIG", "CONVOY_REPORTS_DIR", "CONVOY_RUNS_DIR", "MONGO_URI"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-c", _WRAPPER, ROLE, PASSWORD],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    # The run went through the password-bearing connection: the datastore did its work.
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (
        "| orders | 1, 2 | 2, 1 | 20000 | success | yes |" in (demo_dir / "report.md").read_text()
    )

    files = _files(airflow_home) + _files(demo_dir, exclude=demo_dir / "postgres")
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
