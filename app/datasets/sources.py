"""Reading an import's source: an ImageFolder tree, a CSV manifest or a JSONL manifest.

A scan lists every file the source names with its label (``SourceEntry``) and every path or row it
cannot use (``SourceIssue``). Nothing here opens an image; ``probe`` does that later, and only for
files that are new or changed. Paths are POSIX, relative to the dataset root, and escaped with
``escape_text`` where they are not valid UTF-8.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from app.datasets.files import BoundedLines, LineTooLong, NotARegularFile, open_regular_file
from app.datasets.probe import escape_text
from app.errors import Invalid
from app.logging import get_logger
from app.models import ImportFormat, IssueReason

log = get_logger(__name__)

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
            with _open_text(source, errors="replace") as handle:
                header = next(csv.reader(BoundedLines(handle, limit=MAX_MANIFEST_LINE)), None)
            _csv_columns(header)
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


def _open_text(source: str | Path, *, errors: str) -> io.TextIOWrapper:
    """A manifest opened as text for ``csv`` (regular files only; see ``open_regular_file``)."""
    return io.TextIOWrapper(
        open_regular_file(source), encoding="utf-8-sig", errors=errors, newline=""
    )


def _csv_columns(header: list[str] | None) -> dict[str, int]:
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


# --- scanning ---------------------------------------------------------------------------------


def scan(resolved: ResolvedSource, *, classes: Sequence[str] | None = None) -> SourceScan:
    """Lists every file the source names, and every problem with its paths and rows.

    With ``classes``, labels outside the list are refused (``unknown_label``) and every listed
    class is created, even one with no files.
    """
    allowed = frozenset(classes) if classes is not None else None
    if resolved.format is ImportFormat.IMAGEFOLDER:
        result = _ImageFolderScan(resolved.root, allowed).run()
    else:
        rows = _csv_rows if resolved.format is ImportFormat.CSV else _jsonl_rows
        result = _ManifestScan(resolved.root, allowed).run(rows(resolved.source))
    if classes is not None:
        result.labels = list(classes)
    result.entries.sort(key=lambda entry: entry.path)
    return result


def _within(root: str, target: str) -> bool:
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def _is_valid_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _ImageFolderScan:
    """root/<class>/<image>; any depth below a class folder belongs to that class."""

    def __init__(self, root: str, allowed: frozenset[str] | None) -> None:
        self.root = root
        self.allowed = allowed
        self.result = SourceScan()

    def run(self) -> SourceScan:
        labels: list[str] = []
        for entry in _sorted_entries(self.root):
            name = entry.name
            if name.startswith("."):
                continue
            if not _is_valid_utf8(name):
                self._issue(
                    name,
                    IssueReason.BAD_FILENAME,
                    "the name is not valid UTF-8"
                    + ("; the folder's files were skipped" if _is_dir(entry) else ""),
                )
                continue
            target = self._follow(entry, name)
            if target is None:
                continue
            if not Path(target).is_dir():
                self._issue(
                    name,
                    IssueReason.NO_CLASS_FOLDER,
                    "files directly under the root have no class: put them in root/<class>/",
                )
                continue
            labels.append(name)
            self._walk(target, name, name, ancestors=(self.root, target))
        self.result.labels = sorted(labels)
        return self.result

    def _follow(self, entry: os.DirEntry[str], rel: str) -> str | None:
        """The real path behind ``entry`` when it is a symlink; None (reported) when unusable."""
        if not entry.is_symlink():
            return entry.path
        target = os.path.realpath(entry.path)
        if not Path(target).exists():
            return entry.path  # broken: reported as the sample's error by the caller or probe
        if not _within(self.root, target):
            self._issue(
                rel,
                IssueReason.SYMLINK_OUTSIDE_ROOT,
                f"the symlink points outside the dataset root, to {escape_text(target)}",
            )
            return None
        return target

    def _walk(self, folder: str, rel: str, label: str, *, ancestors: tuple[str, ...]) -> None:
        try:
            entries = _sorted_entries(folder)
        except OSError as exc:
            self._issue(rel, IssueReason.UNREADABLE, f"cannot list this folder: {exc.strerror}")
            return
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            child = f"{rel}/{name}"
            if not _is_valid_utf8(name):
                self._issue(
                    child,
                    IssueReason.BAD_FILENAME,
                    "the name is not valid UTF-8"
                    + ("; the folder's files were skipped" if _is_dir(entry) else ""),
                )
                continue
            target = self._follow(entry, child)
            if target is None:
                continue
            if entry.is_symlink() and not Path(target).exists():
                self._add(
                    child,
                    label,
                    entry.path,
                    IssueReason.BROKEN_SYMLINK,
                    "the symlink's target does not exist",
                )
                continue
            is_dir = Path(target).is_dir() if entry.is_symlink() else _is_dir(entry)
            if is_dir:
                if target in ancestors:
                    log.warning("datasets.import.symlink_loop", path=escape_text(child))
                    continue
                self._walk(target, child, label, ancestors=(*ancestors, target))
                continue
            try:
                regular = entry.is_file()  # the directory entry's type: no stat for plain files
            except OSError as exc:
                self._add(child, label, entry.path, IssueReason.UNREADABLE, exc.strerror or "")
                continue
            if not regular:
                self._add(
                    child,
                    label,
                    entry.path,
                    IssueReason.NOT_A_FILE,
                    "not a regular file (a FIFO, socket or device)",
                )
                continue
            self._add(child, label, entry.path)

    def _add(
        self,
        rel: str,
        label: str,
        abs_path: str,
        error: IssueReason | None = None,
        detail: str | None = None,
        *,
        byte_size: int | None = None,
        mtime_ns: int | None = None,
    ) -> None:
        if self.allowed is not None and label not in self.allowed:
            self._issue(
                rel, IssueReason.UNKNOWN_LABEL, f"the class {label!r} is not in the class list"
            )
            return
        self.result.entries.append(
            SourceEntry(rel, label, abs_path, byte_size, mtime_ns, error, detail)
        )

    def _issue(self, rel: str, reason: IssueReason, detail: str) -> None:
        self.result.issues.append(SourceIssue(escape_text(rel), reason, detail))


def _sorted_entries(folder: str) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as iterator:
        return sorted(iterator, key=lambda entry: entry.name)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False) or (entry.is_symlink() and entry.is_dir())
    except OSError:
        return False


# --- manifests --------------------------------------------------------------------------------


class _Row(NamedTuple):
    """One manifest row: ``problem`` is set when the row could not be parsed at all."""

    line: int
    path: str | None
    label: str | None
    problem: str | None = None


def _csv_rows(source: str) -> Iterator[_Row]:
    with _open_text(source, errors="surrogateescape") as handle:
        lines = BoundedLines(handle, limit=MAX_MANIFEST_LINE)
        reader = csv.reader(lines, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            return
        except LineTooLong as exc:
            raise Invalid(f"not a CSV manifest: {exc}", field="path") from exc
        columns = _csv_columns(header)
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


def _jsonl_rows(source: str) -> Iterator[_Row]:
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


class _ManifestScan:
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
        if not _is_valid_utf8(path):
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
        if not _within(self.root, absolute) or absolute == self.root:
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
        if not _within(self.root, real_parent):
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
            if not _within(self.root, target):
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
