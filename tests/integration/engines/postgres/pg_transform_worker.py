"""Runs one transform in its own process (the SIGKILL test kills it mid-way).

Usage: python pg_transform_worker.py CONNINFO RUN_ID BATCH_SIZE MAX_ROWS_PER_S
Prints every log line, flushed, so the parent can kill it after some batches.
"""

from __future__ import annotations

import sys
from pathlib import Path

from convoy.engines.base import RunContext
from convoy.engines.postgres import PostgresConfig, PostgresEngine
from convoy.plan.specs import datastore_spec
from convoy.policy.models import PostgresDatastore

TRANSFORM = {
    "name": "count-once",
    "table": "public.items",
    "key": "id",
    # no where: a batch applied twice would show as touched = 2
    "set": {"touched": "touched + 1", "label": "'item-' || (id % 7)::text || '%'"},
}


def datastore(batch_size: int) -> PostgresDatastore:
    return PostgresDatastore.model_validate(
        {
            "name": "items",
            "type": "postgres",
            "connId": "items_db",
            "transforms": [{**TRANSFORM, "batchSize": batch_size}],
        }
    )


def main(conninfo: str, run_id: str, batch_size: int, rate: float) -> None:
    def log(line: str) -> None:
        print(line, flush=True)

    ctx = RunContext("shop", run_id, datastore_spec(datastore(batch_size)), Path.cwd(), log=log)
    config = PostgresConfig(progress_interval_s=0, max_rows_per_s=rate or None)
    result = PostgresEngine(conninfo, config).transform(ctx, "count-once")
    print(f"RESULT rows_done={result.rows_done} resumed_from={result.resumed_from}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
