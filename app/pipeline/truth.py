"""The ground truth simulated annotators answer from (:mod:`app.pipeline.simulate`).

The truth is a CSV with a path column, a label column (the clean class name; empty for junk)
and optionally a junk column (1/true/yes = junk), e.g. the demo's ``truth.csv``
(``path,given_label,clean_label,junk``, ``--column clean_label``) or CIFAR-10N's
``train_labels.csv`` (``--column clean``). A truth path matches a dataset sample by the whole
path, else by its last two parts (``class/file``), else by file name, when that is unique.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from app.errors import Invalid

__all__ = ["Truth", "load_truth"]

_TRUE = frozenset({"1", "true", "yes", "y", "junk"})


@dataclass(frozen=True)
class Truth:
    """The clean class name of every path (None: junk)."""

    labels: dict[str, str | None]

    def index(self) -> dict[str, dict[str, str | None]]:
        """The labels by whole path, by ``class/file`` and by file name (unique keys only)."""
        by_tail: dict[str, list[str]] = {}
        by_name: dict[str, list[str]] = {}
        for path in self.labels:
            parts = PurePosixPath(path).parts
            by_tail.setdefault("/".join(parts[-2:]), []).append(path)
            by_name.setdefault(parts[-1], []).append(path)
        return {
            "path": dict(self.labels),
            "tail": {k: self.labels[v[0]] for k, v in by_tail.items() if len(v) == 1},
            "name": {k: self.labels[v[0]] for k, v in by_name.items() if len(v) == 1},
        }


def load_truth(
    path: Path, *, column: str, junk_column: str = "junk", path_column: str = "path"
) -> Truth:
    """Reads the truth CSV.

    Raises:
        Invalid: the file lacks the path or label column.
    """
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        for needed in (path_column, column):
            if needed not in fields:
                raise Invalid(f"{path} has no column {needed!r}; it has {', '.join(fields)}")
        has_junk = junk_column in fields
        labels: dict[str, str | None] = {}
        for row in reader:
            junk = has_junk and row[junk_column].strip().lower() in _TRUE
            label = row[column].strip()
            labels[row[path_column].strip()] = None if junk or not label else label
    return Truth(labels)
