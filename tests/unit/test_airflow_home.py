"""The suite uses its own Airflow home, whatever the caller's environment says.

``make`` exports ``AIRFLOW_HOME=.airflow``, the demo's home: ``make demo && make
test`` must leave it exactly as the demo left it. ``tests/conftest.py`` drops
the caller's Airflow variables and, at the end of the session, fails the run if
anything they named changed; these tests run pytest as ``make test`` would,
with a caller home, config file and SQLite metadata DB of the caller's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import airflow_home
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SESSION = airflow_home.SESSION
assert SESSION is not None, "tests/conftest.py isolates the session before tests are imported"
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


def _caller(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A caller's Airflow: home with a config file and a DB, all named by the environment."""
    home = tmp_path / "caller-airflow"
    (home / "logs").mkdir(parents=True)
    (home / "airflow.cfg").write_text(
        f"[database]\nsql_alchemy_conn = sqlite:///{home / 'from-cfg.db'}\n"
    )
    (home / "airflow.db").write_bytes(b"the demo's runs")
    env = {
        k: v
        for k, v in os.environ.items()
        if not airflow_home.AIRFLOW_VARIABLE.match(k) and k not in ("CONVOY_RUNS_DIR",)
    }
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW_CONFIG=str(home / "airflow.cfg"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO_ROOT / "dags"),
        AIRFLOW_CONN_ORDERS_DB="postgresql://u:p@db.invalid/orders",
        CONVOY_RUNS_DIR=str(home / "runs"),
    )
    return home, env


def test_session_runs_in_its_own_home() -> None:
    assert Path(os.environ["AIRFLOW_HOME"]) == SESSION.home
    assert Path(os.environ["CONVOY_RUNS_DIR"]).is_relative_to(SESSION.home)
    assert "AIRFLOW_CONFIG" not in os.environ
    assert not any(k.startswith(("AIRFLOW__DATABASE__", "AIRFLOW_CONN_")) for k in os.environ)
    from airflow.configuration import conf

    assert conf.get("database", "sql_alchemy_conn").startswith(f"sqlite:///{SESSION.home}")


def test_isolate_drops_what_the_caller_named(tmp_path: Path) -> None:
    environ = {
        "AIRFLOW_HOME": "/srv/airflow",
        "AIRFLOW_CONFIG": "/srv/airflow/airflow.cfg",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////srv/meta.db",
        "AIRFLOW__CORE__SQL_ALCHEMY_CONN": "postgresql://airflow@db/airflow",
        "AIRFLOW_CONN_ORDERS_DB": "postgresql://u:p@db/orders",
        "AIRFLOW_VAR_X": "1",
        "_AIRFLOW_PARSING_CONTEXT_DAG_ID": "shop",
        "CONVOY_REPORTS_DIR": "/srv/reports",
        "PATH": "/usr/bin",
    }
    caller = airflow_home.isolate(environ, tmp_path)
    assert environ == {"AIRFLOW_HOME": str(tmp_path), "PATH": "/usr/bin"}
    assert [str(p) for p in caller.watched] == [
        "/srv/airflow",
        "/srv/airflow/airflow.cfg",
        "/srv/reports",
        "/srv/meta.db",
        "/srv/meta.db-wal",
        "/srv/meta.db-shm",
    ]


def test_changes_name_created_modified_and_removed_paths(tmp_path: Path) -> None:
    (tmp_path / "keep").write_text("a")
    (tmp_path / "edit").write_text("a")
    (tmp_path / "gone").write_text("a")
    before = airflow_home.watch([tmp_path, tmp_path / "never"])
    assert airflow_home.changes(before, airflow_home.watch([tmp_path, tmp_path / "never"])) == []
    (tmp_path / "edit").write_text("bb")
    (tmp_path / "gone").unlink()
    (tmp_path / "new").mkdir()
    after = airflow_home.watch([tmp_path, tmp_path / "never"])
    assert airflow_home.changes(before, after) == [
        f"modified: {tmp_path}",
        f"modified: {tmp_path / 'edit'}",
        f"removed: {tmp_path / 'gone'}",
        f"created: {tmp_path / 'new'}",
    ]


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_session_writing_into_the_caller_home_fails(tmp_path: Path, workers: list[str]) -> None:
    """The end-of-session check itself: a passing test that writes there fails the run.

    Under xdist the write happens in a worker, whose environment the controller
    has already isolated: the controller tells it the caller's and checks at the end.
    """
    home, env = _caller(tmp_path)
    suite = tmp_path / "suite"
    suite.mkdir()
    # The repository's conftest under another module name, so this file can be "conftest".
    (suite / "conftest.py").write_text(
        textwrap.dedent(
            f"""\
            import importlib.util, sys
            sys.path.insert(0, {str(REPO_ROOT / "tests")!r})
            spec = importlib.util.spec_from_file_location(
                "convoy_tests_conftest", {str(REPO_ROOT / "tests" / "conftest.py")!r}
            )
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            pytest_sessionfinish = module.pytest_sessionfinish
            pytest_configure = module.pytest_configure
            pytest_configure_node = module.pytest_configure_node
            """
        )
    )
    (suite / "test_writes.py").write_text(
        "import airflow_home\n"
        "def test_writes():\n"
        f"    assert {str(home)!r} in map(str, airflow_home.SESSION.caller.watched)\n"
        f"    open({str(home / 'airflow.db')!r}, 'ab').write(b'x')\n"
    )
    proc = subprocess.run(
        [*PYTEST, *workers, "--rootdir", str(suite), str(suite)],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    assert "the test suite changed the caller's Airflow state" in proc.stdout
    assert f"modified: {home / 'airflow.db'}" in proc.stdout


@pytest.mark.skipif(
    bool(SESSION.caller.watched),
    reason="this session has a caller's Airflow home (make test): its end-of-session "
    "check covers the whole suite",
)
def test_suite_leaves_the_caller_home_as_it_was(tmp_path: Path) -> None:
    """As after ``make demo``: a suite that writes Airflow's DB leaves the caller's alone.

    ``test_settings`` migrates the metadata DB and loads pools and connections
    into it (it used to find the demo's pool there).
    """
    home, env = _caller(tmp_path)
    before = airflow_home.watch([home])
    proc = subprocess.run(
        [*PYTEST, "tests/unit/test_settings.py", "-k", "load_creates_pool"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    assert airflow_home.changes(before, airflow_home.watch([home])) == []
