"""Planted secrets reach no artefact of a real run of a demo-style policy.

A policies directory holds a valid policy (two services, cart crash-looping so
the rollback runs; a PostgreSQL datastore with a migration and its undo, a
transform and a validation; webhook alerts) and an invalid one (registered as
a placeholder DAG). Distinct secrets are planted in:

- the password of the datastore's connection (``AIRFLOW_CONN_ORDERS_DB``: an
  environment variable, so the metadata DB never holds a connection);
- the description, owner and tags (URI userinfo, a query-string token);
- a ``where`` and a ``set`` expression (string literals with a URI password
  and a query-string token);
- the ``onFailure`` / ``onRollback`` webhooks (a token in the path and in the
  query string; both point at a local receiver);
- the invalid policy: an ``smtp://user:SECRET@host`` alert target and a
  connection URI with a password as ``connId``.

The DAG then runs with ``airflow dags test`` in its own ``AIRFLOW_HOME``: a
fresh SQLite metadata DB, both policies serialized as a DAG processor would,
OpenLineage on with the file transport, run reports under the home, against
the embedded PostgreSQL and the emulated cluster. ``airflow dags test`` runs
the tasks in its own process, so the task logs are its output, kept in the
home's log folder. Afterwards every secret is searched for in every file under
that home (task logs, run reports in Markdown, HTML and JSON, data docs,
lineage events, the metadata DB row by row: serialized DAGs, XComs, rendered
fields...), in the output of every command (``convoy validate``, ``plan``,
``plan --json``, ``render rbac``, ``report``, ``report --html``, ``airflow db
migrate``, ``airflow dags reserialize``), in the alerts the receiver got and in
the Upgrades page served from that home's DB (HTML, JSON and the run's report).
A hit fails the test with the file (and table, column, row), the line and the
field the secret was planted in.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from contextlib import closing
from pathlib import Path
from subprocess import STDOUT
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import yaml
from e2e_helpers import AIRFLOW, REPO
from psycopg import sql
from webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

POLICY = "secrets-probe"
BAD_POLICY = "secrets-probe-bad"
PREVIOUS = "2.3.0"
CONVOY = str(Path(AIRFLOW).with_name("convoy"))

#: Where each secret was planted -> the secret. Letters, digits and ``-`` only: a
#: secret reads the same URL-encoded, JSON-escaped or HTML-escaped.
SECRETS = {
    "orders_db connection password": "Pw-conn-4e7d1c9b-do-not-leak",
    "metadata.description userinfo": "Pw-desc-8a2f6e01-do-not-leak",
    "metadata.description query token": "Tk-descq-5c93b7d2-do-not-leak",
    "metadata.owner token userinfo": "Tk-owner-1f0e4a6c-do-not-leak",
    "metadata.tags userinfo": "Pw-tag-93d5e2b8-do-not-leak",
    "transform where literal": "Pw-where-6b1a8f3e-do-not-leak",
    "transform set literal token": "Tk-set-0d4c7e95-do-not-leak",
    "alerts.onFailure webhook path": "Tk-failpath-2e8b5d17-do-not-leak",
    "alerts.onFailure webhook query": "Tk-failq-7a3c0f64-do-not-leak",
    "alerts.onRollback webhook path": "Tk-rbpath-c5e19a2d-do-not-leak",
    "alerts.onRollback webhook query": "Tk-rbq-48f2d6b0-do-not-leak",
    "invalid policy smtp userinfo": "Pw-smtp-e07b3c85-do-not-leak",
    "invalid policy connId URI": "Pw-connid-9c6a1e42-do-not-leak",
}
S = SECRETS

MIGRATIONS = {
    "V1__status.sql": "ALTER TABLE public.orders ADD COLUMN status text;\n",
    "U1__status.sql": "ALTER TABLE public.orders DROP COLUMN status;\n",
}


def _policy(alert_url: str) -> dict[str, Any]:
    failure = alert_url.rstrip("/") + f"/hooks/{S['alerts.onFailure webhook path']}"
    rollback = alert_url.rstrip("/") + f"/hooks/{S['alerts.onRollback webhook path']}"
    return {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {
            "name": POLICY,
            "description": "Shop 2.4.0; orders at postgresql://orders_admin:"
            f"{S['metadata.description userinfo']}@db.example.com/orders, dashboard "
            f"https://grafana.example.com/d/x?auth_token={S['metadata.description query token']}",
            "owner": f"platform https://{S['metadata.owner token userinfo']}@git.example.com",
            "tags": ["shop", f"https://ci:{S['metadata.tags userinfo']}@tags.example.com"],
        },
        "schedule": None,
        "startDate": "2026-01-01",
        "execution": "local",
        "kubernetes": {
            "namespace": "shop",
            "connId": "kubernetes_default",
            "runnerImage": "registry.example.com/convoy:0.1.0",
        },
        "rollout": {"maxParallel": 2, "progressDeadlineSeconds": 10},
        "services": [
            {"name": "redis", "workload": {"kind": "StatefulSet", "name": "redis-cart"},
             "containers": {"redis": "registry.example.com/redis:2.4.0"}},
            {"name": "cart", "workload": {"kind": "Deployment", "name": "cartservice"},
             "containers": {"server": "registry.example.com/cart:2.4.0-crashloop"},
             "dependsOn": ["redis"]},
        ],
        "datastores": [
            {"name": "orders", "type": "postgres", "connId": "orders_db", "after": ["redis"],
             "backup": "snapshot", "migrations": "migrations/orders",
             "transforms": [
                 {"name": "fill-status", "table": "public.orders", "key": "id", "batchSize": 100,
                  "where": "status IS NULL AND 'postgresql://probe:"
                           f"{S['transform where literal']}@db.example.com/x' <> ''",
                  "set": {"status": "CASE WHEN 'https://h.example.com/x?token="
                                    f"{S['transform set literal token']}' <> '' "
                                    "THEN 'open' ELSE 'shipped' END"}},
             ],
             "validation": [
                 {"table": "public.orders", "expectations": [
                     {"expect_column_values_to_not_be_null": {"column": "status"}},
                     {"expect_column_values_to_be_in_set":
                      {"column": "status", "value_set": ["open", "shipped"]}},
                 ]},
             ]},
        ],
        "alerts": {
            "onFailure": [f"{failure}?token={S['alerts.onFailure webhook query']}"],
            "onRollback": [f"{rollback}?sig={S['alerts.onRollback webhook query']}"],
        },
    }  # fmt: skip


def _bad_policy() -> dict[str, Any]:
    data = _policy("https://hooks.example.com")
    data["metadata"] = {**data["metadata"], "name": BAD_POLICY}
    data["datastores"] = [
        {
            **data["datastores"][0],
            "connId": f"postgresql://admin:{S['invalid policy connId URI']}@db.example.com/orders",
        }
    ]
    data["alerts"] = {
        "onFailure": [f"smtp://alerts:{S['invalid policy smtp userinfo']}@mail.example.com:587"]
    }
    return data


def _with_password(uri: str) -> str:
    """The database's URI, logging in as a new role with the planted password."""
    role = f"probe_{uuid.uuid4().hex[:8]}"
    password = S["orders_db connection password"]
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))


