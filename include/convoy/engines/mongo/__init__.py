"""MongoDB datastore engine: migrations, batched transforms, snapshot backup and revert."""

from __future__ import annotations

from convoy.engines.mongo.config import FAULT_POINTS, FaultHook, MongoConfig
from convoy.engines.mongo.engine import MongoEngine

__all__ = ["FAULT_POINTS", "FaultHook", "MongoConfig", "MongoEngine"]
