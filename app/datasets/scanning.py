"""Scanning a source: every file it names with its label, and every path or row it cannot use.

:func:`scan` walks an ImageFolder tree here; CSV and JSONL rows are read in
:mod:`app.datasets.manifest_scan`. Nothing here opens an image: ``probe`` does that later, and only
for files that are new or changed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from app.datasets.manifest_scan import ManifestScan, csv_rows, jsonl_rows
from app.datasets.probe import escape_text
from app.datasets.sources import (
    ResolvedSource,
    SourceEntry,
    SourceIssue,
    SourceScan,
    is_valid_utf8,
    within,
)
from app.logging import get_logger
from app.models import ImportFormat, IssueReason

log = get_logger(__name__)


def scan(resolved: ResolvedSource, *, classes: Sequence[str] | None = None) -> SourceScan:
    """Lists every file the source names, and every problem with its paths and rows.

    With ``classes``, labels outside the list are refused (``unknown_label``) and every listed
    class is created, even one with no files.
    """
    allowed = frozenset(classes) if classes is not None else None
    if resolved.format is ImportFormat.IMAGEFOLDER:
        result = _ImageFolderScan(resolved.root, allowed).run()
    else:
        rows = csv_rows if resolved.format is ImportFormat.CSV else jsonl_rows
        result = ManifestScan(resolved.root, allowed).run(rows(resolved.source))
    if classes is not None:
        result.labels = list(classes)
    result.entries.sort(key=lambda entry: entry.path)
    return result


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
            target = self._usable(entry, name)
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

    def _usable(self, entry: os.DirEntry[str], rel: str) -> str | None:
        """The path to go on with for ``entry`` (named ``rel`` in reports), or None (reported)
        when its name is not UTF-8 or it is a symlink that leads out of the root."""
        if not is_valid_utf8(entry.name):
            self._issue(
                rel,
                IssueReason.BAD_FILENAME,
                "the name is not valid UTF-8"
                + ("; the folder's files were skipped" if _is_dir(entry) else ""),
            )
            return None
        return self._follow(entry, rel)

    def _follow(self, entry: os.DirEntry[str], rel: str) -> str | None:
        """The real path behind ``entry`` when it is a symlink; None (reported) when unusable."""
        if not entry.is_symlink():
            return entry.path
        target = os.path.realpath(entry.path)
        if not Path(target).exists():
            return entry.path  # broken: reported as the sample's error by the caller or probe
        if not within(self.root, target):
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
            target = self._usable(entry, child)
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
