"""`convoy settings load`: Astro CLI settings -> Airflow's metadata DB, idempotent, masked."""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from convoy.cli import EXIT_INVALID, EXIT_OK, EXIT_USAGE, main
from convoy.settings import SettingsError, parse_settings

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "hunter2-Sup3r-s3cret"
TOKEN = "tok-9f8e7d6c5b4a"

WITH_SECRETS = f"""\
airflow:
  connections:
    - conn_id: convoy_test_db
      conn_type: postgres
      conn_host: db.example.com
      conn_schema: orders
      conn_login: convoy
      conn_password: {PASSWORD}
      conn_port: 5432
      conn_extra: {{"sslmode": "require", "api_token": "{TOKEN}"}}
  pools:
    - pool_name: convoy_test_pool
      pool_slot: 3
      pool_description: test
  variables:
    - variable_name: convoy_test_var
      variable_value: {{"a": 1}}
"""


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------- parsing (no DB)


def test_repository_settings_parse_and_resolve_kubeconfig_against_the_file(tmp_path: Path) -> None:
    settings = parse_settings((REPO / "airflow_settings.yaml").read_text(), tmp_path / "s.yaml")
    (conn,) = settings.connections
    assert conn.conn_id == "kubernetes_default"
    assert conn.extra["kube_config_path"] == str((tmp_path / ".demo" / "kubeconfig").resolve())
    assert [(p.name, p.slots) for p in settings.pools] == [("convoy_rollout", 8)]


def test_bad_entries_are_reported_with_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "airflow:\n"
        "  connections:\n"
        "    - conn_type: postgres\n"  # 3: no conn_id
        f"      conn_password: [{PASSWORD}]\n"  # 4: not a string
        "  pools:\n"
        "    - pool_name: p\n"
        "      pool_slot: many\n"  # 7
        "      colour: red\n"  # 8
        "  extra: {}\n"  # 9
    )
    code, out, err = run("settings", "load", str(path))
    assert code == EXIT_INVALID
    assert out == ""
    assert f"{path}:3:7: airflow.connections[0]: 'conn_id' is required" in err
    assert f"{path}:4:22: airflow.connections[0].conn_password: a value is not a string" in err
    assert f"{path}:7:18: airflow.pools[0].pool_slot: 'many' must be an integer >= -1" in err
    assert f"{path}:8:7: airflow.pools[0].colour: unknown key 'colour'" in err
    assert f"{path}:9:3: airflow.extra: unknown key 'extra'" in err
    assert PASSWORD not in err


def test_yaml_syntax_error_and_wrong_shape(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("airflow:\n  pools: [\n")
    code, _, err = run("settings", "load", str(path))
    assert code == EXIT_INVALID
    assert f"{path}:3:1: YAML syntax error" in err
    with pytest.raises(SettingsError, match="expected a mapping with an 'airflow' key"):
        parse_settings("- 1\n", "x.yaml")


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = run("settings", "load", str(tmp_path / "nope.yaml"))
    assert code == EXIT_USAGE
    assert "no such file" in err


# --------------------------------------------------------------------------- against Airflow's DB


@pytest.fixture
def clean_db(airflow_db: None) -> Iterator[None]:
    """Remove what the test loaded, so other tests see the DB as before."""
    yield
    from airflow.models.connection import Connection
    from airflow.models.pool import Pool
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        ids = ("kubernetes_default", "convoy_test_db")
        session.execute(delete(Connection).where(Connection.conn_id.in_(ids)))
        session.execute(delete(Pool).where(Pool.pool.in_(("convoy_rollout", "convoy_test_pool"))))
        session.execute(delete(Variable).where(Variable.key == "convoy_test_var"))


def _db_state() -> dict[str, object]:
    from airflow.models.connection import Connection
    from airflow.models.pool import Pool
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        conns = {
            c.conn_id: (c.conn_type, c.host, c.login, c.password, c.port, c.extra_dejson)
            for c in session.scalars(select(Connection))
        }
        pools = {p.pool: (p.slots, p.description) for p in session.scalars(select(Pool))}
        variables = {v.key: v.val for v in session.scalars(select(Variable))}
    return {"connections": conns, "pools": pools, "variables": variables}


def test_load_creates_pool_and_connection_and_rerun_changes_nothing(
    clean_db: None, tmp_path: Path
) -> None:
    settings = tmp_path / "airflow_settings.yaml"
    shutil.copy(REPO / "airflow_settings.yaml", settings)

    code, out, err = run("settings", "load", str(settings))
    assert (code, err) == (EXIT_OK, "")
    assert "pool convoy_rollout: created (slots=8)" in out
    assert "connection kubernetes_default: created" in out
    state = _db_state()
    assert state["pools"]["convoy_rollout"] == (  # type: ignore[index]
        8,
        "Caps concurrent convoy rollout pods across all policies",
    )
    kubeconfig = str((tmp_path / ".demo" / "kubeconfig").resolve())
    conn = state["connections"]["kubernetes_default"]  # type: ignore[index]
    assert conn[0] == "kubernetes"
    assert conn[5] == {"kube_config_path": kubeconfig}

    code, out, _ = run("settings", "load", str(settings))
    assert code == EXIT_OK
    assert "2 unchanged" in out
    assert "created" not in out.replace("0 created", "")
    assert "updated" not in out.replace("0 updated", "")
    assert _db_state() == state


def test_update_and_dry_run(clean_db: None, tmp_path: Path) -> None:
    settings = tmp_path / "airflow_settings.yaml"
    shutil.copy(REPO / "airflow_settings.yaml", settings)
    assert run("settings", "load", str(settings))[0] == EXIT_OK
    settings.write_text(settings.read_text().replace("pool_slot: 8", "pool_slot: 12"))

    before = _db_state()
    code, out, _ = run("settings", "load", "--dry-run", str(settings))
    assert code == EXIT_OK
    assert "pool convoy_rollout: dry run: would be updated (slots=12)" in out
    assert "nothing written" in out
    assert _db_state() == before

    code, out, _ = run("settings", "load", str(settings))
    assert "pool convoy_rollout: updated (slots=12)" in out
    assert _db_state()["pools"]["convoy_rollout"][0] == 12  # type: ignore[index]


def test_passwords_and_secret_extras_are_never_printed(
    clean_db: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = tmp_path / "airflow_settings.yaml"
    settings.write_text(WITH_SECRETS)

    code, out, err = run("settings", "load", "--dry-run", str(settings))
    assert code == EXIT_OK
    assert "convoy_test_db" not in _db_state()["connections"]  # type: ignore[operator]
    first = out + err
    code, out, err = run("settings", "load", str(settings))
    assert code == EXIT_OK
    assert "password=***" in out
    assert '"api_token": "***"' in out
    code, out2, err2 = run("settings", "load", str(settings))
    assert "3 unchanged" in out2

    conn = _db_state()["connections"]["convoy_test_db"]  # type: ignore[index]
    assert conn[3] == PASSWORD  # stored (encrypted at rest when a fernet key is set) ...
    assert _db_state()["variables"]["convoy_test_var"] == '{"a": 1}'  # type: ignore[index]
    captured = capfd.readouterr()
    everything = first + out + err + out2 + err2 + caplog.text + captured.out + captured.err
    for secret in (PASSWORD, TOKEN):
        assert secret not in everything  # ... but never printed or logged
