"""Errors of the MongoDB engine beyond the shared ones in :mod:`convoy.engines.errors`.

Candidates for ``engines/errors.py`` (see docs/mongo.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from convoy.engines.errors import EngineError


class InvalidMongoSpec(EngineError):
    """A transform's filter/update is refused (JavaScript, unknown operator, reserved field)."""

    def __init__(self, transform: str, problems: Sequence[str]) -> None:
        self.transform = transform
        self.problems = tuple(problems)
        super().__init__(
            f"transform {transform!r} refused, nothing was changed: " + "; ".join(self.problems)
        )


class UnsafeCollectionName(EngineError):
    """A collection name that convoy refuses to use."""

    def __init__(self, value: str, field: str, reason: str) -> None:
        self.value = value
        self.field = field
        super().__init__(f"{field}: collection name {value!r} {reason}")


class UnknownCollection(EngineError):
    """A transform names a collection that does not exist in the database."""

    def __init__(self, collection: str, database: str, field: str) -> None:
        self.collection = collection
        self.database = database
        self.field = field
        super().__init__(
            f"{field}: collection {collection!r} does not exist in database {database!r}; "
            "nothing was changed"
        )


class LockLost(EngineError):
    """The lock document was taken over (it expired) while this run was working."""

    retriable = True

    def __init__(self, lock: str, owner: str) -> None:
        self.lock = lock
        self.owner = owner
        super().__init__(
            f"lock {lock!r} is no longer held by this run (now: {owner}); stopped before the "
            "next write. Raise lock_ttl_s if work between renewals takes longer"
        )
