"""Flyway ``info`` for both engines: migration files on disk against the recorded attempts.

Each engine's history is first normalised to :class:`Attempt` (the latest
attempt of a version that was not repaired decides its state); then every
file and every recorded version becomes one :class:`~convoy.operate.model.VersionRow`.
Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from convoy.operate.model import DatastoreState, Verdict, VersionRow, VersionState, worst
from convoy.policy.migrations import MigrationFile, parse_version

AttemptState = Literal["applied", "failed", "running", "rolled-back", "reverted", "baseline"]


@dataclass(frozen=True)
class Attempt:
    version: str
    description: str
    state: AttemptState
    checksum: str | None
    run_id: str
    installed_on: dt.datetime | None
    reverted_by: str | None = None

    @property
    def key(self) -> tuple[int, ...]:
        return parse_version(self.version)


def _text(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


def version_rows(files: Sequence[MigrationFile], attempts: Sequence[Attempt]) -> list[VersionRow]:
    """One row per version (files and recorded attempts), in version order."""
    latest: dict[tuple[int, ...], Attempt] = {}
    baselines = [a for a in attempts if a.state == "baseline"]
    for a in attempts:
        if a.state != "baseline":
            latest[a.key] = a  # attempts come oldest first
    base = max((b.key for b in baselines), default=None)
    top_applied = max(
        [v for v, a in latest.items() if a.state == "applied"] + ([base] if base else []),
        default=None,
    )
    by_version = {f.version: f for f in files}
    rows: list[VersionRow] = [
        VersionRow(
            version=b.version,
            description=b.description,
            state="baseline",
            checksum=None,
            file_checksum=None,
            file=None,
            run_id=b.run_id,
            installed_on=b.installed_on,
        )
        for b in baselines
    ]
    for version in sorted(set(by_version) | set(latest)):
        rows.append(_row(version, by_version.get(version), latest.get(version), base, top_applied))
    return rows


def _row(
    version: tuple[int, ...],
    f: MigrationFile | None,
    a: Attempt | None,
    base: tuple[int, ...] | None,
    top_applied: tuple[int, ...] | None,
) -> VersionRow:
    def row(state: VersionState, note: str = "", reverted_by: str | None = None) -> VersionRow:
        return VersionRow(
            version=_text(version),
            description=f.description if f else (a.description if a else ""),
            state=state,
            checksum=a.checksum if a and a.state != "rolled-back" else None,
            file_checksum=f.checksum if f else None,
            file=f.path.name if f else None,
            run_id=a.run_id if a else None,
            installed_on=a.installed_on if a else None,
            reverted_by=reverted_by,
            note=note,
        )

    if a is None or a.state == "rolled-back":
        note = f"attempt in run {a.run_id} failed and was rolled back" if a else ""
        if base is not None and version <= base:
            return row("below baseline", note)
        if top_applied is not None and version < top_applied:
            return row(
                "out of order", f"lower than applied {_text(top_applied)}: give it a higher version"
            )
        return row("pending", note)
    if a.state == "applied":
        if f is None:
            return row("missing", "applied, but no file on disk")
        if a.checksum is not None and a.checksum != f.checksum:
            return row("edited", f"file edited after it was applied (checksum now {f.checksum})")
        return row("applied")
    if a.state == "reverted":
        return row(
            "reverted",
            f"reverted by run {a.reverted_by}" if a.reverted_by else "reverted",
            a.reverted_by,
        )
    if a.state == "running":
        return row("running", "being applied now")
    return row("failed", "failed part-way: fix the database, then `convoy db repair`")


def judge_versions(rows: Sequence[VersionRow]) -> tuple[Verdict, list[str]]:
    """The verdict the versions give a datastore, with the reasons."""
    verdicts: list[Verdict] = []
    reasons: list[str] = []

    def note(verdict: Verdict, states: tuple[str, ...], what: str) -> None:
        found = [r.version for r in rows if r.state in states]
        if found:
            verdicts.append(verdict)
            reasons.append(f"{what}: {', '.join(found)}")

    note("degraded", ("failed",), "failed (needs repair)")
    note("degraded", ("out of order",), "out of order")
    note("drift", ("edited",), "edited after they were applied")
    note("drift", ("missing",), "applied but missing on disk")
    note("pending", ("pending",), "pending")
    note("pending", ("running",), "being applied")
    reverted = [r for r in rows if r.state == "reverted"]
    if reverted:
        verdicts.append("pending")
        by = sorted({r.reverted_by or "?" for r in reverted})
        reasons.append(
            f"reverted: {', '.join(r.version for r in reverted)} (by run {', '.join(by)})"
        )
    return worst(verdicts), reasons


def judge_datastore(state: DatastoreState) -> DatastoreState:
    """``state`` with its verdict and reasons from versions, lock and checkpoints."""
    import dataclasses

    verdict, reasons = judge_versions(state.versions)
    verdicts: list[Verdict] = [verdict]
    if state.lock:
        verdicts.append("pending")
        reasons.append(f"lock held by {state.lock}")
    if state.unfinished:
        runs = sorted({c.run_id for c in state.unfinished})
        names = sorted({c.transform for c in state.unfinished})
        reasons.append(
            f"unfinished transform checkpoints: {', '.join(names)} (run {', '.join(runs)})"
        )
        # a live run is working on them; without one, a run was interrupted
        verdicts.append("pending" if state.lock else "degraded")
    return dataclasses.replace(state, verdict=worst(verdicts), reasons=tuple(reasons))