# --------------------------------------------------------------------------- search


def _hits_in(where: str, data: bytes) -> list[str]:
    """``where:line: [where the secret was planted] ...context...`` for every hit in ``data``."""
    found = []
    for label, secret in SECRETS.items():
        needle = secret.encode()
        start = data.find(needle)
        while start >= 0:
            line = data.count(b"\n", 0, start) + 1
            context = data[max(0, start - 100) : start + len(needle) + 60]
            text = context.decode("utf-8", "replace").replace("\n", "\\n")
            found.append(f"{where}:{line}: [{label}] ...{text}...")
            start = data.find(needle, start + 1)
    return found


def _db_hits(path: Path) -> list[str]:
    """Which table, column and row of a SQLite file hold a secret (raw bytes elsewhere)."""
    found: list[str] = []
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]
            selected = ", ".join(f'"{c}"' for c in columns)
            for rowid, *values in db.execute(f'SELECT rowid, {selected} FROM "{table}"'):
                for column, value in zip(columns, values, strict=True):
                    if value is None:
                        continue
                    data = value if isinstance(value, bytes) else str(value).encode()
                    found += _hits_in(f"{path} table {table} column {column} rowid {rowid}", data)
    return found


def _file_hits(root: Path) -> list[str]:
    found: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if data.startswith(b"SQLite format 3\x00"):
            rows = _db_hits(path)
            # deleted rows may linger in free pages: a raw hit no row explains is one too
            found += rows or _hits_in(str(path), data)
        else:
            found += _hits_in(str(path), data)
    return found


# --------------------------------------------------------------------------- commands


