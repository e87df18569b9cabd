"""Load a policy file: YAML -> models -> semantic checks, every error with its position.

TEMPORARY STUB: replaced by the positional loader.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from convoy.policy.errors import Diagnostic, PolicyError
from convoy.policy.models import Policy


@dataclass(frozen=True)
class LoadedPolicy:
    """A valid policy with where it came from."""

    path: Path
    policy: Policy
    source_sha256: str
    warnings: tuple[Diagnostic, ...] = field(default=())

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def load_policy(path: str | Path) -> LoadedPolicy:
    p = Path(path)
    raw = p.read_bytes()
    try:
        data = yaml.safe_load(raw)
        policy = Policy.model_validate(data)
    except Exception as exc:
        raise PolicyError([Diagnostic(str(p), 1, 1, "", str(exc))]) from exc
    return LoadedPolicy(p, policy, hashlib.sha256(raw).hexdigest())


def discover_policies(directory: str | Path) -> list[Path]:
    d = Path(directory)
    return sorted([*d.glob("*.yaml"), *d.glob("*.yml")])
