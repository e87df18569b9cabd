"""Fixtures of the observability integration tests: a real UDP StatsD listener."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from statsd_listener import StatsdListener


@pytest.fixture
def statsd() -> Iterator[StatsdListener]:
    listener = StatsdListener()
    try:
        yield listener
    finally:
        listener.close()
