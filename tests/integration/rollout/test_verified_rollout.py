"""Verified rollouts against the emulated cluster and a real Prometheus.

Prometheus (Debian's ``prometheus``, installed by ``make system-deps``) scrapes
an exporter that serves the emulated pods' request counters the way an
instrumented application would: about 20 requests/s per ready pod, labelled by
namespace, workload, pod and image; an image tag containing ``-errors``
answers 20 % of them with code 500. The analysis runs the real PromQL query
through the HTTP API.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from convoy.emulator import EmulatedCluster
from convoy.rollout import RolloutRunner
from convoy.rollout.analysis import AnalysisFailed, AnalysisSpec, Analyzer
from convoy.rollout.canary import VerifiedRollout
from convoy.rollout.providers.prometheus import PrometheusProvider
from convoy.rollout.runner import Target

NS = "shop"
ERROR_RATE = (
    'sum(rate(http_requests_total{namespace="{{ namespace }}", workload="{{ workload }}", '
    'image=~"{{ images }}", code=~"5.."}[5s])) or vector(0)) / '
    'sum(rate(http_requests_total{namespace="{{ namespace }}", workload="{{ workload }}", '
    'image=~"{{ images }}"}[5s]))'
)
ERROR_RATE = "(" + ERROR_RATE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PodTraffic:
    """Serves ``http_requests_total`` of the emulated pods (20 req/s per ready pod)."""

    def __init__(self, cluster: EmulatedCluster, workloads: list[tuple[str, str]]) -> None:
        self.cluster, self.workloads = cluster, workloads
        self.counts: dict[tuple[str, ...], float] = {}
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def render(self) -> str:
        with self.lock:
            now = time.monotonic()
            elapsed, self.last = now - self.last, now
            for kind, name in self.workloads:
                for pod in self.cluster.pods(kind, NS, name):
                    ready = any(
                        c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (pod.get("status") or {}).get("conditions") or []
                    )
                    image = pod["spec"]["containers"][0]["image"]
                    pod_name = pod["metadata"]["name"]
                    rate = 20.0 if ready else 0.0
                    errors = 0.2 if "-errors" in image else 0.0
                    for code, share in (("200", 1 - errors), ("500", errors)):
                        key = (name, pod_name, image, code)
                        self.counts[key] = self.counts.get(key, 0.0) + rate * share * elapsed
            lines = ["# TYPE http_requests_total counter"]
            for (name, pod_name, image, code), value in sorted(self.counts.items()):
                lines.append(
                    f'http_requests_total{{namespace="{NS}",workload="{name}",pod="{pod_name}",'
                    f'image="{image}",code="{code}"}} {value:.3f}'
                )
            return "\n".join(lines) + "\n"


@pytest.fixture
def traffic(emulated_cluster: EmulatedCluster) -> Iterator[tuple[PodTraffic, str]]:
    exporter = PodTraffic(emulated_cluster, [])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exporter.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield exporter, f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def prometheus(traffic: tuple[PodTraffic, str], tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus is not installed (make system-deps installs it as root)")
    _, target = traffic
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: pods\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = _free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:  # noqa: S310
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("prometheus did not become ready")
            time.sleep(0.2)
        # Prometheus hands new targets to its scrapers after up to 5 s: wait for the first scrape.
        while '"health":"up"' not in _get(f"{url}/api/v1/targets"):
            if time.monotonic() > deadline:
                pytest.fail("prometheus never scraped the exporter")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310
        return str(resp.read().decode())


def _spec(**overrides: Any) -> AnalysisSpec:
    fields: dict[str, Any] = {
        "name": "error-rate", "provider": "prometheus", "conn_id": "prometheus_default",
        "query": ERROR_RATE, "min": None, "max": 0.05, "interval_s": 1.0, "count": 3,
        "initial_delay_s": 4.0, "on_no_data": "inconclusive",
    }  # fmt: skip
    fields.update(overrides)
    return AnalysisSpec(**fields)


def _verified(
    runner: RolloutRunner, prometheus: str, log_lines: list[str]
) -> tuple[VerifiedRollout, Analyzer]:
    analyzer = Analyzer(
        {("prometheus", "prometheus_default"): PrometheusProvider(prometheus)},
        log=log_lines.append,
    )
    return VerifiedRollout(runner, analyzer, poll_seconds=0.05), analyzer


def test_analysis_after_rollout_passes_on_a_healthy_image(
    emulated_cluster: EmulatedCluster,
    traffic: tuple[PodTraffic, str],
    prometheus: str,
    runner: RolloutRunner,
    log_lines: list[str],
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"})
    traffic[0].workloads.append(("Deployment", "cart"))
    verified, _analyzer = _verified(runner, prometheus, log_lines)
    result = verified.apply(
        Target(NS, "Deployment", "cart", {"server": "cart:2.4.0"}),
        service="cart", canary=[], analyses=[_spec()], templates={}, deadline_seconds=60,
    )  # fmt: skip
    [run] = result.analyses
    assert run.phase == "successful", run.summary()
    assert [m.verdict for m in run.measurements] == ["pass"] * 3
    assert all(m.value == 0 for m in run.measurements)
    assert 'image=~"cart:2\\\\.4\\\\.0"' in run.query  # only the new version's requests
    assert result.to_dict()["analysis"][0]["measurements"][0]["at"]


def test_analysis_fails_at_once_on_an_errors_image_and_is_not_retriable(
    emulated_cluster: EmulatedCluster,
    traffic: tuple[PodTraffic, str],
    prometheus: str,
    runner: RolloutRunner,
    log_lines: list[str],
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0"})
    traffic[0].workloads.append(("Deployment", "cart"))
    verified, analyzer = _verified(runner, prometheus, log_lines)
    with pytest.raises(AnalysisFailed) as caught:
        verified.apply(
            Target(NS, "Deployment", "cart", {"server": "cart:2.4.0-errors"}),
            service="cart", canary=[], analyses=[_spec()], templates={}, deadline_seconds=60,
        )  # fmt: skip
    error = caught.value
    assert type(error).retriable is False
    [run] = analyzer.runs
    assert run.phase == "failed"
    assert len(run.measurements) == 1  # failureLimit 0: the first failed value ends it
    value = run.measurements[0].value
    assert value is not None
    assert 0.1 < value < 0.3
    data = error.to_dict()
    assert data["error"] == "AnalysisFailed"
    assert data["template"] == "error-rate"
    assert data["failedValues"] == [value]
    assert "outside [-inf, 0.05]" in error.message
    assert "http_requests_total" in error.message


def test_dry_run_measures_each_query_once_and_changes_nothing(
    emulated_cluster: EmulatedCluster,
    traffic: tuple[PodTraffic, str],
    prometheus: str,
    runner: RolloutRunner,
    log_lines: list[str],
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.3.0-errors"})
    traffic[0].workloads.append(("Deployment", "cart"))
    time.sleep(4)  # two scrapes, so rate() has a value
    verified, _analyzer = _verified(runner, prometheus, log_lines)
    spec = _spec(query=ERROR_RATE.replace("{{ images }}", ".*"), initial_delay_s=30.0)
    result = verified.apply(
        Target(NS, "Deployment", "cart", {"server": "cart:2.4.0"}),
        service="cart", canary=[{"pods": 1}, {"analysis": "error-rate"}], analyses=[spec],
        templates={"error-rate": spec}, deadline_seconds=60, dry_run=True,
    )  # fmt: skip
    assert emulated_cluster.images("Deployment", NS, "cart") == {"server": "cart:2.3.0-errors"}
    [run] = result.analyses  # the same template twice is measured once
    assert run.dry_run
    assert len(run.measurements) == 1
    assert run.phase == "failed"
    assert run.measurements[0].verdict == "fail"
    assert result.rollout.status == "dry-run"


def test_prometheus_errors_are_inconclusive_and_name_no_credentials(
    prometheus: str, log_lines: list[str]
) -> None:
    provider = PrometheusProvider(prometheus, {"Authorization": "Bearer s3cr3t-token"})
    analyzer = Analyzer(
        {("prometheus", "p"): provider}, log=log_lines.append, sleep=lambda _s: None
    )
    spec = _spec(conn_id="p", query="up{job=", initial_delay_s=0.0, count=2, inconclusive_limit=1)
    run = analyzer.run(spec, {}, service="cart", where="after rollout")
    assert run.phase == "inconclusive"
    assert all(m.verdict == "inconclusive" for m in run.measurements)
    assert "HTTP 400" in run.measurements[0].message
    text = repr(run.to_dict()) + "\n".join(log_lines) + repr(provider)
    assert "s3cr3t" not in text
    passing = analyzer.run(
        _spec(conn_id="p", query='sum(up{job="pods"})', min=1, max=1, initial_delay_s=0.0,
              count=1),
        {}, service="cart", where="after rollout",
    )  # fmt: skip
    assert passing.phase == "successful", passing.summary()
