"""Policies of the page: each file's validation state (errors with file:line) and plan."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convoy.plan import PlanError, build_plan
from convoy.policy import Diagnostic, PolicyError, declared_name, discover_policies, load_policy
from convoy.redaction import get_logger

log = get_logger(__name__)

#: Same variable as ``convoy.airflow.config.POLICIES_DIR_ENV`` (not imported: that
#: package pulls in the DAG builder, which the api-server does not need).
POLICIES_DIR_ENV = "CONVOY_POLICIES_DIR"
#: The placeholder DAG id rules of ``convoy.airflow.registry`` (an invalid policy's DAG).
_DAG_ID_OK = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


def policies_dir(dags_folder: str | Path, environ: Mapping[str, str] | None = None) -> Path:
    """``$CONVOY_POLICIES_DIR`` if set, else ``<dags_folder>/policies`` (as the DAG file does)."""
    env = os.environ if environ is None else environ
    return Path(env.get(POLICIES_DIR_ENV) or Path(dags_folder) / "policies")


@dataclass(frozen=True)
class DiagnosticView:
    """One problem of a policy file, located by file:line:column and field path."""

    file: str
    line: int
    column: int
    path: str
    message: str
    severity: str

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "severity": self.severity,
        }


@dataclass(frozen=True)
class PolicyView:
    """A policy file as the page shows it."""

    file: str
    dag_id: str | None
    valid: bool
    description: str = ""
    owner: str = ""
    schedule: str | None = None
    errors: tuple[DiagnosticView, ...] = ()
    warnings: tuple[DiagnosticView, ...] = ()
    plan: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def waves(self) -> list[list[str]]:
        """Service names per wave, in order."""
        if not self.plan:
            return []
        return [[str(s["service"]) for s in w.get("steps", [])] for w in self.plan.get("waves", [])]

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "dag_id": self.dag_id,
            "valid": self.valid,
            "description": self.description,
            "owner": self.owner,
            "schedule": self.schedule,
            "errors": [d.to_dict() for d in self.errors],
            "warnings": [d.to_dict() for d in self.warnings],
            "waves": self.waves,
            "plan": dict(self.plan) if self.plan else None,
        }


def gather_policies(directory: str | Path) -> list[PolicyView]:
    """Every policy file of ``directory`` (sorted), valid or not; never raises for a bad file."""
    base = Path(directory)
    return [_view(path, base) for path in discover_policies(base)]


def _view(path: Path, base: Path) -> PolicyView:
    name = path.name
    try:
        loaded = load_policy(path)
    except PolicyError as exc:
        diagnostics = _views(exc.diagnostics, path, name)
        return PolicyView(
            file=name,
            dag_id=placeholder_dag_id(path),
            valid=False,
            errors=tuple(d for d in diagnostics if d.severity == "error"),
            warnings=tuple(d for d in diagnostics if d.severity != "error"),
        )
    except Exception as exc:  # an unreadable file must not take the page down
        log.warning("cannot load policy %s: %s", path, exc)
        return PolicyView(
            file=name,
            dag_id=placeholder_dag_id(path),
            valid=False,
            errors=(DiagnosticView(name, 1, 1, "", f"cannot load: {exc}", "error"),),
        )
    policy = loaded.policy
    meta = policy.metadata
    warnings = _views(loaded.warnings, path, name)
    try:
        plan: Mapping[str, Any] | None = build_plan(loaded).to_dict()
    except PlanError as exc:
        return PolicyView(
            file=name,
            dag_id=meta.name,
            valid=False,
            description=meta.description or "",
            owner=meta.owner or "",
            errors=(DiagnosticView(name, 1, 1, "", f"plan: {exc}", "error"),),
            warnings=warnings,
        )
    return PolicyView(
        file=name,
        dag_id=meta.name,
        valid=True,
        description=meta.description or "",
        owner=meta.owner or "",
        schedule=policy.schedule,
        warnings=warnings,
        plan=plan,
    )


def _views(
    diagnostics: tuple[Diagnostic, ...] | list[Diagnostic], path: Path, name: str
) -> tuple[DiagnosticView, ...]:
    """Diagnostics with the file shown relative to the policies directory (no server paths)."""
    full = str(path)
    out = []
    for d in sorted(set(diagnostics)):
        file = name if d.file == full else Path(d.file).name
        out.append(DiagnosticView(file, d.line, d.column, d.path, d.message, d.severity))
    return tuple(out)


def placeholder_dag_id(path: Path) -> str:
    """The DAG id an invalid policy is registered under: its readable ``metadata.name``,
    else ``convoy-invalid-<file stem>`` (as ``convoy.airflow.registry`` names it)."""
    name = declared_name(path)
    if name is not None and _DAG_ID_OK.match(name):
        return name
    return "convoy-invalid-" + re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem)[:150]
