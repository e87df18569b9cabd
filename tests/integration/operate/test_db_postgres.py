"""``convoy db info|validate|baseline|repair|backups`` on a real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from operate_helpers import cli, ctx, write_policy

from convoy.engines.errors import MigrationFailed
from convoy.engines.postgres import PostgresEngine

pytestmark = pytest.mark.integration


def migrated(conninfo: str, root: Path, run_id: str = "run-1", **kw: Any) -> Any:
    loaded = write_policy(root, **kw)
    engine = PostgresEngine(conninfo)
    c = ctx(loaded, "orders", run_id)
    engine.backup(c)
    engine.migrate(c)
    engine.complete(c)
    return loaded


def scalar(conninfo: str, query: str) -> Any:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(query.encode()).fetchone()
    return row[0] if row else None


def test_info_lists_every_version(orders_db: str, tmp_path: Path) -> None:
    loaded = migrated(orders_db, tmp_path)
    (tmp_path / "migrations" / "orders" / "V3__more.sql").write_text("SELECT 1;\n")
    code, out, err = cli("db", "info", str(loaded.path))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "orders (postgres): pending"
    assert lines[1].split() == [
        "version",
        "description",
        "state",
        "checksum",
        "run",
        "installed",
        "on",
    ]
    assert lines[2].split()[:3] == ["1", "orders", "applied"]
    assert lines[2].split()[4] == "run-1"
    assert lines[3].split()[:3] == ["2", "note", "applied"]
    assert lines[4].split()[:3] == ["3", "more", "pending"]

    code, out, _ = cli("db", "info", str(loaded.path), "orders", "--json")
    data = json.loads(out)["datastores"][0]
    assert code == 0
    assert [(v["version"], v["state"]) for v in data["versions"]] == [
        ("1", "applied"),
        ("2", "applied"),
        ("3", "pending"),
    ]
    v1 = data["versions"][0]
    assert v1["checksum"] == v1["file_checksum"]
    assert len(v1["checksum"]) == 64
    assert v1["run_id"] == "run-1"
    assert v1["installed_on"]


def test_validate_reports_edited_files_and_repair_accepts_them(
    orders_db: str, tmp_path: Path
) -> None:
    loaded = migrated(orders_db, tmp_path)
    code, out, err = cli("db", "validate", str(loaded.path))
    assert (code, out.strip(), err) == (0, "orders: ok (2 applied, 0 problems)", "")

    path = tmp_path / "migrations" / "orders" / "V2__note.sql"
    path.write_text(path.read_text() + "-- reviewed\n")
    code, out, err = cli("db", "validate", str(loaded.path))
    assert code == 1
    assert len(err.splitlines()) == 1
    assert err.startswith("orders: version 2: edited after it was applied (applied ")
    assert out.strip() == "orders: invalid (2 applied, 1 problem)"
    code, out, _ = cli("status", "--json", str(loaded.path))
    assert json.loads(out)["datastores"][0]["edited"] == ["2"]

    code, out, err = cli(
        "db", "repair", str(loaded.path), "--version", "2", "--accept-checksum", "--yes"
    )
    assert code == 0, err
    assert out.startswith("orders: accepted checksum ")
    assert cli("db", "validate", str(loaded.path))[0] == 0


def test_repair_clears_a_failed_migration(orders_db: str, tmp_path: Path) -> None:
    loaded = migrated(orders_db, tmp_path)
    (tmp_path / "migrations" / "orders" / "V3__index.sql").write_text(
        "-- convoy:no-transaction\n"
        "CREATE INDEX CONCURRENTLY orders_note ON public.orders (note);\n"
        "CREATE INDEX CONCURRENTLY broken ON public.nowhere (x);\n"
    )
    loaded = write_policy(tmp_path)
    with pytest.raises(MigrationFailed):
        PostgresEngine(orders_db).migrate(ctx(loaded, "orders", "run-2"))

    code, out, _ = cli("db", "info", str(loaded.path))
    assert code == 0
    assert out.startswith("orders (postgres): degraded")
    assert "3: failed part-way: fix the database, then `convoy db repair`" in out
    code, out, _ = cli("db", "validate", str(loaded.path))
    assert code == 1

    code, out, err = cli("db", "repair", str(loaded.path), "--version", "3", "--yes")
    assert code == 0, err
    assert all(": warning: " in line for line in err.splitlines())  # no undo file for V3
    assert out.strip() == "orders: cleared failed attempt of 3 (run run-2)"
    code, out, _ = cli("db", "info", str(loaded.path), "--json")
    states = [(v["version"], v["state"]) for v in json.loads(out)["datastores"][0]["versions"]]
    assert states == [("1", "applied"), ("2", "applied"), ("3", "pending")]


def test_repair_of_a_version_that_did_not_fail_is_refused(orders_db: str, tmp_path: Path) -> None:
    loaded = migrated(orders_db, tmp_path)
    code, out, err = cli("db", "repair", str(loaded.path), "orders", "--version", "1", "--yes")
    assert (code, out) == (1, "")
    assert err == "convoy db repair: version 1: nothing to repair\n"


def test_baseline_then_refused_on_a_managed_store(orders_db: str, tmp_path: Path) -> None:
    loaded = write_policy(tmp_path)
    # the database existed before convoy: what V1 would create is there
    with psycopg.connect(orders_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.orders (id bigint PRIMARY KEY, status text)")
    code, out, err = cli("db", "baseline", str(loaded.path), "--version", "1", "--yes")
    assert (code, err) == (0, ""), err
    assert out.strip() == "orders: baseline at version 1"
    code, out, _ = cli("db", "info", str(loaded.path), "--json")
    states = [(v["version"], v["state"]) for v in json.loads(out)["datastores"][0]["versions"]]
    assert states == [("1", "baseline"), ("1", "below baseline"), ("2", "pending")]
    PostgresEngine(orders_db).migrate(ctx(loaded, "orders", "run-1"))
    assert scalar(orders_db, "SELECT count(*) FROM convoy.schema_history WHERE kind = 'V'") == 1

    code, out, err = cli("db", "baseline", str(loaded.path), "--version", "2", "--yes")
    assert (code, out) == (1, "")
    assert (
        err == "convoy db baseline: cannot baseline 'orders': history already has versions 1, 2\n"
    )


def test_confirmation_is_needed_without_yes(orders_db: str, tmp_path: Path) -> None:
    loaded = write_policy(tmp_path)
    code, _out, err = cli("db", "baseline", str(loaded.path), "--version", "1")
    assert code == 1
    assert err == (
        "convoy db baseline: baseline orders (postgres) at version 1: refused without --yes "
        "(stdin is not a terminal)\n"
    )
    assert scalar(orders_db, "SELECT to_regclass('convoy.schema_history') IS NULL")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("db", "info", "{p}", "nope"),
         "convoy db info: unknown datastore 'nope' (policy has: orders)"),
        (("db", "baseline", "{p}", "nope", "--version", "1", "--yes"),
         "convoy db baseline: unknown datastore 'nope' (policy has: orders)"),
        (("db", "repair", "{p}", "--version", "x1", "--yes"),
         "convoy db repair: --version 'x1': expected dot-separated integers"),
        (("db", "backups", "{p}", "--prune"),
         "convoy db backups: --prune needs --keep N or --older-than D"),
        (("db", "backups", "{p}", "--prune", "--older-than", "soon"),
         "convoy db backups: --older-than 'soon': expected a duration like 30m, 12h, 7d or 2w"),
        (("db", "backups", "{p}", "--keep", "2"),
         "convoy db backups: --keep and --older-than select what --prune removes"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line(
    orders_db: str, tmp_path: Path, argv: tuple[str, ...], message: str
) -> None:
    loaded = write_policy(tmp_path)
    code, out, err = cli(*(a.format(p=loaded.path) for a in argv))
    assert (code, out, err) == (2, "", message + "\n")


def test_unreachable_database_is_one_line(
    orders_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = write_policy(tmp_path)
    monkeypatch.setenv("AIRFLOW_CONN_ORDERS_DB", "postgresql://u:secret@127.0.0.1:1/x")
    for argv in (("db", "info"), ("db", "validate"), ("db", "backups")):
        code, _out, err = cli(*argv, str(loaded.path))
        assert code == 1
        assert len(err.splitlines()) == 1
        assert err.startswith(f"convoy {' '.join(argv)}: ")
        assert "secret" not in err
        assert "Traceback" not in err
    code, _, err = cli("db", "repair", str(loaded.path), "--version", "1", "--yes")
    assert code == 1
    assert len(err.splitlines()) == 1
    assert "secret" not in err


def tables(conninfo: str) -> set[str]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'convoy_backup'"
        ).fetchall()
    return {r[0] for r in rows}


def test_backups_list_and_prune_keep_the_newest_and_unfinished_runs(
    airflow_db: None, orders_db: str, tmp_path: Path
) -> None:
    loaded = migrated(orders_db, tmp_path, transform=True)
    engine = PostgresEngine(orders_db)
    engine.transform(ctx(loaded, "orders", "run-1"), "fill-status")
    engine.complete(ctx(loaded, "orders", "run-1"))
    # run-2: finished; run-3: its transform still has its triggers installed (not finished)
    for run_id in ("run-2", "run-3"):
        (tmp_path / "migrations" / "orders" / f"V{run_id[-1]}1__c.sql").write_text(
            f"ALTER TABLE public.orders ADD COLUMN c{run_id[-1]} int;\n"
        )
        with psycopg.connect(orders_db, autocommit=True) as conn:
            conn.execute("UPDATE public.orders SET status = NULL WHERE id < 5")
        c = ctx(loaded, "orders", run_id)
        engine.backup(c)
        engine.migrate(c)
        engine.transform(c, "fill-status")
        if run_id == "run-2":
            engine.complete(c)
    # run-4, the newest, only backed up
    (tmp_path / "migrations" / "orders" / "V41__d.sql").write_text(
        "ALTER TABLE public.orders ADD COLUMN d int;\n"
    )
    engine.backup(ctx(loaded, "orders", "run-4"))

    code, out, err = cli("db", "backups", str(loaded.path))
    assert code == 0, err
    assert out.splitlines()[0].startswith("orders: 4 runs, ")
    assert "snapshot: convoy_backup." in out
    assert "<- public.orders" in out
    assert "undo: convoy_backup.u_" in out
    code, out, _ = cli("db", "backups", str(loaded.path), "--json")
    runs = json.loads(out)["datastores"][0]["runs"]
    assert [r["run_id"] for r in runs] == ["run-1", "run-2", "run-3", "run-4"]
    assert all(r["size_bytes"] > 0 for r in runs)
    before = tables(orders_db)

    code, out, err = cli(
        "db", "backups", str(loaded.path), "--prune", "--older-than", "0s", "--yes"
    )
    assert code == 0, err
    assert "run run-1" in out
    assert "pruned" in out
    assert "kept: transform triggers still installed (run not finished)" in out
    assert "kept: newest run of the datastore" in out
    code, out, _ = cli("db", "backups", str(loaded.path), "--json")
    assert [r["run_id"] for r in json.loads(out)["datastores"][0]["runs"]] == ["run-3", "run-4"]
    gone = before - tables(orders_db)
    assert gone
    assert all(t.startswith(("u_", "a_")) or "__public__orders" in t for t in gone)
    # what was kept still reverts: run-3's rollback works after the prune
    engine.revert(ctx(loaded, "orders", "run-3"))
    # the revert left run-3's unpacked before-images (u_..._r): pruned with the run
    assert any(t.endswith("_r") for t in tables(orders_db))
    code, out, err = cli(
        "db", "backups", str(loaded.path), "--prune", "--older-than", "0s", "--yes"
    )
    assert code == 0, err
    assert "run run-3" in out
    assert not any(t.startswith("u_") for t in tables(orders_db))
