"""Scanning a CSV or JSONL manifest: its rows read one at a time (a bad row is reported and the
next one read), and the rules every row must pass to name a file of the dataset."""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from app.datasets.files import BoundedLines, LineTooLong, open_regular_file
from app.datasets.probe import escape_text
from app.datasets.sources import (
    MAX_LABEL_LENGTH,
    MAX_MANIFEST_LINE,
    SourceEntry,
    SourceIssue,
    SourceScan,
    csv_columns,
    is_valid_utf8,
    open_text,
    within,
)
from app.errors import Invalid
from app.models import IssueReason


class _Row(NamedTuple):
    """One manifest row: ``problem`` is set when the row could not be parsed at all."""

    line: int
    path: str | None
    label: str | None
    problem: str | None = None


def csv_rows(source: str) -> Iterator[_Row]:
    with open_text(source, errors="surrogateescape") as handle:
        lines = BoundedLines(handle, limit=MAX_MANIFEST_LINE)
        reader = csv.reader(lines, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            return
        except LineTooLong as exc:
            raise Invalid(f"not a CSV manifest: {exc}", field="path") from exc
        columns = csv_columns(header)
        width = len(header)
        while True:
            start = lines.number + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except LineTooLong as exc:
                yield _Row(lines.number, None, None, str(exc))
                continue
            except csv.Error as exc:
                yield _Row(start, None, None, f"malformed CSV: {exc}")
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != width:
                yield _Row(start, None, None, f"expected {width} fields, found {len(row)}")
                continue
            yield _Row(start, row[columns["path"]], row[columns["label"]])


def jsonl_rows(source: str) -> Iterator[_Row]:
    with open_regular_file(source) as handle:
        lines = BoundedLines(handle, limit=MAX_MANIFEST_LINE)
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except LineTooLong as exc:
                yield _Row(lines.number, None, None, str(exc))
                continue
            number = lines.number
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield _Row(number, None, None, "the line is not valid UTF-8")
                continue
            except ValueError as exc:
                yield _Row(number, None, None, f"invalid JSON: {exc}")
                continue
            if not isinstance(value, dict):
                yield _Row(number, None, None, "expected a JSON object with path and label")
                continue
            path, label = value.get("path"), value.get("label")
            if not isinstance(path, str) or not isinstance(label, str):
                yield _Row(
                    number,
                    None,
                    None,
                    f"path and label must be strings (got {type(path).__name__} and "
                    f"{type(label).__name__})",
                )
                continue
            yield _Row(number, path, label)


class ManifestScan:
    """The rules shared by CSV and JSONL rows; the first valid row for a path wins."""

    def __init__(self, root: str, allowed: frozenset[str] | None) -> None:
        self.root = root
        self.allowed = allowed
        self.result = SourceScan()
        self.first_line: dict[str, int] = {}
        self.real_parents: dict[str, str] = {}

    def run(self, rows: Iterator[_Row]) -> SourceScan:
        labels: dict[str, None] = {}
        for row in rows:
            label = self._row(row)
            if label is not None:
                labels[label] = None
        self.result.labels = sorted(labels)
        return self.result

    def _issue(self, path: str, reason: IssueReason, detail: str) -> None:
        self.result.issues.append(SourceIssue(escape_text(path), reason, escape_text(detail)))

    def _row(self, row: _Row) -> str | None:
        """Adds the row's entry or issue; returns its label when the row is accepted."""
        where = f"line {row.line}"
        if row.problem is not None or row.path is None or row.label is None:
            self._issue(row.path or "", IssueReason.BAD_ROW, f"{where}: {row.problem}")
            return None
        path, label = row.path, row.label.strip()
        if not path.strip():
            self._issue("", IssueReason.BAD_ROW, f"{where}: the path is empty")
            return None
        if "\x00" in path:
            self._issue(path, IssueReason.BAD_ROW, f"{where}: the path contains a NUL character")
            return None
        if not is_valid_utf8(path):
            self._issue(path, IssueReason.BAD_FILENAME, f"{where}: the path is not valid UTF-8")
            return None
        if not label:
            self._issue(path, IssueReason.EMPTY_LABEL, f"{where}: the label is empty")
            return None
        if escape_text(label) != label:
            self._issue(path, IssueReason.BAD_ROW, f"{where}: the label is not valid UTF-8 text")
            return None
        if len(label) > MAX_LABEL_LENGTH:
            self._issue(
                path,
                IssueReason.BAD_ROW,
                f"{where}: the label is over {MAX_LABEL_LENGTH} characters",
            )
            return None
        if self.allowed is not None and label not in self.allowed:
            self._issue(
                path, IssueReason.UNKNOWN_LABEL, f"{where}: {label!r} is not in the class list"
            )
            return None
        absolute = os.path.normpath(Path(self.root, path))
        if not within(self.root, absolute) or absolute == self.root:
            self._issue(path, IssueReason.PATH_OUTSIDE_ROOT, f"{where}: the path leaves the root")
            return None
        rel = os.path.relpath(absolute, self.root).replace(os.sep, "/")
        first = self.first_line.get(rel)
        if first is not None:
            self._issue(path, IssueReason.DUPLICATE_PATH, f"{where}: the same file as line {first}")
            return None
        entry = self._entry(rel, label, absolute, where)
        if entry is None:
            return None
        self.first_line[rel] = row.line
        self.result.entries.append(entry)
        return label

    def _entry(self, rel: str, label: str, absolute: str, where: str) -> SourceEntry | None:
        parent, _ = os.path.split(absolute)
        real_parent = self.real_parents.get(parent)
        if real_parent is None:
            real_parent = self.real_parents[parent] = os.path.realpath(parent)
        if not within(self.root, real_parent):
            self._issue(
                rel,
                IssueReason.SYMLINK_OUTSIDE_ROOT,
                f"{where}: a symlinked folder on the path points outside the root",
            )
            return None
        try:
            info = os.lstat(absolute)
        except (FileNotFoundError, NotADirectoryError):
            return SourceEntry(
                rel,
                label,
                absolute,
                error=IssueReason.MISSING_FILE,
                detail=f"{where}: no such file",
            )
        except OSError as exc:
            return SourceEntry(
                rel,
                label,
                absolute,
                error=IssueReason.UNREADABLE,
                detail=f"{where}: {exc.strerror}",
            )
        if stat.S_ISLNK(info.st_mode):
            target = os.path.realpath(absolute)
            if not Path(target).exists():
                return SourceEntry(
                    rel,
                    label,
                    absolute,
                    error=IssueReason.BROKEN_SYMLINK,
                    detail=f"{where}: the symlink's target does not exist",
                )
            if not within(self.root, target):
                self._issue(
                    rel,
                    IssueReason.SYMLINK_OUTSIDE_ROOT,
                    f"{where}: the symlink points outside the dataset root, to {target}",
                )
                return None
            info = Path(absolute).stat()
        if not stat.S_ISREG(info.st_mode):
            return SourceEntry(
                rel,
                label,
                absolute,
                error=IssueReason.NOT_A_FILE,
                detail=f"{where}: not a regular file",
            )
        return SourceEntry(rel, label, absolute, info.st_size, info.st_mtime_ns)
