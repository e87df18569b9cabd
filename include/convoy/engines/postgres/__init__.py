"""PostgreSQL datastore engine: migrations, batched transforms, backup and revert."""

from __future__ import annotations

from convoy.engines.postgres.config import PostgresConfig
from convoy.engines.postgres.engine import PostgresEngine

__all__ = ["PostgresConfig", "PostgresEngine"]
