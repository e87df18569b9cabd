"""Diagnostics and the one exception type of :mod:`convoy.policy`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from convoy.redaction import redact

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem in a policy, located by file, line, column and field path."""

    file: str
    line: int
    column: int
    path: str
    message: str
    severity: Severity = "error"

    def __post_init__(self) -> None:
        # Messages quote policy values, which may carry a pasted credential; every
        # consumer (CLI, DAG docs, logs, the Upgrades page) gets the redacted text.
        object.__setattr__(self, "message", redact(self.message))
        object.__setattr__(self, "path", redact(self.path))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        prefix = "warning: " if self.severity == "warning" else ""
        field = f"{self.path}: " if self.path else ""
        return f"{where}: {prefix}{field}{self.message}"


class PolicyError(Exception):
    """A policy file is not valid; carries every diagnostic found in it."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(set(diagnostics))
        super().__init__("\n".join(str(d) for d in self.diagnostics))


def format_diagnostics(diagnostics: Iterable[Diagnostic]) -> str:
    """One line per diagnostic, in file/line/column order."""
    return "\n".join(str(d) for d in sorted(set(diagnostics)))
