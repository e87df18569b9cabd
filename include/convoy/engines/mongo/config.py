"""Settings of the MongoDB engine (defaults suit a production replica set)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: ``hook(point, details)`` called by the engine at named points (see
#: :data:`FAULT_POINTS`); tests raise from it to simulate a crash there.
FaultHook = Callable[[str, Mapping[str, Any]], None]

#: Where the engine calls its fault hook.
FAULT_POINTS = frozenset(
    {
        "transform.before_write",  # documents of the batch read, nothing written yet
        "transform.after_images",  # before-images in the undo log, documents not yet updated
        "transform.after_update",  # documents updated and stamped, after-values not yet logged
        "transform.after_write",  # batch written with its after-values, checkpoint not yet
        "transform.before_strip",  # every batch done, markers not yet removed
        "migrate.after_up",  # up(db) returned, changelog still says running
        "revert.before_restore",  # a batch of undo entries compared, nothing restored yet
        "revert.after_restore",  # before-images written back, undo entries not yet marked
    }
)


@dataclass(frozen=True)
class MongoConfig:
    """Engine settings; the Airflow layer may override them per datastore.

    Collections live in the datastore's own database. Times are seconds.
    ``snapshot_collections`` are backed up besides those the run touches.
    ``catchup_passes``: after its ``_id``-ordered pass, a transform runs its
    filter again from the start at most this many times, so documents written
    behind its cursor are transformed too. ``undo_batch_size``: undo entries
    a revert compares and restores at a time.
    """

    changelog_collection: str = "convoy_changelog"
    locks_collection: str = "convoy_locks"
    checkpoints_collection: str = "convoy_checkpoints"
    backups_collection: str = "convoy_backups"
    undo_collection: str = "convoy_undo"
    backup_prefix: str = "convoy_backup__"
    marker_prefix: str = "_convoy_"
    lock_ttl_s: float = 60.0
    lock_wait_s: float = 60.0
    lock_poll_s: float = 0.5
    heartbeat: bool = True
    progress_interval_s: float = 5.0
    snapshot_collections: tuple[str, ...] = ()
    stream_batch_size: int = 1000
    catchup_passes: int = 3
    undo_batch_size: int = 1000

    def __post_init__(self) -> None:
        if self.lock_ttl_s <= 0 or self.lock_wait_s < 0 or self.lock_poll_s <= 0:
            raise ValueError("lock_ttl_s and lock_poll_s must be > 0, lock_wait_s >= 0")
        if self.catchup_passes < 0 or self.undo_batch_size < 1:
            raise ValueError("catchup_passes must be >= 0 and undo_batch_size >= 1")
        if not self.marker_prefix.startswith("_") or "." in self.marker_prefix:
            raise ValueError("marker_prefix must start with '_' and contain no '.'")

    @property
    def own_collections(self) -> frozenset[str]:
        """Collections the engine keeps its state in (never user data)."""
        return frozenset(
            {
                self.changelog_collection,
                self.locks_collection,
                self.checkpoints_collection,
                self.backups_collection,
                self.undo_collection,
            }
        )

    def is_own(self, collection: str) -> bool:
        return collection in self.own_collections or collection.startswith(self.backup_prefix)
