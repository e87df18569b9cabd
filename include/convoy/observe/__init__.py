"""Observability: progress lines, metrics and run reports."""
