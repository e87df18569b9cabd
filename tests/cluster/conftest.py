"""Fixtures of the opt-in real-cluster lane (``KUBECONFIG``): client and throw-away namespace."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
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


@pytest.fixture
def pause_deployment(api_client: Any, namespace: str) -> Callable[..., Any]:
    """Creates Deployment ``pause`` (one container ``pause`` on ``image``) and waits it out.

    Returns the ``RolloutRunner`` that watched it; the wait is the initial
    creation, not what a test is about.
    """
    from kubernetes import client

    from convoy.rollout import RolloutRunner, Target

    def create(image: str, *, replicas: int) -> Any:
        labels = {"app": "pause"}
        client.AppsV1Api(api_client).create_namespaced_deployment(
            namespace,
            {
                "metadata": {"name": "pause", "labels": labels},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "pause", "image": image}]},
                    },
                },
            },
        )
        runner = RolloutRunner(api_client, stall_seconds=60)
        target = Target(namespace, "Deployment", "pause")
        deadline = time.monotonic() + 180
        while runner.status(target).status != "complete" and time.monotonic() < deadline:
            time.sleep(2)
        return runner

    return create
