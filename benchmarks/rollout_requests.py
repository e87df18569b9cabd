"""API requests per service rollout against the emulated API server.

Rolls out N services (Deployments, StatefulSets and DaemonSets in turn, 3
replicas each) one after the other with :class:`convoy.rollout.RolloutRunner`,
then counts from the emulator's request log, per rollout, the GET / PATCH /
LIST / WATCH requests and the peak number of requests started in any 1 s
window. client-go's default client-side budget is 5 QPS (burst 10); a rollout
that stays under it never queues behind its own rate limiter, however many
run at once against one API server.

    .venv/bin/python benchmarks/rollout_requests.py [--services 20] [--replicas 3]

Prints a Markdown table; exits 1 if any rollout exceeds 5 requests in 1 s.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections import Counter

from convoy.emulator import EmulatedCluster, RequestRecord
from convoy.rollout import RolloutRunner, Target

KINDS = ("Deployment", "StatefulSet", "DaemonSet")
VERBS = ("GET", "PATCH", "LIST", "WATCH")
QPS_BUDGET = 5.0


def peak_per_second(records: list[RequestRecord]) -> int:
    """Most requests started within any 1 s window."""
    times = sorted(r.started for r in records)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def run(services: int, replicas: int, tick: float) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with EmulatedCluster(tick_seconds=tick) as cluster:
        runner = RolloutRunner(cluster.api_client(), log=logging.getLogger("bench").debug)
        for i in range(services):
            kind = KINDS[i % len(KINDS)]
            name = f"svc-{i:02d}"
            cluster.add_workload(kind, "bench", name, {"app": f"{name}:1.0.0"}, replicas=replicas)
            start = len(cluster.requests)
            began = time.monotonic()
            result = runner.apply(
                Target("bench", kind, name, {"app": f"{name}:1.1.0"}), deadline_seconds=60
            )
            elapsed = time.monotonic() - began
            records = cluster.requests[start:]
            verbs = Counter(r.verb for r in records)
            rows.append(
                {
                    "service": name,
                    "kind": kind,
                    "status": result.status,
                    **{v: verbs.get(v, 0) for v in VERBS},
                    "total": len(records),
                    "peak": peak_per_second(records),
                    "seconds": elapsed,
                }
            )
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| service | kind | status | GET | PATCH | LIST | WATCH | total | peak req/1 s | s |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['service']} | {r['kind']} | {r['status']} | "
            + " | ".join(str(r[v]) for v in VERBS)
            + f" | {r['total']} | {r['peak']} | {float(str(r['seconds'])):.2f} |"
        )
    totals = [int(str(r["total"])) for r in rows]
    peaks = [int(str(r["peak"])) for r in rows]
    lines.append("")
    lines.append(
        f"{len(rows)} rollouts: requests per rollout min {min(totals)}, median "
        f"{statistics.median(totals):g}, max {max(totals)}; peak rate max {max(peaks)} req/s "
        f"(budget {QPS_BUDGET:g} QPS: {'ok' if max(peaks) <= QPS_BUDGET else 'EXCEEDED'})."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--tick-seconds", type=float, default=0.05)
    args = parser.parse_args(argv)
    rows = run(args.services, args.replicas, args.tick_seconds)
    text = table(rows)
    if any(int(str(r["peak"])) > QPS_BUDGET for r in rows):
        print(text)
        raise SystemExit(1)
    return text


if __name__ == "__main__":
    print(main(sys.argv[1:]))
