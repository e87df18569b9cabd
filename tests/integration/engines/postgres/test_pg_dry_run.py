"""A dry run of every stage changes nothing in the database, even with a hostile ``where``.

Each check takes :func:`db_state.database_state` (every schema's structure and
rows, convoy's schemas included, relations, functions, triggers, sequence
positions, roles) before and after. The hostile expressions call functions
that insert a row, draw from a sequence (which no rollback undoes) and create
a table: run outside a rolled-back read-only transaction, any of them leaves
a trace.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from db_state import database_state, differences
from pg_engine_helpers import PgDb

from convoy.engines.base import Partition
from convoy.engines.errors import EngineError
from convoy.engines.postgres.dry_run import WriteRefused
from convoy.policy.models import PostgresDatastore

pytestmark = pytest.mark.integration

SETUP = """
CREATE TABLE public.orders (id bigserial PRIMARY KEY, status text, amount int NOT NULL);
INSERT INTO public.orders (status, amount) SELECT NULL, g FROM generate_series(1, 500) g;
CREATE TABLE public.canary (id bigint);
CREATE SEQUENCE public.canary_seq;
CREATE FUNCTION public.hostile() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  CREATE TABLE IF NOT EXISTS public.pwned (x int);
  INSERT INTO public.canary VALUES (1);
  RETURN true;
END $$;
CREATE FUNCTION public.sneaky() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  PERFORM nextval('public.canary_seq');
  RETURN true;
END $$;
"""
MIGRATIONS = {
    "V1__note.sql": "ALTER TABLE public.orders ADD COLUMN note text;",
    "U1__note.sql": "ALTER TABLE public.orders DROP COLUMN note;",
    "V2__audit.sql": "CREATE TABLE public.audit (id bigint);",
    "U2__audit.sql": "DROP TABLE public.audit;",
}


def _ds(pg: PgDb, where: str = "status IS NULL", **set_: str) -> PostgresDatastore:
    return pg.datastore(
        backup="snapshot",
        transforms=[
            {
                "name": "fill",
                "table": "public.orders",
                "key": "id",
                "batchSize": 100,
                "where": where,
                "set": set_ or {"status": "'open'"},
            }
        ],
        validation=[
            {
                "table": "public.orders",
                "expectations": [{"expect_column_values_to_not_be_null": {"column": "amount"}}],
            }
        ],
    )


def _setup(pg: PgDb) -> None:
    pg.execute(SETUP)
    pg.write_migrations(MIGRATIONS)


def _dry_run_every_stage(
    pg: PgDb, ds: PostgresDatastore, run_id: str, *, validate_in: Path | None = None
) -> dict[str, Any]:
    """Each stage's dry run (and the read-only stages): its result, or the engine error."""
    engine, ctx = pg.engine(), pg.ctx(ds, run_id=run_id)
    outcomes: dict[str, Any] = {}

    def attempt(name: str, stage: Callable[[], Any]) -> None:
        try:
            outcomes[name] = stage()
        except EngineError as exc:
            outcomes[name] = exc

    attempt("plan", lambda: engine.plan(ctx))
    attempt("history", lambda: engine.history(ctx))
    attempt("backup", lambda: engine.backup(ctx, dry_run=True))
    attempt("migrate", lambda: engine.migrate(ctx, dry_run=True))
    attempt("partitions", lambda: engine.partitions(ctx, "fill", 4))
    attempt("transform", lambda: engine.transform(ctx, "fill", dry_run=True))
    part = Partition("fill", 1, 2, "250", None)
    attempt("transform-partition", lambda: engine.transform(ctx, "fill", part, dry_run=True))
    attempt("revert", lambda: engine.revert(ctx, dry_run=True))
    if validate_in is not None:
        from convoy.validation import validate_datastore

        outcomes["validate"] = validate_datastore(
            ds, conninfo=pg.conninfo, run_dir=validate_in, log=pg.logs.append
        )
    return outcomes


