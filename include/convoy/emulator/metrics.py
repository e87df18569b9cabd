"""Simulated application traffic of the emulated pods, as Prometheus text exposition.

``GET /metrics`` on the emulator's HTTP server answers what an instrumented
application behind each pod would export, so a real Prometheus can scrape the
emulator and analyses can run real PromQL:

- ``http_requests_total{namespace, workload, pod, image, code}`` (counter):
  every ready pod serves :data:`REQUESTS_PER_SECOND` requests per wall-clock
  second, counted from the moment it became ready (``floor(20 * seconds)``,
  the same value for the same instant); ``code`` is ``"200"`` or ``"500"``.
- ``http_request_duration_seconds_bucket{namespace, workload, pod, image, le}``
  with ``_sum`` and ``_count`` (histogram of the same requests).

``workload`` is the owning Deployment/StatefulSet/DaemonSet, ``image`` the
image of the pod's first (main) container. Series exist for every pod in phase
``Running`` (0 until it is ready, both codes from the start, as an application
that initialises its metrics); a pending pod exports nothing and a deleted
pod's series end. The image tag picks the behaviour:

=============  ====================================================
``-errors``    20 % of requests answer ``500``
``-latency``   slow: p99 about 2 s (healthy: p99 about 50 ms)
anything else  no errors, p99 about 50 ms
=============  ====================================================
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from convoy.emulator.store import KIND_OF, image_tag

if TYPE_CHECKING:
    from convoy.emulator.store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUESTS_PER_SECOND = 20.0
ERROR_SHARE = 0.2
#: Pod annotation: wall-clock time (``time.time()``) the pod became ready.
READY_AT = "convoy.emulator/ready-at"

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Cumulative share of requests at or below each bucket (then 1.0 at +Inf), and the mean.
#: Healthy: p99 ~ 49 ms (every request within 50 ms); slow: p99 ~ 2.1 s.
HEALTHY = ((0.1, 0.3, 0.7, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0), 0.022)
SLOW = ((0.02, 0.1, 0.3, 0.6, 0.8, 0.9, 0.93, 0.96, 1.0, 1.0, 1.0), 0.17)


def errors(image: str) -> bool:
    """Whether pods of ``image`` answer 20 % of requests with 500 (tag contains ``-errors``)."""
    return "-errors" in image_tag(image)


def slow(image: str) -> bool:
    """Whether pods of ``image`` have a slow p99 (tag contains ``-latency``)."""
    return "-latency" in image_tag(image)


def requests_served(ready_at: float | None, now: float) -> int:
    """Requests a pod ready since ``ready_at`` has served by ``now`` (0 if never ready)."""
    if ready_at is None or now <= ready_at:
        return 0
    return math.floor(REQUESTS_PER_SECOND * (now - ready_at))


def _ready_at(pod: dict[str, Any]) -> float | None:
    raw = (pod["metadata"].get("annotations") or {}).get(READY_AT)
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


def render(store: Store, now: float | None = None) -> str:
    """The exposition text for every running pod (caller holds ``store.cond``)."""
    now = time.time() if now is None else now
    requests: list[str] = []
    buckets: list[str] = []
    sums: list[str] = []
    counts: list[str] = []
    for (resource, namespace, name), pod in sorted(store.objects.items()):
        if resource != "pods" or (pod.get("status") or {}).get("phase") != "Running":
            continue
        owner = (pod["metadata"].get("annotations") or {}).get("convoy.emulator/owner", "")
        owner_resource, _, workload = owner.partition("/")
        if owner_resource not in KIND_OF:
            continue
        containers = pod["spec"].get("containers") or [{}]
        image = str(containers[0].get("image", ""))
        labels = (
            f'namespace="{_label(namespace)}",workload="{_label(workload)}",'
            f'pod="{_label(name)}",image="{_label(image)}"'
        )
        total = requests_served(_ready_at(pod), now)
        failed = math.floor(total * ERROR_SHARE) if errors(image) else 0
        requests.append(f'http_requests_total{{{labels},code="200"}} {total - failed}')
        requests.append(f'http_requests_total{{{labels},code="500"}} {failed}')
        shares, mean = SLOW if slow(image) else HEALTHY
        for le, share in zip(BUCKETS, shares, strict=True):
            buckets.append(
                f'http_request_duration_seconds_bucket{{{labels},le="{_fmt(le)}"}} '
                f"{math.floor(total * share)}"
            )
        buckets.append(f'http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {total}')
        sums.append(f"http_request_duration_seconds_sum{{{labels}}} {total * mean:.3f}")
        counts.append(f"http_request_duration_seconds_count{{{labels}}} {total}")
    lines = [
        "# HELP http_requests_total Requests served by the emulated pods.",
        "# TYPE http_requests_total counter",
        *requests,
        "# HELP http_request_duration_seconds Latency of the requests served by the emulated pods.",
        "# TYPE http_request_duration_seconds histogram",
    ]
    # A histogram's series are grouped per label set: buckets, then _sum and _count.
    per_pod = len(BUCKETS) + 1
    for i in range(len(sums)):
        lines.extend(buckets[i * per_pod : (i + 1) * per_pod])
        lines.append(sums[i])
        lines.append(counts[i])
    return "\n".join(lines) + "\n"


__all__ = ["CONTENT_TYPE", "READY_AT", "REQUESTS_PER_SECOND", "errors", "render", "slow"]
