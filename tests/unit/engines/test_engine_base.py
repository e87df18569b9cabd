from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from convoy.engines.base import (
    Action,
    DatastoreEngine,
    MigrateResult,
    MigrationRun,
    Partition,
    RunContext,
)
from convoy.engines.errors import ChecksumMismatch, LockHolder, LockTimeout
from convoy.engines.postgres import PostgresEngine
from convoy.engines.postgres.locks import lock_key
from convoy.plan.specs import PostgresSpec

DS = PostgresSpec(name="orders", conn_id="db", migrations="migrations/orders")


def _ctx(**kw: object) -> RunContext:
    return RunContext("shop", "manual__1", DS, Path("/policies"), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("start", "end", "key"),
    [
        (None, None, "run:manual__1"),
        (
            dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
            "2026-01-01T00:00:00+00:00/2026-01-02T00:00:00+00:00",
        ),
    ],
)
def test_interval_key(start: dt.datetime | None, end: dt.datetime | None, key: str) -> None:
    assert _ctx(data_interval_start=start, data_interval_end=end).interval_key == key


def test_migrations_dir_is_relative_to_the_policy() -> None:
    assert _ctx().migrations_dir == Path("/policies/migrations/orders")


def test_partition_round_trips_through_json() -> None:
    p = Partition("t", 1, 4, "100", None)
    again = Partition.from_dict(json.loads(json.dumps(p.to_dict())))
    assert again == p
    assert again.id == "2of4[100,)"


def test_results_are_json() -> None:
    run = MigrationRun("1.1", "add", "ab", True, 12, "applied")
    result = MigrateResult("orders", False, (run,), ("1.1",), ())
    data = json.loads(json.dumps(result.to_dict()))
    assert data["applied"][0]["version"] == "1.1"
    assert Action("migrate", "apply", "V1__x").to_dict()["target"] == "V1__x"


def test_postgres_engine_implements_the_interface_and_hides_the_password() -> None:
    engine = PostgresEngine("postgresql://app:hunter2@db/shop")
    assert isinstance(engine, DatastoreEngine)
    assert "hunter2" not in repr(engine)


def test_lock_key_is_stable_signed_64_bit() -> None:
    k = lock_key("convoy:convoy:datastore:orders")
    assert k == lock_key("convoy:convoy:datastore:orders")
    assert -(2**63) <= k < 2**63
    assert k != lock_key("convoy:convoy:datastore:catalog")


def test_errors_carry_their_objects() -> None:
    err = ChecksumMismatch("2", "aaa", "bbb", "V2__x.sql")
    assert (err.version, err.applied, err.current) == ("2", "aaa", "bbb")
    assert "aaa" in str(err)
    assert "bbb" in str(err)
    timeout = LockTimeout("l", 1.5, [LockHolder(42, "convoy:shop/orders:migrate", "app", "idle")])
    assert "pid 42 (convoy:shop/orders:migrate, app)" in str(timeout)
