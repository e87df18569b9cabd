"""Real Airflow services as subprocesses, for e2e tests.

:class:`AirflowServices` owns a private ``AIRFLOW_HOME`` (SQLite metadata DB,
LocalExecutor) and starts ``scheduler``, ``triggerer``, ``dag-processor`` and
``api-server`` as their own process groups, so stopping one also ends the
task and trigger processes it spawned. Each service logs to its own file;
:meth:`AirflowServices.log_tails` is meant for assertion messages.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from e2e_helpers import AIRFLOW

T = TypeVar("T")

SERVICES = ("api-server", "dag-processor", "scheduler", "triggerer")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, interval: float = 0.5, what: str = ""
) -> T:
    """``probe()`` once it is not ``None``; ``TimeoutError`` after ``timeout`` seconds."""
    limit = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > limit:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what or probe}")
        time.sleep(interval)


class AirflowServices:
    """A throw-away Airflow installation whose services run as subprocesses."""

    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        self.root = root
        self.home = root / "airflow"
        self.logs = root / "logs"
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.db_path = self.home / "airflow.db"
        self.api_port = free_port()
        self.env = dict(os.environ)
        # Settings of the test process's own (pytest-wide) Airflow must not leak in.
        for key in list(self.env):
            if key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")):
                del self.env[key]
        self.env.pop("KUBECONFIG", None)
        self.env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db_path}",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                # the scheduler signs the workers' tokens, the execution API checks them
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": (
                    f"http://127.0.0.1:{self.api_port}/execution/"
                ),
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.api_port}",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "NO_COLOR": "1",
                "DO_NOT_TRACK": "1",
            }
        )
        self.env.update(env)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        #: Seconds each service took to exit after SIGTERM (``None``: it had to be killed).
        self.stopped: dict[str, float | None] = {}

    # ------------------------------------------------------------------ commands

    def cli(self, *args: str, timeout: float = 180) -> str:
        """Run ``airflow <args>``; its output goes to ``logs/cli.log`` and is returned."""
        log = self.logs / "cli.log"
        result = subprocess.run(
            [AIRFLOW, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        with log.open("a") as handle:
            handle.write(f"$ airflow {' '.join(args)}  (exit {result.returncode})\n")
            handle.write(result.stdout + result.stderr)
        if result.returncode != 0:
            raise AssertionError(
                f"airflow {' '.join(args)} failed (exit {result.returncode}):\n"
                + "\n".join((result.stdout + result.stderr).splitlines()[-30:])
                + self.log_tails()
            )
        return result.stdout

    def start(self, name: str, *args: str) -> None:
        with (self.logs / f"{name}.log").open("ab") as handle:
            self.procs[name] = subprocess.Popen(
                [AIRFLOW, *args],
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def start_all(self) -> None:
        """The four services of an Airflow 3 deployment; returns once the API server answers."""
        # Only the execution API (what task processes report to): the UI and REST API would
        # only slow the start down.
        self.start(
            "api-server",
            "api-server",
            "--apps",
            "execution",
            "-H",
            "127.0.0.1",
            "-p",
            str(self.api_port),
        )
        self.start("dag-processor", "dag-processor")
        self.start("scheduler", "scheduler")
        self.start("triggerer", "triggerer")
        wait_for(self._api_up, timeout=150, what="the API server")

    def _api_up(self) -> bool | None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}" + self.log_tails())
        try:
            with socket.create_connection(("127.0.0.1", self.api_port), timeout=1):
                return True
        except OSError:
            return None

    def stop_all(self, grace: float = 5) -> None:
        """SIGTERM to each service's process group, SIGKILL to what is left after ``grace`` s."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        started = time.monotonic()
        for name, proc in self.procs.items():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, started + grace - time.monotonic()))
            self.stopped[name] = None if proc.poll() is None else time.monotonic() - started
        for proc in self.procs.values():
            # Also the group's children (task and trigger processes) that outlived their parent.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    # ------------------------------------------------------------------ metadata DB

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the metadata DB (SQLite allows a reader beside the services)."""
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=30)) as conn:
            return conn.execute(sql, params).fetchall()

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()
            parts.append(
                f"\n----- {path.name} (last {lines} lines) -----\n" + "\n".join(text[-lines:])
            )
        return "".join(parts)


@contextlib.contextmanager
def airflow_services(root: Path, env: Mapping[str, str]) -> Iterator[AirflowServices]:
    """Migrated DB, all services started; every process is stopped on the way out."""
    services = AirflowServices(root, env)
    try:
        services.cli("db", "migrate")
        services.start_all()
        yield services
    finally:
        services.stop_all()
