"""One ``make demo`` run shared by the demo test and the demo secrets test.

The demo takes minutes, so it runs once per session (fixture ``demo_run`` in
``tests/conftest.py``). Its embedded PostgreSQL needs no password, so the run
plants one: the demo runs in a subprocess whose ``convoy.demo._create_orders``
is wrapped to hand the ``orders`` database and its table to a new role with a
password and to return the URI with that role and password, which the demo
then passes to ``airflow dags test`` as ``AIRFLOW_CONN_ORDERS_DB`` (and uses
for its own state digests). Everything else is the real demo, and a real
deployment's datastore has a password too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class DemoRun:
    result: subprocess.CompletedProcess[str]
    airflow_home: Path
    demo_dir: Path


def run_demo(repo_root: Path, base: Path) -> DemoRun:
    """``python -m convoy.demo`` with the planted password, in a fresh AIRFLOW_HOME."""
    airflow_home = base / "airflow"
    demo_dir = base / "demo"
    env = dict(os.environ)
    env["AIRFLOW_HOME"] = str(airflow_home)
    env["CONVOY_DEMO_DIR"] = str(demo_dir)
    for name in ("KUBECONFIG", "CONVOY_REPORTS_DIR", "CONVOY_RUNS_DIR"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-c", _WRAPPER, ROLE, PASSWORD],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return DemoRun(result, airflow_home, demo_dir)
