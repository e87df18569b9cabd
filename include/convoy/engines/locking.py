"""What every datastore lock shares: ``with lock:`` acquires and always releases."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class ScopedLock:
    """Base of the engines' locks; subclasses implement :meth:`acquire` and :meth:`release`."""

    def acquire(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
