"""Reading the files a policy names: regular files only, bounded in size, inside its directory.

Policies come from a repository that many people commit to, and the same
loader runs in Airflow's DAG processor. A FIFO, a device or a socket would
block it or read from something that is not a file, a huge file would exhaust
its memory, and a symbolic link could make it read (and send to a database)
any file the process can read. So every file is checked with ``stat`` before it
is opened, opened without blocking, checked again on the open descriptor, and
read up to a limit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: Largest policy file read. Real policies are a few KiB; 1 MiB leaves ample room.
POLICY_MAX_BYTES = 1 << 20
#: Largest migration or undo file read; they are hashed when the policy is loaded.
MIGRATION_MAX_BYTES = 16 << 20

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


class FileRefused(Exception):
    """A file convoy will not read; the message says why, without quoting its content."""


def describe_size(limit: int) -> str:
    """``1048576`` -> ``1 MiB (1048576 bytes)``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= size and limit % size == 0:
            return f"{limit // size} {unit} ({limit} bytes)"
    return f"{limit} bytes"


def file_kind(mode: int) -> str | None:
    """What a non-regular file is (``a FIFO (named pipe)``...), or None for a regular file."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def read_regular(path: Path, limit: int, what: str = "file") -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes.

    A non-regular file is refused from ``stat`` alone and never opened for
    reading; the open itself does not block, and the descriptor must still be
    the regular file that was checked, so swapping in a FIFO cannot hang us.
    """
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise FileRefused("file not found") from None
    except OSError as exc:
        raise FileRefused(f"cannot read file: {exc.strerror or type(exc).__name__}") from None
    _check(before, limit, what)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise FileRefused(f"cannot read file: {exc.strerror or type(exc).__name__}") from None
    try:
        after = os.fstat(fd)
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            raise FileRefused("file was replaced while being read; try again")
        _check(after, limit, what)
        chunks: list[bytes] = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except BlockingIOError:
        raise FileRefused("cannot read file: it would block") from None
    except OSError as exc:
        raise FileRefused(f"cannot read file: {exc.strerror or type(exc).__name__}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise FileRefused(_too_big(what, None, limit))
    return data


def _check(st: os.stat_result, limit: int, what: str) -> None:
    kind = file_kind(st.st_mode)
    if kind is not None:
        raise FileRefused(f"is {kind}, not a regular file; convoy reads only regular files")
    if st.st_size > limit:
        raise FileRefused(_too_big(what, st.st_size, limit))


def _too_big(what: str, size: int | None, limit: int) -> str:
    has = f"{size} bytes" if size is not None else "more"
    return f"file is too large ({has}); a {what} may have at most {describe_size(limit)}"


def is_inside(path: Path, root: Path) -> bool:
    """Whether ``path``, after following every symbolic link, lies in ``root`` (a real path)."""
    return Path(os.path.realpath(path)).is_relative_to(root)


def real_dir(path: Path) -> Path:
    """The real path of ``path`` (symbolic links followed), for containment checks."""
    return Path(os.path.realpath(path))