def _errors(outcomes: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in outcomes.items() if isinstance(v, Exception)}


def test_dry_run_of_every_stage_changes_nothing(pg: PgDb, tmp_path: Path) -> None:
    _setup(pg)
    before = database_state(pg.conninfo)
    outcomes = _dry_run_every_stage(pg, _ds(pg), "run-1", validate_in=tmp_path / "v")
    assert differences(before, database_state(pg.conninfo)) == []
    assert _errors(outcomes) == {}
    # ... and it still computed what a run would do
    assert outcomes["backup"].tables == ("public.audit", "public.orders")
    assert [(m.version, m.status) for m in outcomes["migrate"].applied] == [
        ("1", "rolled-back"),
        ("2", "rolled-back"),
    ]
    assert len(outcomes["partitions"]) == 4
    assert outcomes["transform"].rows_matching == 500
    assert outcomes["transform-partition"].rows_matching == 251  # keys 250-500
    assert outcomes["validate"].success
    assert not pg.scalar("SELECT to_regnamespace('convoy') IS NOT NULL")


def test_dry_runs_after_a_real_run_change_nothing(pg: PgDb, tmp_path: Path) -> None:
    """With convoy's schemas, history, checkpoints, before-images and triggers in place."""
    _setup(pg)
    ds = _ds(pg)
    engine, ctx = pg.engine(), pg.ctx(ds, run_id="run-1")
    engine.backup(ctx)
    engine.migrate(ctx)
    part = Partition("fill", 0, 2, None, "250")
    engine.transform(ctx, "fill", part)  # the other half stays to do
    before = database_state(pg.conninfo)
    for run_id in ("run-1", "run-2"):
        outcomes = _dry_run_every_stage(pg, ds, run_id)
        assert _errors(outcomes) == {}, run_id
        assert differences(before, database_state(pg.conninfo)) == [], run_id
    assert outcomes["backup"].tables == ("public.orders",)
    assert outcomes["migrate"].applied == ()
    assert outcomes["transform"].rows_matching == 251
    revert = _dry_run_every_stage(pg, ds, "run-1")["revert"]
    assert revert.dry_run
    assert revert.undone == ("2", "1")
    # The dry runs held no lock: the real run goes on at once.
    assert engine.transform(ctx, "fill", Partition("fill", 1, 2, "250", None)).rows_done == 251


def test_a_where_that_writes_is_refused_and_writes_nothing(pg: PgDb) -> None:
    _setup(pg)
    ds = _ds(pg, where="public.hostile() AND public.sneaky() AND status IS NULL")
    before = database_state(pg.conninfo)
    outcomes = _dry_run_every_stage(pg, ds, "run-1")
    assert differences(before, database_state(pg.conninfo)) == []
    errors = _errors(outcomes)
    assert set(errors) == {"partitions", "transform", "transform-partition"}
    for name in errors:
        assert isinstance(outcomes[name], WriteRefused)
        assert "in a read-only transaction" in errors[name]
    assert pg.scalar("SELECT to_regclass('public.pwned') IS NULL")
    # Positive control: the same function, outside a dry run, does write.
    pg.execute("SELECT public.hostile() AND public.sneaky()")
    after = database_state(pg.conninfo)
    assert "pwned" in str(after["relations"])
    assert after["sequences"] != before["sequences"]


def test_a_set_expression_that_writes_is_refused_before_the_batch_is_tried(pg: PgDb) -> None:
    """Only the sequence is touched, which a rolled-back trial batch would not undo."""
    _setup(pg)
    ds = _ds(pg, status="CASE WHEN public.sneaky() THEN 'open' END")
    before = database_state(pg.conninfo)
    outcomes = _dry_run_every_stage(pg, ds, "run-1")
    assert differences(before, database_state(pg.conninfo)) == []
    assert set(_errors(outcomes)) == {"transform", "transform-partition"}
    assert "nextval()" in str(outcomes["transform"])
    assert len(outcomes["partitions"]) == 4
