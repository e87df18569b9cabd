"""Secrets never reach what convoy prints, logs, stores or serves.

- The one redaction rule (:mod:`convoy.redaction`): userinfo of any URI,
  secret-named query and connection-string parameters, webhook paths and
  well-known token shapes, in text, JSON-like data and log records.
- Secrets planted in every policy field, connection URI and alert target (a
  valid policy and an invalid one) appear in no output of ``convoy validate``,
  ``plan``, ``plan --json``, ``render rbac``, in neither the DAG nor the
  placeholder DAG (description, docs, task arguments, log records, warnings),
  the Upgrades page, a run report (Markdown, HTML, JSON), an alert or a
  lineage facet; and ``connId`` refuses a URI.
- A datastore password never reaches logs, results or errors of the
  PostgreSQL engine: a role with a password owns a fresh database on the
  embedded PostgreSQL; the engine runs backup (snapshot and pg_dump), migrate,
  transform and revert with a conninfo carrying that password, and then fails
  to connect to a missing database. Every ``ctx.log`` line, every log record
  (all loggers, DEBUG), the captured stdout/stderr, every result's ``repr``
  and the error text are searched for the password.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

from convoy.cli import main as cli_main
from convoy.engines.base import RunContext
from convoy.engines.postgres import PostgresConfig, PostgresEngine
from convoy.plan.specs import datastore_spec
from convoy.policy import PolicyError, load_policy
from convoy.policy.models import PostgresDatastore
from convoy.redaction import RedactingFilter, get_logger, redact, redact_data

PASSWORD = "Pw-7c1f0e9a-do-not-leak"
ROLE = "convoy_secret_test"
DB = "convoy_secret_test"


@pytest.fixture
def conninfo(postgres_server: Any) -> Any:
    admin = postgres_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal(PASSWORD)
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DB), sql.Identifier(ROLE))
        )
    info = make_conninfo(postgres_server.get_uri(DB), user=ROLE, password=PASSWORD)
    assert PASSWORD in info
    with psycopg.connect(info, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, status text, shipped boolean NOT NULL)"
        )
        conn.execute("INSERT INTO orders SELECT g, NULL, g % 2 = 0 FROM generate_series(1, 500) g")
    yield info
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))


def _ctx(tmp_path: Path, backup: str, lines: list[str]) -> RunContext:
    migrations = tmp_path / "migrations"
    migrations.mkdir(exist_ok=True)
    (migrations / "V1__status_default.sql").write_text("ALTER TABLE orders ADD COLUMN note text;\n")
    (migrations / "U1__status_default.sql").write_text("ALTER TABLE orders DROP COLUMN note;\n")
    ds = PostgresDatastore.model_validate(
        {
            "name": "orders",
            "type": "postgres",
            "connId": "orders_db",
            "migrations": "migrations",
            "backup": backup,
            "transforms": [
                {
                    "name": "backfill",
                    "table": "orders",
                    "key": "id",
                    "batchSize": 100,
                    "where": "status IS NULL",
                    "set": {"status": "CASE WHEN shipped THEN 'shipped' ELSE 'open' END"},
                }
            ],
        }
    )
    return RunContext(
        policy_name="shop",
        run_id=f"run-{backup}",
        datastore=datastore_spec(ds),
        base_dir=tmp_path,
        data_interval_start=None,
        data_interval_end=None,
        log=lines.append,
    )


def _text(result: Any) -> str:
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return repr(result) + repr(dataclasses.asdict(result))
    return repr(result)


@pytest.mark.integration
@pytest.mark.parametrize("backup", ["snapshot", "pg_dump"])
def test_password_never_in_logs_results_or_errors(
    conninfo: str,
    tmp_path: Path,
    backup: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    lines: list[str] = []
    ctx = _ctx(tmp_path, backup, lines)
    engine = PostgresEngine(
        conninfo,
        PostgresConfig(
            advisory_lock_timeout_s=5, progress_interval_s=0, dump_dir=str(tmp_path / "dumps")
        ),
    )
    results: list[Any] = [repr(engine)]
    results.append(engine.plan(ctx))
    results.append(engine.backup(ctx, dry_run=True))
    results.append(engine.backup(ctx))
    results.append(engine.migrate(ctx, dry_run=True))
    results.append(engine.migrate(ctx))
    results.append(engine.transform(ctx, "backfill", dry_run=True))
    transformed = engine.transform(ctx, "backfill")
    assert transformed.rows_done == 500
    results.append(transformed)
    results.append(engine.history(ctx))
    results.append(engine.revert(ctx, dry_run=True))
    results.append(engine.revert(ctx))
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT count(*) FROM orders WHERE status IS NULL").fetchone() == (500,)

    # a failing connection: the error text must not carry the password either
    broken = PostgresEngine(conninfo.replace(f"dbname={DB}", "dbname=no_such_db"), PostgresConfig())
    with pytest.raises(Exception) as failure:  # noqa: PT011 - any error type, its text matters
        broken.migrate(ctx)
    errors = [str(failure.value), repr(failure.value)]

    assert any("on " in line for line in lines)  # the engine did log its (redacted) DSN
    captured = capfd.readouterr()
    everything = "\n".join(
        [*lines, caplog.text, captured.out, captured.err, *map(_text, results), *errors]
    )
    assert PASSWORD not in everything
    assert "password=***" in "\n".join(lines)


# --------------------------------------------------------------------------- the rule

REDACTIONS = [
    ("smtp://user:pw-1@host:587", "smtp://user:***@host:587"),
    ("postgresql://admin:p%40ss@db:5432/x", "postgresql://admin:***@db:5432/x"),
    ("postgresql://u:p@ss@db/x?host=/tmp", "postgresql://u:***@db/x?host=/tmp"),
    ("https://ghp_token0123456789@github.com/o/r", "https://***@github.com/o/r"),
    (
        "mongodb+srv://u:pw@c0.example.net/db?authSource=admin",
        "mongodb+srv://u:***@c0.example.net/db?authSource=admin",
    ),
    ("see 'redis://:pw@cache:6379/0'.", "see 'redis://:***@cache:6379/0'."),
    ("https://h/x?a=1&token=t0k&sig=s%3D&b=2", "https://h/x?a=1&token=***&sig=***&b=2"),
    (
        "https://h/x?access_token=t&X-Amz-Signature=abc&X-Amz-Credential=AK",
        "https://h/x?access_token=***&X-Amz-Signature=***&X-Amz-Credential=***",
    ),
    (
        "https://h/x?api-key=k&apikey=k&key=k&client_secret=c",
        "https://h/x?api-key=***&apikey=***&key=***&client_secret=***",
    ),
    ("host=db user=u password=pw dbname=x", "host=db user=u password=*** dbname=x"),
    ("host=db password='a b' dbname=x", "host=db password=*** dbname=x"),
    (
        "AccountName=a;AccountKey=k==;EndpointSuffix=s",
        "AccountName=a;AccountKey=***;EndpointSuffix=s",
    ),
    ('{"password": "pw", "user": "u"}', '{"password": "***", "user": "u"}'),
    ("https://hooks.slack.com/services/T0/B0/XYZ", "https://hooks.slack.com/services/***"),
    ("https://discord.com/api/webhooks/1/tok", "https://discord.com/api/webhooks/***"),
    (
        "https://x.webhook.office.com/webhookb2/abc@def/IncomingWebhook/1/2",
        "https://x.webhook.office.com/***",
    ),
    ("https://ci.example.com/hooks/abc123?x=1", "https://ci.example.com/hooks/***?x=1"),
    ("token xoxb-123456789012-abcdefghijkl", "token xoxb-***"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", "Authorization: Bearer ***"),
    ("AKIAABCDEFGHIJKLMNOP", "AKIA***"),
]
UNCHANGED = [
    "registry.example.com/cart:2.4.0@sha256:" + "a" * 64,
    "http://localhost:8080/dags/shop/runs/manual__2026?tab=graph",
    "https://hooks.example.com/convoy",
    "ops@example.com",
    "status IS NULL AND created_at < %(data_interval_end)s",
    "batchSize=5000 authSource=admin sort_key=id",
    "postgresql://postgres:@/postgres?host=/tmp/x".replace(":@", "@"),
]


@pytest.mark.parametrize(("text", "expected"), REDACTIONS, ids=[t for t, _ in REDACTIONS])
def test_redaction_rule(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # idempotent


@pytest.mark.parametrize("text", UNCHANGED)
def test_redaction_leaves_ordinary_text_alone(text: str) -> None:
    if "postgres@" in text:
        assert redact(text) == "postgresql://***@/postgres?host=/tmp/x"
    else:
        assert redact(text) == text


def test_redact_data_masks_secret_keys_and_values() -> None:
    data = {
        "password": "pw-1",
        "api_key": "k",
        "uri": "postgresql://u:pw-2@h/x",
        "items": ["https://h/x?token=pw-3", ("sig=pw-4",)],
        "count": 3,
    }
    clean = redact_data(data)
    assert "pw-" not in repr(clean)
    assert clean["count"] == 3
    assert clean["uri"] == "postgresql://u:***@h/x"
    assert data["password"] == "pw-1"  # a copy


def test_convoy_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log = get_logger("convoy.test_secrets")
    log.info("connecting to %s", "postgresql://u:pw-log-1@h/x")
    log.warning("webhook https://hooks.slack.com/services/T/B/pw-log-2 failed")
    try:
        raise ValueError("bad dsn host=h password=pw-log-3")
    except ValueError:
        log.exception("step failed")
    assert get_logger("convoy.test_secrets").filters.count(RedactingFilter) == 0
    assert len(get_logger("convoy.test_secrets").filters) == 1  # added once
    text = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert "pw-log" not in text
    assert "postgresql://u:***@h/x" in text
    assert "password=***" in text


# --------------------------------------------------------------------------- planted secrets

SECRETS = [f"LEAK{n:02d}x" for n in range(40)]


def _planted_valid() -> dict[str, Any]:
    """A valid policy with secrets in every field that accepts free text."""
    s = iter(SECRETS)
    return {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {
            "name": "planted",
            "description": f"Orders DB postgresql://admin:{next(s)}@db.example.com/orders, "
            f"dashboard https://grafana.example.com/d/x?auth_token={next(s)}",
            "owner": f"ops https://{next(s)}@git.example.com",
            "tags": ["shop", f"https://u:{next(s)}@tags.example.com"],
        },
        "kubernetes": {
            "namespace": "shop",
            "connId": "kubernetes_default",
            "runnerImage": "registry.example.com/convoy:0.1.0",
        },
        "services": [
            {
                "name": "cart",
                "workload": {"kind": "Deployment", "name": "cartservice"},
                "containers": {"server": "registry.example.com/cart:2.4.0"},
            }
        ],
        "datastores": [
            {
                "name": "orders",
                "type": "postgres",
                "connId": "orders_db",
                "backup": "snapshot",
                "transforms": [
                    {
                        "name": "backfill",
                        "table": "public.orders",
                        "key": "id",
                        "where": f"note <> 'postgresql://u:{next(s)}@h/x'",
                        "set": {"status": f"'https://h/x?token={next(s)}'"},
                    }
                ],
            },
            {
                "name": "catalog",
                "type": "mongo",
                "connId": "catalog_mongo",
                "database": "catalog",
                "backup": "snapshot",
                "transforms": [
                    {
                        "name": "split",
                        "collection": "users",
                        "filter": {"source": f"mongodb://u:{next(s)}@h/x"},
                        "update": {
                            "$set": {"hook": f"https://hooks.slack.com/services/T/B/{next(s)}"}
                        },
                    }
                ],
            },
        ],
        "alerts": {
            "onFailure": [
                f"https://hooks.slack.com/services/T0000/B0000/{next(s)}",
                f"https://alerts.example.com/convoy?token={next(s)}",
                "smtp_default",
            ],
            "onRollback": [f"https://chat.example.com/hooks/{next(s)}"],
        },
        "approval": {
            "required": True,
            "approvers": ["alice", f"https://bob:{next(s)}@sso.example.com"],
        },
    }


def _planted_invalid() -> dict[str, Any]:
    """An invalid policy with secrets in connection ids, alert targets and echoed fields."""
    s = iter(SECRETS[20:])
    data = _planted_valid()
    data["metadata"] = {**data["metadata"], "name": "planted-bad"}
    data["kubernetes"] = {
        **data["kubernetes"],
        "connId": f"https://admin:{next(s)}@k8s.example.com:6443",
        "serviceAccount": f"sa?password={next(s)}",
    }
    data["rollout"] = {"maxParallel": f"postgresql://someone:{next(s)}-long-enough-to-be-cut@db/x"}
    pg, mongo = data["datastores"]
    data["datastores"] = [
        {**pg, "connId": f"postgresql://admin:{next(s)}@db.example.com:5432/orders"},
        {**mongo, "connId": f"mongodb+srv://reader:{next(s)}@cluster0.example.net/catalog"},
        {
            **pg,
            "name": "dsn",
            "connId": f"host=db user=u password={next(s)} dbname=x",
            "migrations": f"postgresql://u:{next(s)}@db/x",
        },
    ]
    data["alerts"] = {
        "onFailure": [
            f"smtp://user:{next(s)}@mail.example.com:587",
            f"slack://bot:{next(s)}@slack_ops#alerts",
            f"https://ops:{next(s)}@hooks.example.com/convoy",
            f"smtp://mail_default?to=ops@example.com&password={next(s)}",
            f"ftp://hooks.slack.com/services/T0000/B0000/{next(s)}",
        ]
    }
    return data


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    root = tmp_path / "policies"
    root.mkdir()
    (root / "planted.yaml").write_text(yaml.safe_dump(_planted_valid(), sort_keys=False))
    (root / "planted-bad.yaml").write_text(yaml.safe_dump(_planted_invalid(), sort_keys=False))
    return root


def _leaks(*texts: str) -> list[str]:
    joined = "\n".join(texts)
    return [s for s in SECRETS if s in joined]


def _cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(list(argv), out=out, err=err)
    return code, out.getvalue() + err.getvalue()


def test_planted_policies_are_what_the_test_says(planted: Path) -> None:
    text = "".join(p.read_text() for p in planted.iterdir())
    assert all(s in text for s in SECRETS[:12] + SECRETS[20:32])
    load_policy(planted / "planted.yaml")
    with pytest.raises(PolicyError) as info:
        load_policy(planted / "planted-bad.yaml")
    errors = [str(d) for d in info.value.diagnostics]
    for field in (
        "kubernetes.connId",
        "datastores[0].connId",
        "datastores[1].connId",
        "datastores[2].connId",
        "alerts.onFailure[0]",
        "alerts.onFailure[1]",
        "alerts.onFailure[2]",
        "alerts.onFailure[3]",
        "alerts.onFailure[4]",
        "rollout.maxParallel",
        "kubernetes.serviceAccount",
        "datastores[2].migrations",
    ):
        assert any(f": {field}: " in e for e in errors), (field, errors)


def test_planted_secrets_never_reach_cli_output(planted: Path) -> None:
    valid, invalid = str(planted / "planted.yaml"), str(planted / "planted-bad.yaml")
    outputs = []
    for argv, code in [
        (("validate", str(planted)), 1),
        (("validate", valid), 0),
        (("validate", invalid), 1),
        (("plan", valid), 0),
        (("plan", "--json", valid), 0),
        (("plan", invalid), 1),
        (("plan", "--json", invalid), 1),
        (("render", "rbac", valid), 0),
        (("render", "rbac", invalid), 1),
    ]:
        got, text = _cli(*argv)
        assert got == code, (argv, text)
        outputs.append(text)
    assert _leaks(*outputs) == []
    plan = json.loads(_cli("plan", "--json", valid)[1])
    assert plan["approval"]["approvers"] == ["alice", "https://bob:***@sso.example.com"]
    assert (
        "approval: required from alice, https://bob:***@sso.example.com" in _cli("plan", valid)[1]
    )


def test_planted_secrets_never_reach_the_dags_logs_or_warnings(
    planted: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from convoy.airflow.registry import INVALID_TAG, register_policies

    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dags = register_policies(planted)
    assert set(dags) == {"planted", "planted-bad"}
    assert INVALID_TAG in dags["planted-bad"].tags
    texts = [caplog.text, *(str(w.message) for w in caught)]
    for dag in dags.values():
        texts += [str(dag.description), str(dag.doc_md), repr(sorted(dag.tags))]
        texts += [repr(dag.default_args), repr(dag.params.dump())]
        for task in dag.tasks:
            texts += [str(getattr(task, "doc_md", "")), repr(getattr(task, "op_kwargs", {}))]
            texts += [repr(getattr(task, "arguments", "")), str(task.owner)]
    assert "https://u:***@tags.example.com" in dags["planted"].tags
    assert "postgresql://admin:***@db.example.com/orders" in str(dags["planted"].description)
    assert "connId must be an Airflow connection id" in str(dags["planted-bad"].doc_md)
    assert _leaks(*texts) == []


def test_planted_secrets_never_reach_the_upgrades_page(planted: Path) -> None:
    from convoy.ui import gather_policies, render_page

    policies = gather_policies(planted)
    assert {p.valid for p in policies} == {True, False}
    page = render_page(policies, {}, now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    data = json.dumps(redact_data([p.to_dict() for p in policies]), default=str)
    assert _leaks(page, data) == []
    assert "Airflow connection id" in page


def test_secrets_in_run_facts_never_reach_reports_alerts_or_lineage(tmp_path: Path) -> None:
    from convoy.observe.report import build_report, render_html, render_markdown, write_report

    secret = "postgresql://u:LEAK00x@db/x"
    report = build_report(
        policy_name="planted",
        digest="abc",
        run_id="manual__2026-01-01",
        triggered_by=f"https://{SECRETS[2]}@sso.example.com",
        dry_run=False,
        started=None,
        finished=None,
        final_state="failed",
        services=[{"name": "cart", "new_images": {"server": f"r/x:1?token={SECRETS[3]}"}}],
        datastores=[
            {
                "name": "orders",
                "conflicts": (f"row 1: {secret}",),
                "refused": (f"restore refused: password={SECRETS[4]}",),
            }
        ],
        rollback=[f"revert via https://hooks.slack.com/services/T/B/{SECRETS[5]}"],
    )
    md, html_text = render_markdown(report), render_html(report)
    files = write_report(report, tmp_path)
    stored = [p.read_text() for p in tmp_path.rglob("report.*")]
    assert len(stored) == 3
    assert _leaks(md, html_text, *stored, *(p.read_text() for p in files)) == []

    from convoy.airflow.notifiers import AlertFacts, render_message

    facts = AlertFacts(
        policy="planted",
        run_id="r1",
        event="failure",
        state="failed",
        failed_steps=(f"migrate: host=db password={SECRETS[6]}",),
        rolled_back=(),
        rollback_failed=(),
        left_for_human=(f"restore {secret} by hand",),
        run_url=None,
        report=None,
    )
    assert _leaks(*render_message(facts)) == []


def test_lineage_facets_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    from convoy.airflow import lineage

    facet = lineage.ConvoyRunFacet(
        policy="planted",
        digest="abc",
        step="orders_migrate",
        services={"cart": {"target": {"server": f"r/x:1?sig={SECRETS[7]}"}}},
        datastores={"orders": {"error": f"postgresql://u:{SECRETS[8]}@db/x"}},
    )
    monkeypatch.setattr(lineage, "build_facet", lambda ti, state: facet)
    facets = lineage.convoy_run_facets(object(), None)
    assert _leaks(repr(facets)) == []
    assert "postgresql://u:***@db/x" in repr(facets)


def test_report_task_reads_alert_targets_with_a_token_from_the_run_record(planted: Path) -> None:
    from convoy.airflow.report_task import alert_entries
    from convoy.plan import build_plan
    from convoy.plan.record import freeze

    loaded = load_policy(planted / "planted.yaml")
    plan = build_plan(loaded)
    frozen = freeze(loaded, plan, dag_plan_digest=plan.digest, mode="upgrade", dry_run=False)
    valid = _planted_valid()["alerts"]["onFailure"]
    given = [redact(e) for e in valid]
    assert given[0] == "https://hooks.slack.com/services/***"
    assert given[2] == "smtp_default"
    assert alert_entries(given, "on_failure", frozen.alerts) == valid
    # no record, or one kept without a Fernet key (tokens masked): the entries
    # without a secret still get the alert
    assert alert_entries(given, "on_failure", None) == ["smtp_default"]
    assert alert_entries(given, "on_failure", {"on_failure": tuple(given)}) == ["smtp_default"]
    assert alert_entries(["smtp_default"], "on_failure", None) == ["smtp_default"]
