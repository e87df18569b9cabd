from __future__ import annotations

from pathlib import Path

import pytest

POLICIES = Path(__file__).resolve().parents[2] / "policies"

MINIMAL = """\
apiVersion: convoy/v1
kind: UpgradePolicy
metadata:
  name: minimal
kubernetes:
  namespace: default
  runnerImage: registry.example.com/convoy:0.1.0
services:
  - name: web
    workload: {kind: Deployment, name: web}
    containers: {web: nginx:1.27}
"""


@pytest.fixture
def policies_dir() -> Path:
    return POLICIES


@pytest.fixture
def minimal_text() -> str:
    return MINIMAL
