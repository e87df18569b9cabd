"""A MongoDB client per test: mongomock by default, a real server when ``MONGO_URI`` is set.

Tests marked ``mongo_server`` need a real server and are skipped without
``MONGO_URI``. On a real server each test uses its own database, dropped after.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mongo_engine_helpers import MongoSetup

_counter = itertools.count()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("MONGO_URI"):
        return
    skip = pytest.mark.skip(reason="needs a real MongoDB: set MONGO_URI (see docs/mongo.md)")
    for item in items:
        if item.get_closest_marker("mongo_server"):
            item.add_marker(skip)


@pytest.fixture
def mongo_client() -> Iterator[Any]:
    uri = os.environ.get("MONGO_URI")
    if uri:
        import pymongo

        client: Any = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    else:
        import mongomock

        client = mongomock.MongoClient()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def mongo(mongo_client: Any, tmp_path: Path) -> Iterator[MongoSetup]:
    name = f"convoy_test_{os.getpid()}_{next(_counter)}"
    setup = MongoSetup(mongo_client, name, tmp_path)
    try:
        yield setup
    finally:
        mongo_client.drop_database(name)
