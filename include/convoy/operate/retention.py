"""Which kept backups may go: the retention rule of ``convoy db backups --prune``.

Never pruned, whatever ``--keep`` or ``--older-than`` say:

- the newest run of each datastore (its rollback may still be asked for);
- any run that is not finished: queued or running in Airflow, or that left
  work in flight in the datastore (transform triggers, unfinished
  checkpoints, a migration still marked running).

Of the rest, ``--keep N`` prunes all but the N newest runs of each datastore
and ``--older-than D`` prunes runs whose backup is older than D (both given:
a run must satisfy both to go). Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping, Sequence

from convoy.operate.model import BackupRun

_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> dt.timedelta:
    """``30m``, ``12h``, ``7d``, ``2w`` (``s`` seconds too)."""
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise ValueError(f"{text!r}: expected a duration like 30m, 12h, 7d or 2w")
    return dt.timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def protect(runs: Sequence[BackupRun], unfinished: Mapping[str, str]) -> list[BackupRun]:
    """``runs`` (of one datastore, any order) with ``protected`` set where the rule says so."""
    newest = max(
        runs,
        key=lambda r: (r.created or dt.datetime.max.replace(tzinfo=dt.UTC), r.run_id),
        default=None,
    )
    out = []
    for run in runs:
        reason = unfinished.get(run.run_id)
        if reason is None and newest is not None and run.run_id == newest.run_id:
            reason = "newest run of the datastore (its rollback may still be needed)"
        out.append(dataclasses.replace(run, protected=reason))
    return out


def select(
    runs: Sequence[BackupRun],
    *,
    keep: int | None,
    older_than: dt.timedelta | None,
    now: dt.datetime,
) -> list[BackupRun]:
    """The runs (of one datastore, already :func:`protect`-ed) to prune."""
    ordered = sorted(
        runs,
        key=lambda r: (r.created or dt.datetime.max.replace(tzinfo=dt.UTC), r.run_id),
        reverse=True,
    )
    chosen = []
    for index, run in enumerate(ordered):
        if run.protected is not None:
            continue
        if keep is not None and index < keep:
            continue
        if older_than is not None and (run.created is None or run.created > now - older_than):
            continue
        chosen.append(run)
    return chosen
