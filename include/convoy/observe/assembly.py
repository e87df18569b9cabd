"""Run report rows from the facts the ``report`` task gathered (pure; no Airflow import).

The task (:mod:`convoy.airflow.report_task`) reads task states and XCom; what
the run report shows is decided here, from plain values, so it can be tested
and reused without a run: one row per service and per datastore
(:class:`~convoy.observe.report.ServiceRow` / ``DatastoreRow`` as dicts), the
rollback lines, and the timings they yield.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FAILED_STATES = frozenset({"failed", "upstream_failed"})


def mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def results(value: Any) -> list[dict[str, Any]]:
    """A step's result(s): one dict, or one per mapped instance."""
    if isinstance(value, Mapping):
        return [dict(value)]
    if isinstance(value, list):
        return [dict(v) for v in value if isinstance(v, Mapping)]
    return []


def str_images(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in mapping(value).items()}


@dataclass(frozen=True)
class ServiceFacts:
    """What the run recorded for one service's rollout and its revert."""

    apply_id: str
    state: str | None
    result: Mapping[str, Any] = field(default_factory=dict)
    before: Mapping[str, Any] = field(default_factory=dict)
    revert: Mapping[str, Any] = field(default_factory=dict)
    analysis: Any = None


def service_rows(
    facts: Mapping[str, ServiceFacts], timings: dict[str, float]
) -> list[dict[str, Any]]:
    """One row per service (images before/after, status, readiness); fills ``timings``."""
    rows = []
    for service, f in facts.items():
        result = mapping(f.result)
        ready = result.get("readySeconds")
        if ready is not None:
            timings[f"rollout.{service}"] = float(ready)
        rows.append(
            {
                "name": service,
                "old_images": str_images(result.get("previousImages")) or str_images(f.before),
                "new_images": str_images(result.get("images")),
                "status": f.state or "pending",
                "ready_seconds": None if ready is None else float(ready),
                "reverted": bool(mapping(f.revert).get("reverted")),
                "analysis": results(f.analysis),
            }
        )
    return rows


def datastore_rows(
    summary: Mapping[str, Any],
    datastores: Mapping[str, list[str]],
    reverts: Mapping[str, Any],
    timings: dict[str, float],
) -> list[dict[str, Any]]:
    """One row per datastore from its stages' results and its revert's (``reverts[ds]``)."""
    steps: Mapping[str, Any] = summary["steps"]
    rows = []
    for ds, ids in datastores.items():
        applied: list[str] = []
        rows_done = 0
        validation = None
        for task_id in ids:
            found = results((steps.get(task_id) or {}).get("result"))
            leaf = task_id.rsplit(".", 1)[-1]
            if leaf == "migrate":
                applied += [
                    str(m.get("version"))
                    for r in found
                    for m in r.get("applied") or ()
                    if isinstance(m, Mapping) and m.get("status") == "applied"
                ]
            elif leaf.startswith("transform_"):
                rows_done += sum(int(r.get("rows_done") or 0) for r in found)
                elapsed = sum(float(r.get("elapsed_s") or 0.0) for r in found)
                if found:
                    timings[f"{ds}.{leaf}"] = elapsed
            elif leaf == "validate" and found:
                validation = found[0]
        revert = mapping(reverts.get(ds))
        inner = mapping(revert.get("result"))
        undone = [str(v) for v in inner.get("undone") or ()]
        undone += [str(v) for v in inner.get("restored_from_backup") or ()]
        rows.append(
            {
                "name": ds,
                "migrations_applied": applied,
                "migrations_reverted": undone,
                "rows_transformed": rows_done,
                "validation": validation,
                "reverted": bool(revert.get("reverted")),
                "rows_restored": int(inner.get("rows_restored") or 0),
                "rows_conflicting": int(inner.get("rows_conflicting") or 0),
                "rows_gone": int(inner.get("rows_gone") or 0),
                "conflicts": [str(c) for c in inner.get("conflicts") or ()],
                "refused": [str(r) for r in revert.get("refused") or ()],
            }
        )
    return rows


def rollback_steps(summary: Mapping[str, Any]) -> list[str]:
    """What the reverts did, in the order they ran."""
    done = []
    for task_id, entry in summary["reverts"].items():
        result = mapping(entry.get("result"))
        if entry.get("state") in FAILED_STATES:
            done.append(f"{task_id}: {entry['state']}")
        elif result.get("reverted") and "images" in result:
            images = ", ".join(f"{c} -> {i}" for c, i in str_images(result["images"]).items())
            done.append(f"image {result.get('service')}: {images}")
        elif result.get("reverted"):
            inner = mapping(result.get("result"))
            what = [*(inner.get("undone") or ()), *(inner.get("restored_from_backup") or ())]
            listed = ", ".join(str(v) for v in what) or "no migration"
            done.append(
                f"data {result.get('datastore')}: reverted {listed}; "
                f"{int(inner.get('rows_restored') or 0)} rows restored, "
                f"{int(inner.get('rows_conflicting') or 0)} conflicts kept"
            )
    return done


def final_state(approval: str | None, failed: bool) -> str:
    """The report's final state: a withheld approval's (``rejected`` ...), else the outcome."""
    return approval or ("failed" if failed else "success")
