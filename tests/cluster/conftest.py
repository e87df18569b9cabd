"""Fixtures of the opt-in real-cluster lane (``KUBECONFIG``): client and throw-away namespace."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def api_client() -> Any:
    from kubernetes import config

    return config.new_client_from_config(config_file=os.environ["KUBECONFIG"])


@pytest.fixture
def namespace(api_client: Any) -> Iterator[str]:
    from kubernetes import client

    name = f"convoy-test-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": name, "labels": {"convoy.dev/test": "true"}}})
    try:
        yield name
    finally:
        core.delete_namespace(name)
