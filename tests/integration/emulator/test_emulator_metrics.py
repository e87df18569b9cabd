"""The emulator's ``/metrics``: simulated traffic per pod by image tag, scraped by Prometheus."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from convoy.emulator import EmulatedCluster
from convoy.emulator.metrics import READY_AT, render, requests_served

pytestmark = pytest.mark.integration

NS = "shop"
SERIES = re.compile(r"^(\w+)\{(.*)\} (\S+)$")


def scrape(cluster: EmulatedCluster) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(f"{cluster.url}/metrics", timeout=5) as resp:  # noqa: S310
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(resp.read().decode())


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SERIES.match(line)
        assert m, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **want: str) -> float:
    return sum(
        v
        for n, labels, v in samples
        if n == name and all(labels.get(k) == w for k, w in want.items())
    )


def test_counters_per_pod_labelled_by_workload_and_image(emulated_cluster: EmulatedCluster) -> None:
    emulated_cluster.add_workload(
        "Deployment", NS, "cart", {"server": "cart:1.0", "proxy": "envoy:1"}
    )
    emulated_cluster.add_workload(
        "StatefulSet", NS, "redis", {"redis": "redis:7-errors"}, replicas=2
    )
    time.sleep(0.6)
    samples = scrape(emulated_cluster)
    pods = {p["metadata"]["name"] for p in emulated_cluster.pods("Deployment", NS, "cart")}
    cart = [s for s in samples if s[0] == "http_requests_total" and s[1]["workload"] == "cart"]
    assert {s[1]["pod"] for s in cart} == pods
    assert {s[1]["image"] for s in cart} == {"cart:1.0"}  # the main (first) container
    assert {s[1]["namespace"] for s in cart} == {NS}
    assert {s[1]["code"] for s in cart} == {"200", "500"}
    assert total(samples, "http_requests_total", workload="cart", code="500") == 0
    assert total(samples, "http_requests_total", workload="cart", code="200") >= 3 * 10
    # -errors: 20 % of the requests answer 500.
    ok = total(samples, "http_requests_total", workload="redis", code="200")
    failed = total(samples, "http_requests_total", workload="redis", code="500")
    assert failed > 0
    assert failed / (ok + failed) == pytest.approx(0.2, abs=0.05)
    redis_pods = {s[1]["pod"] for s in samples if s[1].get("workload") == "redis"}
    assert redis_pods == {"redis-0", "redis-1"}
    # The histogram counts the same requests.
    assert total(samples, "http_request_duration_seconds_count", workload="cart") == total(
        samples, "http_requests_total", workload="cart"
    )


def test_counts_follow_elapsed_time_deterministically(emulated_cluster: EmulatedCluster) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:1.0"}, replicas=1)
    pod = emulated_cluster.pods("Deployment", NS, "cart")[0]
    ready_at = float(pod["metadata"]["annotations"][READY_AT])
    store = emulated_cluster.store
    with store.cond:
        first = render(store, ready_at + 10.0)
        again = render(store, ready_at + 10.0)
        later = render(store, ready_at + 20.0)
    assert first == again
    assert f'code="200"}} {requests_served(ready_at, ready_at + 10.0)}' in first
    assert requests_served(ready_at, ready_at + 10.0) == 200
    assert 'code="200"} 400' in later
    assert requests_served(None, ready_at + 10.0) == 0


def test_latency_buckets(emulated_cluster: EmulatedCluster) -> None:
    emulated_cluster.add_workload("Deployment", NS, "fast", {"app": "app:1"}, replicas=1)
    emulated_cluster.add_workload("Deployment", NS, "slow", {"app": "app:1-latency"}, replicas=1)
    with emulated_cluster.store.cond:  # 100 s after the pods became ready
        samples = parse(render(emulated_cluster.store, time.time() + 100))

    def quantile(workload: str, q: float) -> float:
        buckets = sorted(
            (float(labels["le"]), v)
            for n, labels, v in samples
            if n == "http_request_duration_seconds_bucket" and labels["workload"] == workload
        )
        count = buckets[-1][1]
        lower, below = 0.0, 0.0
        for le, cumulative in buckets:
            if cumulative >= q * count:
                return lower + (le - lower) * (q * count - below) / (cumulative - below)
            lower, below = le, cumulative
        raise AssertionError("no bucket")

    assert quantile("fast", 0.99) == pytest.approx(0.05, abs=0.01)
    assert quantile("slow", 0.99) == pytest.approx(2.0, abs=0.5)


def test_pending_and_never_ready_pods(emulated_cluster: EmulatedCluster) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:1.0"}, replicas=1)
    apps_patch(emulated_cluster, "cart", "cart:2.0-never-ready")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        samples = scrape(emulated_cluster)
        stuck = [s for s in samples if s[1].get("image") == "cart:2.0-never-ready"]
        if stuck:
            break
        time.sleep(0.05)
    assert stuck
    assert all(v == 0 for _n, _l, v in stuck if _n == "http_requests_total")
    emulated_cluster.add_workload("Deployment", NS, "pend", {"server": "p:1"}, replicas=1)
    apps_patch(emulated_cluster, "pend", "p:2-unschedulable")
    time.sleep(0.5)
    assert not [s for s in scrape(emulated_cluster) if s[1].get("image") == "p:2-unschedulable"]


def test_scrapes_are_not_api_requests(emulated_cluster: EmulatedCluster) -> None:
    scrape(emulated_cluster)
    assert not [r for r in emulated_cluster.requests if r.path == "/metrics"]


def apps_patch(cluster: EmulatedCluster, name: str, image: str) -> None:
    from kubernetes import client

    body = {"spec": {"template": {"spec": {"containers": [{"name": "server", "image": image}]}}}}
    client.AppsV1Api(cluster.api_client()).patch_namespaced_deployment(
        name, NS, body, _content_type="application/strategic-merge-patch+json"
    )


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_prometheus_scrapes_the_emulator(
    emulated_cluster: EmulatedCluster, start_prometheus: Callable[..., str]
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:2.4.0"})
    emulated_cluster.add_workload("Deployment", NS, "pay", {"server": "pay:1.0-errors"})
    emulated_cluster.add_workload("Deployment", NS, "slow", {"server": "slow:1.0-latency"})
    target = urllib.parse.urlsplit(emulated_cluster.url).netloc
    prometheus = start_prometheus([target])
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", prometheus)
    up = query(prometheus, "up")
    assert [r["value"][1] for r in up] == ["1"]
    error_rate = (
        'sum by (workload) (rate(http_requests_total{{namespace="shop",code=~"5.."}}[{w}])) / '
        'sum by (workload) (rate(http_requests_total{{namespace="shop"}}[{w}]))'
    )
    p99 = (
        "histogram_quantile(0.99, sum by (workload, le) "
        '(rate(http_request_duration_seconds_bucket{{namespace="shop"}}[{w}])))'
    )
    # rate() over 10 s once every series covers the whole window (older than 11 s: 1 s scrapes);
    # over a younger series Prometheus extrapolates only half an interval before the first sample.
    deadline = time.monotonic() + 40
    while True:
        samples = query(
            prometheus, 'min(count_over_time(http_requests_total{namespace="shop"}[12s]))'
        )
        if (samples and float(samples[0]["value"][1]) >= 12) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    rates = {
        r["metric"]["workload"]: float(r["value"][1])
        for r in query(prometheus, error_rate.format(w="10s"))
    }
    assert rates["pay"] == pytest.approx(0.2, abs=0.02)
    assert rates["cart"] == 0.0
    assert rates["slow"] == 0.0
    latency = {
        r["metric"]["workload"]: float(r["value"][1])
        for r in query(prometheus, p99.format(w="10s"))
    }
    assert latency["cart"] == pytest.approx(0.05, abs=0.01)
    assert latency["slow"] == pytest.approx(2.0, abs=0.5)
    per_pod = query(prometheus, 'rate(http_requests_total{workload="cart",code="200"}[10s])')
    assert len(per_pod) == 3
    assert [float(r["value"][1]) for r in per_pod] == [pytest.approx(20.0, rel=0.2)] * 3
    assert {r["metric"]["image"] for r in per_pod} == {"cart:2.4.0"}
