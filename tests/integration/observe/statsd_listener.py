"""A real UDP StatsD listener on 127.0.0.1 for the metrics tests."""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

MAPPING_FILE = Path(__file__).resolve().parents[3] / "deploy" / "statsd-mapping.yaml"


@dataclass(frozen=True)
class Sample:
    name: str
    value: float
    type: str  # c, g, ms


def parse(packet: str) -> list[Sample]:
    """StatsD lines ``name:value|type[|@rate]``, several per packet when batched."""
    samples = []
    for line in packet.splitlines():
        if not line.strip():
            continue
        name, rest = line.split(":", 1)
        value, kind = rest.split("|")[:2]
        samples.append(Sample(name, float(value), kind))
    return samples


@dataclass
class StatsdListener:
    """Binds a free UDP port; collects every packet in a background thread."""

    host: str = "127.0.0.1"
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((self.host, 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.samples.extend(parse(data.decode()))

    def wait_for(self, names: set[str], timeout: float = 5.0) -> list[Sample]:
        """Wait until every name has arrived (or the timeout); return all samples so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                seen = {s.name for s in self.samples}
            if names <= seen:
                break
            time.sleep(0.05)
        with self._lock:
            return list(self.samples)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def statsd_env(self, prefix: str = "airflow") -> dict[str, str]:
        """Airflow ``[metrics]`` settings that send StatsD here."""
        return {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": self.host,
            "AIRFLOW__METRICS__STATSD_PORT": str(self.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": prefix,
        }


def mapped_names(name: str) -> list[str]:
    """Prometheus names the statsd_exporter mapping gives ``name`` (whole-part ``*`` globs)."""
    out = []
    for rule in yaml.safe_load(MAPPING_FILE.read_text())["mappings"]:
        parts = rule["match"].split(".")
        regex = r"\.".join("[^.]+" if p == "*" else re.escape(p) for p in parts)
        if re.fullmatch(regex, name):
            out.append(rule["name"])
    return out
