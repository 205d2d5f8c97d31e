"""The files a user names to be read (a sheet, a REDCap export, a mapping, a rack scan, the
settings file): each a regular file of bounded size, or refused in one line naming it.

A FIFO, a process substitution or a device such as /dev/zero would keep a reader waiting, or
reading, for ever; a file's size is what bounds the time and memory reading it takes. The file
is opened without waiting for a writer and checked as opened, so nothing can be put in its
place between the check and the reading.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from biobank.errors import ValidationError

MB = 1_000_000
IMPORT_LIMIT = 1_000 * MB  # a sheet or a REDCap export: millions of rows
SMALL_LIMIT = 10 * MB  # a rack scan, a mapping, the settings file: a few KB in practice

_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a pipe",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFSOCK: "a socket",
}


@contextmanager
def checked_input(path: Path, limit: int, what: str, *, field: str = "file") -> Iterator[BinaryIO]:
    """`path` open for reading (binary) if it is a regular file of at most `limit` bytes; else,
    and when reading it fails, a ValidationError naming `what` and the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once, to be refused
    except OSError as error:
        raise _refused(path, what, field, error.strerror or str(error)) from None
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            kind = _KINDS.get(stat.S_IFMT(found.st_mode), "something else")
            raise _refused(path, what, field, f"it is {kind}, not a regular file")
        if found.st_size > limit:
            raise _too_large(path, what, field, limit)
    except BaseException:
        os.close(fd)
        raise
    with open(fd, "rb") as file:
        try:
            yield file
        except OSError as error:  # a disk or a network share failing while it is read
            raise _refused(path, what, field, error.strerror or str(error)) from None


def read_input(path: Path, limit: int, what: str, *, field: str = "file") -> bytes:
    """A small file whole (see `checked_input`)."""
    with checked_input(path, limit, what, field=field) as file:
        data = file.read(limit + 1)
    if len(data) > limit:  # it grew since it was opened, or its size is not told (/proc)
        raise _too_large(path, what, field, limit)
    return data


def read_toml(path: Path, what: str = "mapping", *, field: str = "mapping") -> dict[str, Any]:
    """A small TOML file's values (see `checked_input`)."""
    data = read_input(path, SMALL_LIMIT, what, field=field)
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # not UTF-8, not TOML, nested without end
        raise _refused(path, what, field, str(error) or type(error).__name__) from None


def _too_large(path: Path, what: str, field: str, limit: int) -> ValidationError:
    return _refused(path, what, field, f"it is larger than the {limit // MB:,} MB allowed")


def _refused(path: Path, what: str, field: str, reason: str) -> ValidationError:
    return ValidationError(f"cannot read the {what} {path}: {reason}", field=field, value=str(path))