def _run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    proc = subprocess.run(
        argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    return proc.returncode, proc.stdout + proc.stderr


#: The Upgrades page as the api-server serves it (the plugin's app, a real JWT),
#: with runs read from the metadata DB of this process's AIRFLOW_HOME: the page,
#: its JSON and every run report it links to. Prints ``{path: [status, body]}``.
_PAGE = textwrap.dedent(
    """\
    import importlib.util
    import json
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("convoy_upgrades_probe", sys.argv[1])
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)

    from airflow.api_fastapi.app import init_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    app = plugin.create_app(policies_dir=Path(sys.argv[2]), authorize_dag=lambda u, d: True)
    user = SimpleAuthManagerUser(username="probe", role="viewer")
    client = TestClient(app)
    client.headers["Authorization"] = "Bearer " + init_auth_manager().generate_jwt(user)
    got = {}
    for path in ("/", "/api/upgrades"):
        response = client.get(path)
        got[path] = [response.status_code, response.text]
    for policy in json.loads(got["/api/upgrades"][1])["policies"]:
        for run in policy["runs"]:
            if run.get("report_url"):
                response = client.get(run["report_url"])
                got[run["report_url"]] = [response.status_code, response.text]
    print(json.dumps(got))
    """
)


def test_planted_secrets_reach_no_artefact_of_a_real_run(
    emulated_cluster: Any,
    pg_database: Any,
    webhook_receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    uri = _with_password(pg_database("orders_db"))
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.orders (id bigint PRIMARY KEY, amount int)")
        conn.execute("INSERT INTO public.orders SELECT g, g FROM generate_series(1, 300) g")

    root = tmp_path / "policies"
    (root / "migrations" / "orders").mkdir(parents=True)
    for name, text in MIGRATIONS.items():
        (root / "migrations" / "orders" / name).write_text(text)
    path = root / f"{POLICY}.yaml"
    bad = root / f"{BAD_POLICY}.yaml"
    path.write_text(yaml.safe_dump(_policy(webhook_receiver.url("/")), sort_keys=False))
    bad.write_text(yaml.safe_dump(_bad_policy(), sort_keys=False))
    planted = path.read_text() + bad.read_text()
    assert [label for label, s in SECRETS.items() if s not in planted] == [
        "orders_db connection password"
    ]

    from convoy.policy import load_policy

    seeded = emulated_cluster.seed_from_policy(load_policy(path).policy, previous_tag=PREVIOUS)
    kubeconfig = emulated_cluster.write_kubeconfig(tmp_path / "kubeconfig")

    home = tmp_path / "airflow"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AIRFLOW_CONN_") and k not in ("CONVOY_REPORTS_DIR", "KUBECONFIG")
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW_CONN_ORDERS_DB": uri,
            "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(
                {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
            ),
            "CONVOY_EXECUTION_MODE": "local",
            "CONVOY_POLICIES_DIR": str(root),
            "CONVOY_RUNS_DIR": str(home / "convoy-runs"),
            "CONVOY_MAX_PARTITIONS": "2",
            "AIRFLOW__OPENLINEAGE__DISABLED": "false",
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "convoy-test",
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(home / "openlineage.jsonl"), "append": True}
            ),
            "AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS": "convoy.airflow.lineage.convoy_run_facets",
            "AIRFLOW__OPENLINEAGE__EXTRACTORS": "convoy.airflow.lineage.ConvoyExtractor",
            "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "true",
        }
    )

    outputs: dict[str, str] = {}

    def run(label: str, argv: list[str], expect: int = 0) -> str:
        code, text = _run(argv, env)
        outputs[label] = text
        assert code == expect, f"{label}: exit {code}\n{text[-4000:]}"
        return text

    # The metadata DB of the new home is migrated while a user's commands run.
    with (tmp_path / "db-migrate.out").open("w") as migrate_out:
        migrate = subprocess.Popen(
            [AIRFLOW, "db", "migrate"], env=env, cwd=REPO, stdout=migrate_out, stderr=STDOUT
        )
        for argv, code in [
            (["validate", str(root)], 1),
            (["validate", str(path)], 0),
            (["validate", str(bad)], 1),
            (["plan", str(path)], 0),
            (["plan", "--json", str(path)], 0),
            (["plan", str(bad)], 1),
            (["plan", "--json", str(bad)], 1),
            (["render", "rbac", str(path)], 0),
            (["render", "rbac", str(bad)], 1),
        ]:
            run(f"convoy {' '.join(argv)}", [CONVOY, *argv], code)
        assert migrate.wait(timeout=120) == 0
    outputs["airflow db migrate"] = (tmp_path / "db-migrate.out").read_text()
    plan, _ = json.JSONDecoder().raw_decode(outputs[f"convoy plan --json {path}"])

    # As a DAG processor would: every DAG of the folder, the placeholder DAG too, in the DB.
    run("airflow dags reserialize", [AIRFLOW, "dags", "reserialize"])
    # `airflow dags test` runs the tasks in its own process: their logs are its output,
    # kept under the home's log folder.
    (home / "logs").mkdir(exist_ok=True)
    task_logs = home / "logs" / "airflow-dags-test.log"
    with task_logs.open("w") as out:
        proc = subprocess.run(
            [AIRFLOW, "dags", "test", POLICY],
            env=env, cwd=REPO, stdout=out, stderr=STDOUT, timeout=300, check=False,
        )  # fmt: skip
    log_text = task_logs.read_text()
    assert proc.returncode == 1, log_text[-4000:]  # the run failed (cart), after its rollback
    assert "[DAG TEST] end task task_id=datastore_orders.migrate" in log_text

    # The run did what the test is about: data changed and reverted, lineage, report, alert.
    (summary_file,) = (home / "convoy-runs" / POLICY).glob("*/report.json")
    summary = json.loads(summary_file.read_text())
    steps, reverts = summary["steps"], summary["reverts"]
    assert steps["wave_1.rollout_cart"]["state"] == "failed", log_text[-4000:]
    assert steps["datastore_orders.migrate"]["state"] == "success"
    assert steps["datastore_orders.validate"]["state"] == "success"
    assert reverts["rollback.revert_data_orders"]["state"] == "success"
    assert reverts["rollback.revert_redis"]["state"] == "success"
    assert Path(summary["reportHtml"]).is_relative_to(home)
    assert emulated_cluster.images("Deployment", "shop", "cartservice") == seeded["cart"]
    lineage = (home / "openlineage.jsonl").read_text()
    assert plan["digest"] in lineage
    assert "postgres://orders_db" in lineage
    # onRollback is sent by the report task, onFailure by the DAG's failure callback
    # (which `airflow dags test` runs with a SerializedDAG: apache/airflow#64649).
    # Both say the run failed and was rolled back.
    hooks = {p.split("?")[0].rsplit("/", 1)[-1]: b["event"] for p, b in
             zip(webhook_receiver.paths, webhook_receiver.bodies, strict=True)}  # fmt: skip
    assert hooks == {
        S["alerts.onFailure webhook path"]: "rollback",
        S["alerts.onRollback webhook path"]: "rollback",
    }, webhook_receiver.raw
    alerts = {b["event"]: b for b in webhook_receiver.bodies}
    run_id = alerts["rollback"]["run_id"]

    page = run(
        "the Upgrades page",
        [sys.executable, "-c", _PAGE, str(REPO / "plugins" / "convoy_upgrades.py"), str(root)],
    )
    served = json.loads(page.strip().splitlines()[-1])
    assert {p: s for p, (s, _) in served.items()} == dict.fromkeys(served, 200)
    assert len(served) == 3, list(served)  # the page, its JSON and the run's report
    views = {p["dag_id"]: p for p in json.loads(served["/api/upgrades"][1])["policies"]}
    assert [r["run_id"] for r in views[POLICY]["runs"]] == [run_id]
    assert views[BAD_POLICY]["valid"] is False
    for where, (_, body) in served.items():
        outputs[f"GET {where} (Upgrades page)"] = body

    # The planted fields did reach the artefacts, masked; no connection is in the DB.
    with closing(sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True)) as db:
        assert db.execute("SELECT count(*) FROM connection").fetchone() == (0,)
        dags = dict(db.execute("SELECT dag_id, data FROM serialized_dag").fetchall())
    description = "postgresql://orders_admin:***@db.example.com/orders"
    smtp = "smtp://alerts:***@mail.example.com:587"
    assert description in dags[POLICY]
    assert smtp in dags[BAD_POLICY]  # the placeholder DAG's docs list the errors
    assert smtp in outputs[f"convoy validate {root}"]
    assert description in served["/"][1]
    assert "password=***" in log_text  # the datastore tasks logged their DSN
    assert "alert delivered to webhook http://127.0.0.1:" in log_text  # origin only
    run("convoy report", [CONVOY, "report", "--policy", POLICY, run_id])
    run("convoy report --html", [CONVOY, "report", "--html", "--policy", POLICY, run_id])

    leaks = _file_hits(home)
    for label, text in outputs.items():
        leaks += _hits_in(f"<output of {label}>", text.encode())
    for i, body in enumerate(webhook_receiver.raw):
        leaks += _hits_in(f"<alert {i} received by the webhook>", body)
    assert leaks == [], "planted secrets found:\n" + "\n".join(leaks)
