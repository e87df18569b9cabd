"""SIGKILL the transform process mid-way, rerun: same data as one clean pass, no batch twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pg_engine_helpers import PgDb

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("pg_transform_worker.py")
ROWS = 10_000


def _items(pg: PgDb) -> None:
    pg.execute(
        "CREATE TABLE items (id int PRIMARY KEY, touched int NOT NULL DEFAULT 0, label text);"
        f" INSERT INTO items (id) SELECT g FROM generate_series(1, {ROWS}) g"
    )


def _run(pg: PgDb, run_id: str, rate: float = 0) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, str(WORKER), pg.conninfo, run_id, "100", str(rate)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_sigkill_mid_way_then_rerun_equals_clean_run(pg: PgDb, postgres_server: object) -> None:
    _items(pg)
    proc = _run(pg, "run-1", rate=5000)  # ~2 s in total: killed well before the end
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        if line.startswith("items/count-once: "):
            seen += 1
            if seen == 20:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    partial = pg.execute("SELECT touched, count(*) FROM items GROUP BY 1 ORDER BY 1")
    done_at_kill = dict(partial).get(1, 0)
    assert 0 < done_at_kill < ROWS
    assert max(t for t, _ in partial) == 1
    checkpoint = pg.scalar("SELECT rows_done FROM convoy.transform_checkpoints")
    assert checkpoint == done_at_kill  # checkpoint and data committed together

    rerun = _run(pg, "run-1")
    out, _ = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, out
    assert f"resuming after key {checkpoint}" in out
    assert f"RESULT rows_done={ROWS} resumed_from={checkpoint}" in out
    assert pg.execute("SELECT touched, count(*) FROM items GROUP BY 1") == [(1, ROWS)]
    killed_state = pg.row_hashes()

    clean = PgDb(
        conninfo=pg.conninfo.replace(f"/{pg.name}?", f"/{pg.name}_clean?"),
        name=f"{pg.name}_clean",
        base_dir=pg.base_dir,
    )
    import psycopg

    admin = postgres_server.get_uri()  # type: ignore[attr-defined]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{clean.name}"'.encode())
    try:
        _items(clean)
        single = _run(clean, "clean")
        out, _ = single.communicate(timeout=60)
        assert single.returncode == 0, out
        assert clean.row_hashes() == killed_state
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{clean.name}" WITH (FORCE)'.encode())
