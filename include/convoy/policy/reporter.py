"""Collects diagnostics located by field path in one policy document."""

from __future__ import annotations

from dataclasses import dataclass, field

from convoy.policy.errors import Diagnostic, Severity
from convoy.policy.source import Document, FieldPath, Mark, render_path


@dataclass
class Reporter:
    """Turns (field path, message) into positioned diagnostics for one file."""

    file: str
    doc: Document
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, path: FieldPath, message: str, *, at_key: bool = False) -> None:
        self._add(path, message, "error", at_key=at_key)

    def warning(self, path: FieldPath, message: str, *, at_key: bool = False) -> None:
        self._add(path, message, "warning", at_key=at_key)

    def at(self, mark: Mark, path: FieldPath, message: str) -> None:
        """An error at an explicit position (e.g. a missing field's parent)."""
        self.diagnostics.append(
            Diagnostic(self.file, mark.line, mark.column, render_path(path), message)
        )

    def _add(self, path: FieldPath, message: str, severity: Severity, *, at_key: bool) -> None:
        mark = self.doc.key_mark(path) if at_key else self.doc.value_mark(path)
        self.diagnostics.append(
            Diagnostic(self.file, mark.line, mark.column, render_path(path), message, severity)
        )
