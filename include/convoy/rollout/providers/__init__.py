"""Metric providers of analyses: one number (or none) per query.

A provider is anything with ``measure(query) -> float | None``; ``None``
means "no data" (an empty result or NaN), :class:`ProviderError` means the
provider could not be asked or answered something unusable. Credentials live
in the provider object (built from an Airflow connection) and never appear in
a message, a log line or a result.
"""

from __future__ import annotations

from typing import Protocol


class ProviderError(Exception):
    """The provider could not be reached or its answer is not one number."""


class Provider(Protocol):
    def measure(self, query: str) -> float | None: ...


__all__ = ["Provider", "ProviderError"]
