"""An import's source — an ImageFolder tree, a CSV manifest or a JSONL manifest — as the user gives
it: checked and resolved (:func:`resolve_source`), its class list read, and what a scan of it finds
(``SourceEntry``, ``SourceIssue``). The scan itself is :func:`app.datasets.scanning.scan`.

Paths are POSIX, relative to the dataset root, and escaped with ``escape_text`` where they are not
valid UTF-8.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from app.datasets.files import BoundedLines, LineTooLong, NotARegularFile, open_regular_file
from app.datasets.probe import escape_text
from app.errors import Invalid
from app.models import ImportFormat, IssueReason

MAX_LABEL_LENGTH = 255
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
CSV_REQUIRED_COLUMNS = ("path", "label")
#: A manifest line longer than this is a bad row, skipped without being held whole.
MAX_MANIFEST_LINE = 1 << 20
#: A class-list file larger than this is refused unread (a million short names fit).
MAX_CLASS_LIST_BYTES = 16 << 20


class SourceEntry(NamedTuple):
    """A file the source names under a valid label.

    ``error`` is set when the scan already knows the file is unusable (missing, a broken symlink,
    not a regular file): such entries become samples with that error without being probed.
    ``byte_size``/``mtime_ns`` come from a stat of the file (following symlinks) when the scan
    made one (manifests do; an ImageFolder scan reads only directory entries, so they are None).
    """

    path: str
    label: str
    abs_path: str
    byte_size: int | None = None
    mtime_ns: int | None = None
    error: IssueReason | None = None
    detail: str | None = None


class SourceIssue(NamedTuple):
    """A path or manifest row that names no usable sample (never becomes a sample)."""

    path: str
    reason: IssueReason
    detail: str


@dataclass
class SourceScan:
    """Everything a source names. ``labels`` lists the classes to create, in a stable order."""

    entries: list[SourceEntry] = field(default_factory=list)
    issues: list[SourceIssue] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.entries) + len(self.issues)


@dataclass(frozen=True)
class ResolvedSource:
    """A validated source: absolute paths, and the format it was declared or detected as."""

    source: str
    format: ImportFormat
    root: str


# --- validating what the user gave -----------------------------------------------------------


def resolve_source(
    path: str, *, format: ImportFormat | None = None, root: str | None = None
) -> ResolvedSource:
    """Checks ``path`` (and ``root``) exist and fit the format; detects the format when not given.

    Raises ``Invalid`` naming the offending field. The root of an ImageFolder is the folder itself;
    a manifest's root defaults to the folder it lives in.
    """
    if not path or "\x00" in path:
        raise Invalid("give the path of a folder or manifest file", field="path")
    source = Path(path).expanduser().absolute()
    if not source.exists():
        raise Invalid(f"{escape_text(str(source))} does not exist", field="path")
    if format is None:
        format = _detect_format(source)
    if format is ImportFormat.IMAGEFOLDER:
        if not source.is_dir():
            raise Invalid(
                f"{escape_text(str(source))} is not a folder "
                "(an ImageFolder is root/<class>/<image>)",
                field="path",
            )
        if root is not None:
            raise Invalid("an ImageFolder is its own root; leave root out", field="root")
        real = os.path.realpath(source)
        _check_listable(real, "path")
        return ResolvedSource(source=real, format=format, root=real)
    if not source.is_file():
        raise Invalid(f"{escape_text(str(source))} is not a {format.value} file", field="path")
    _check_manifest(source, format)
    if root is None:
        root_path = os.path.realpath(source.parent)
    else:
        given = Path(root).expanduser().absolute()
        if not given.is_dir():
            raise Invalid(f"{escape_text(str(given))} is not a folder", field="root")
        root_path = os.path.realpath(given)
    return ResolvedSource(source=os.path.realpath(source), format=format, root=root_path)


def _detect_format(source: Path) -> ImportFormat:
    if source.is_dir():
        return ImportFormat.IMAGEFOLDER
    suffix = source.suffix.lower()
    if suffix == ".csv":
        return ImportFormat.CSV
    if suffix in JSONL_SUFFIXES:
        return ImportFormat.JSONL
    raise Invalid(
        "cannot tell the format from the name; give format "
        f"({', '.join(member.value for member in ImportFormat)})",
        field="format",
    )


def _check_listable(folder: str, field_name: str) -> None:
    try:
        with os.scandir(folder):
            pass
    except OSError as exc:
        raise Invalid(
            f"cannot read {escape_text(folder)}: {exc.strerror}", field=field_name
        ) from exc


def _check_manifest(source: Path, format: ImportFormat) -> None:
    try:
        if format is ImportFormat.CSV:
            with open_text(source, errors="replace") as handle:
                header = next(csv.reader(BoundedLines(handle, limit=MAX_MANIFEST_LINE)), None)
            csv_columns(header)
            return
        with open_regular_file(source) as handle:
            for raw in BoundedLines(handle, limit=MAX_MANIFEST_LINE):
                if raw.strip():
                    try:
                        first = json.loads(raw)
                    except ValueError:
                        first = None
                    if not isinstance(first, dict):
                        raise Invalid(
                            "not a JSONL manifest: the first line is not a JSON object",
                            field="path",
                        )
                    return
    except NotARegularFile as exc:
        raise Invalid(
            f"{escape_text(str(source))} is {exc.kind}, not a {format.value} file", field="path"
        ) from exc
    except OSError as exc:
        raise Invalid(
            f"cannot read {escape_text(str(source))}: {exc.strerror}", field="path"
        ) from exc
    except (csv.Error, LineTooLong) as exc:
        raise Invalid(f"not a {format.name} manifest: {exc}", field="path") from exc


def open_text(source: str | Path, *, errors: str) -> io.TextIOWrapper:
    """A manifest opened as text for ``csv`` (regular files only; see ``open_regular_file``)."""
    return io.TextIOWrapper(
        open_regular_file(source), encoding="utf-8-sig", errors=errors, newline=""
    )


def csv_columns(header: list[str] | None) -> dict[str, int]:
    """The index of each required column in a CSV header; Invalid when one is missing."""
    names = [name.strip().lower() for name in header or []]
    missing = [column for column in CSV_REQUIRED_COLUMNS if column not in names]
    if missing:
        raise Invalid(
            f"the CSV header must name the columns path and label (missing: {', '.join(missing)})",
            field="path",
        )
    return {column: names.index(column) for column in CSV_REQUIRED_COLUMNS}


def read_class_list(path: str) -> list[str]:
    """Class names from a text file, one per line; blank lines ignored, repeats dropped."""
    file = Path(path).expanduser()
    try:
        with open_regular_file(file) as handle:
            data = handle.read(MAX_CLASS_LIST_BYTES + 1)
        if len(data) > MAX_CLASS_LIST_BYTES:
            raise Invalid(
                f"the class list is over {MAX_CLASS_LIST_BYTES >> 20} MiB", field="classes"
            )
        text = data.decode("utf-8-sig")
    except (OSError, NotARegularFile, UnicodeDecodeError) as exc:
        if isinstance(exc, OSError):
            problem = exc.strerror
        elif isinstance(exc, NotARegularFile):
            problem = f"it is {exc.kind}, not a regular file"
        else:
            problem = "not valid UTF-8"
        raise Invalid(
            f"cannot read the class list {escape_text(str(file))}: {problem}", field="classes"
        ) from exc
    return check_class_names(text.splitlines())


def check_class_names(lines: Sequence[str]) -> list[str]:
    """The class names of a list (a file's lines, or a request's list): stripped, blank ones
    ignored, repeats dropped. A refusal names the line, never its text (the list may be a file
    the caller could not otherwise read)."""
    names = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    if not names:
        raise Invalid("the class list is empty", field="classes")
    for number, name in enumerate(names, start=1):
        if len(name) > MAX_LABEL_LENGTH or "\x00" in name:
            raise Invalid(
                f"class names must be at most {MAX_LABEL_LENGTH} characters, without NUL; "
                f"class {number} of the list is not",
                field="classes",
            )
    return names


def within(root: str, target: str) -> bool:
    """Whether the absolute path ``target`` is ``root`` or below it."""
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def is_valid_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
