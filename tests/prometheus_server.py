"""A real Prometheus server for tests (Debian's ``prometheus``, see tests/conftest.py)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

SKIP_REASON = (
    "the prometheus binary is not installed (make system-deps installs Debian's prometheus "
    "when run as root with apt-get)"
)
START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - local test server
        return int(resp.status), resp.read().decode()


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, targets: list[str], scrape_interval: str, directory: Path) -> PrometheusServer:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip(SKIP_REASON)
        config = directory / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {
                        "scrape_interval": scrape_interval,
                        "evaluation_interval": scrape_interval,
                    },
                    "scrape_configs": [
                        {
                            "job_name": "convoy",
                            "metrics_path": "/metrics",
                            "scrape_interval": scrape_interval,
                            "scrape_timeout": scrape_interval,
                            "static_configs": [{"targets": list(targets)}],
                        }
                    ],
                },
                indent=2,
            )
        )
        log = directory / "prometheus.log"
        for _attempt in range(3):  # another process may take the free port in between
            port = _free_port()
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [
                        binary,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={directory / 'data'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                        "--storage.tsdb.retention.time=1h",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            server = cls(f"http://127.0.0.1:{port}", process, log)
            if server._wait(len(targets)):
                return server
            server.stop()
            if "address already in use" not in log.read_text(errors="replace"):
                break
        tail = log.read_text(errors="replace")[-2000:]
        pytest.fail(f"prometheus did not start (log {log}):\n{tail}")

    def _wait(self, n_targets: int) -> bool:
        """Ready and every target scraped once; False if the process died or it timed out."""
        deadline = time.monotonic() + START_TIMEOUT_S
        ready = False
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if not ready:
                    ready = _get(f"{self.url}/-/ready")[0] == 200
                if ready:
                    _, body = _get(f"{self.url}/api/v1/targets")
                    active = json.loads(body)["data"]["activeTargets"]
                    # New targets reach the scrapers up to 5 s after start: wait for a scrape.
                    if len(active) >= n_targets and all(
                        t.get("health") != "unknown" for t in active
                    ):
                        return True
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
