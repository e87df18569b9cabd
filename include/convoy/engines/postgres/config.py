"""Settings of the PostgreSQL engine (defaults suit a production database)."""

from __future__ import annotations

from dataclasses import dataclass

from convoy.engines.postgres.sql import identifier


@dataclass(frozen=True)
class PostgresConfig:
    """Engine settings; the Airflow layer may override them per datastore.

    Timeouts are seconds. ``max_lock_wait_s``/``max_replication_lag_s`` are the
    bounds above which transforms pause; ``None`` disables that check.
    """

    schema: str = "convoy"
    backup_schema: str = "convoy_backup"
    lock_timeout_s: float = 5.0
    statement_timeout_s: float = 900.0
    advisory_lock_timeout_s: float = 60.0
    advisory_lock_poll_s: float = 0.5
    application_name: str = "convoy"
    pg_dump_path: str | None = None
    dump_dir: str | None = None
    max_rows_per_s: float | None = None
    max_replication_lag_s: float | None = 30.0
    max_lock_wait_s: float | None = 5.0
    throttle_check_s: float = 1.0
    max_pause_s: float = 900.0
    progress_interval_s: float = 5.0

    def __post_init__(self) -> None:
        identifier(self.schema, "schema")
        identifier(self.backup_schema, "backup_schema")


def pg_interval(seconds: float) -> str:
    """A GUC value for ``lock_timeout``/``statement_timeout`` (milliseconds)."""
    return f"{max(0, round(seconds * 1000))}ms"
