"""Fixtures of the DAG tests: policy files on disk and DagBags over them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "convoy_policies.py"


@pytest.fixture
def write_policy(tmp_path: Path) -> Callable[..., Path]:
    """Write a policy (dict or raw text) as ``<tmp>/policies/<file>``."""
    root = tmp_path / "policies"
    root.mkdir()

    def write(file: str, content: dict[str, Any] | str) -> Path:
        path = root / file
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text)
        return path

    return write


@pytest.fixture
def load_dagbag(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """DagBag of ``dags/convoy_policies.py`` over a policies directory (and env)."""
    from airflow.dag_processing.dagbag import DagBag

    def load(policies: Path | None = None, **env: str) -> Any:
        if policies is not None:
            monkeypatch.setenv("CONVOY_POLICIES_DIR", str(policies))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return DagBag(dag_folder=str(DAG_FILE))

    return load
