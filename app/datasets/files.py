"""Opening the files an import names (images, manifests, class lists): regular files only.

A path from a user may name a FIFO (opening it for reading blocks until a writer comes), a
device (``/dev/zero`` never ends), a directory or a socket. ``open_regular_file`` refuses them
all before reading a byte: the path is stat'ed first, so a FIFO or device is normally never
opened at all, then opened non-blocking, and the open descriptor checked again, so a file
swapped for a FIFO between the two is refused too. ``BoundedLines`` reads a text file line by
line without ever holding an over-long line whole.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from typing import IO, AnyStr, Generic

__all__ = ["BoundedLines", "LineTooLong", "NotARegularFile", "file_kind", "open_regular_file"]

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
_SKIP_CHUNK = 1 << 16


class NotARegularFile(Exception):
    """The path names something other than a regular file; ``kind`` says what."""

    def __init__(self, mode: int) -> None:
        self.kind = file_kind(mode)
        super().__init__(f"not a regular file ({self.kind})")


def file_kind(mode: int) -> str:
    """What a ``st_mode`` names, for messages: "a directory", "a FIFO", "a device"…"""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "not a regular file"


def open_regular_file(path: str | os.PathLike[str]) -> io.BufferedReader:
    """``path`` opened for reading in binary, buffered, following symlinks.

    Raises ``NotARegularFile`` for anything but a regular file (checked before and after the
    open), and ``OSError`` as ``open`` does (``FileNotFoundError``, ``PermissionError``…).
    """
    mode = os.stat(path).st_mode  # noqa: PTH116 - the probe's hot path: no Path object per file
    if not stat.S_ISREG(mode):
        raise NotARegularFile(mode)
    fd = os.open(path, _OPEN_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(mode)
        os.set_blocking(fd, True)
        return open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class LineTooLong(ValueError):
    """A line over the limit; it was skipped, and reading may go on with the next line."""


class BoundedLines(Iterator[AnyStr], Generic[AnyStr]):
    """The lines of ``file`` (newline included), each at most ``limit`` characters (bytes, for a
    binary file).

    A longer line is read past in small chunks, never held whole, and ``LineTooLong`` is raised
    in its place; the next ``next()`` returns the line after it. ``number`` is the number of
    lines read so far, the skipped ones included (the current line's number, 1-based).
    """

    def __init__(self, file: IO[AnyStr], *, limit: int) -> None:
        self.file: IO[AnyStr] = file
        self.limit = limit
        self.number = 0

    def __next__(self) -> AnyStr:
        line: AnyStr = self.file.readline(self.limit + 1)
        if not line:
            raise StopIteration
        self.number += 1
        if len(line) > self.limit:
            rest = line
            while rest and not _ends_line(rest):
                rest = self.file.readline(_SKIP_CHUNK)
            raise LineTooLong(f"the line is over {self.limit:,} characters")
        return line


def _ends_line(line: str | bytes) -> bool:
    # Binary readline ends lines at b"\n" only; text read with newline="" (csv) at "\r" too.
    if isinstance(line, bytes):
        return line.endswith(b"\n")
    return line.endswith(("\n", "\r"))
