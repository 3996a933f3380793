"""Manifests: which images to use and their labels, from a CSV, a JSONL file or an ImageFolder.

A manifest is an ordered list of samples ``(path, label, sample_id)`` plus the ordered class names;
``label`` is an index into ``classes``. Row ``i`` of every array the ML library produces (decoded
cache, predictions, decisions) is sample ``i`` of the manifest it was built from.

Sources:

* **CSV** with a header: ``path,label[,sample_id]`` (other columns are ignored, and
  ``label_column`` picks another label column, e.g. one of CIFAR-10N's noisy columns).
* **JSONL**: one object per line with ``path``, ``label`` and optionally ``sample_id``.
* **ImageFolder** directory: ``root/<class>/<image>``; every non-hidden regular file is a sample,
  whatever its extension (web data has JPEGs named ``tmp``); undecodable files fail later, at
  decode time, with the file's name.

Relative paths are resolved against ``root`` (default: the manifest file's directory). Labels are
class names; classes are sorted (numerically when every name is an integer) unless given.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["Manifest", "ManifestError", "Sample", "load_manifest"]


class ManifestError(ValueError):
    """A manifest cannot be read: missing column, empty, unknown class, malformed line."""


@dataclass(frozen=True)
class Sample:
    """One image: its absolute ``path``, class index ``label`` and a stable ``sample_id``."""

    path: Path
    label: int
    sample_id: str


@dataclass(frozen=True)
class Manifest:
    """Samples in a fixed order, with the class names their labels index."""

    samples: tuple[Sample, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def paths(self) -> list[Path]:
        return [sample.path for sample in self.samples]

    @property
    def labels(self) -> NDArray[np.int64]:
        """Class index of every sample, ``[N]``."""
        return np.fromiter((s.label for s in self.samples), dtype=np.int64, count=len(self))

    @property
    def sample_ids(self) -> list[str]:
        return [sample.sample_id for sample in self.samples]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> NDArray[np.int64]:
        """Samples per class, ``[C]``."""
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)

    def subset(self, indices: Sequence[int] | NDArray[np.integer]) -> Manifest:
        """The samples at ``indices`` (in that order), with the same classes."""
        return Manifest(tuple(self.samples[int(i)] for i in indices), self.classes)


def _sort_classes(names: Iterable[str]) -> tuple[str, ...]:
    unique = set(names)
    if unique and all(name.lstrip("-").isdigit() for name in unique):
        return tuple(sorted(unique, key=int))
    return tuple(sorted(unique))


def _build(
    rows: list[tuple[str, str, str | None]],
    *,
    root: Path,
    classes: Sequence[str] | None,
    source: Path,
) -> Manifest:
    if not rows:
        raise ManifestError(f"{source}: no samples")
    class_names = tuple(classes) if classes is not None else _sort_classes(r[1] for r in rows)
    if len(set(class_names)) != len(class_names):
        raise ManifestError(f"{source}: duplicate class names in {list(class_names)[:20]}")
    index = {name: i for i, name in enumerate(class_names)}
    samples = []
    for line, (raw_path, label, sample_id) in enumerate(rows, start=1):
        if label not in index:
            raise ManifestError(f"{source}: sample {line} ({raw_path}) has unknown class {label!r}")
        path = Path(raw_path)
        samples.append(
            Sample(
                path=path if path.is_absolute() else root / path,
                label=index[label],
                sample_id=sample_id if sample_id else raw_path,
            )
        )
    ids = [s.sample_id for s in samples]
    if len(set(ids)) != len(ids):
        raise ManifestError(f"{source}: sample ids are not unique")
    return Manifest(tuple(samples), class_names)


def _read_csv(path: Path, label_column: str) -> list[tuple[str, str, str | None]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        for needed in ("path", label_column):
            if needed not in fields:
                raise ManifestError(f"{path}: no {needed!r} column (columns: {fields})")
        has_id = "sample_id" in fields
        return [
            (row["path"], row[label_column], row["sample_id"] if has_id else None) for row in reader
        ]


def _read_jsonl(path: Path, label_column: str) -> list[tuple[str, str, str | None]]:
    rows: list[tuple[str, str, str | None]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ManifestError(f"{path}:{number}: not JSON: {error}") from error
            if not isinstance(record, dict) or "path" not in record or label_column not in record:
                raise ManifestError(f"{path}:{number}: needs 'path' and {label_column!r} keys")
            sample_id = record.get("sample_id")
            rows.append(
                (
                    str(record["path"]),
                    str(record[label_column]),
                    None if sample_id is None else str(sample_id),
                )
            )
    return rows


def _read_image_folder(root: Path) -> list[tuple[str, str, str | None]]:
    rows: list[tuple[str, str, str | None]] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(class_dir.rglob("*")):
            if file.is_file() and not any(part.startswith(".") for part in file.parts[-2:]):
                relative = file.relative_to(root).as_posix()
                rows.append((relative, class_dir.name, None))
    return rows


def load_manifest(
    source: str | Path,
    *,
    root: str | Path | None = None,
    classes: Sequence[str] | None = None,
    label_column: str = "label",
) -> Manifest:
    """Read a manifest from a CSV or JSONL file, or an ImageFolder directory.

    Args:
        source: ``*.csv``, ``*.jsonl`` or a directory ``root/<class>/<image>``.
        root: directory that relative paths are resolved against; default: the CSV/JSONL file's
            directory, or the ImageFolder itself.
        classes: the class names in index order (e.g. a trained model's); default: the sorted
            names found. A label outside ``classes`` is an error.
        label_column: the CSV column / JSONL key that holds the label.

    Raises:
        ManifestError: unreadable, empty, missing columns, unknown class, duplicate sample ids.
    """
    path = Path(source)
    if path.is_dir():
        base = Path(root) if root is not None else path
        return _build(_read_image_folder(path), root=base.resolve(), classes=classes, source=path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest file or directory")
    base = Path(root) if root is not None else path.parent
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(path, label_column)
    elif suffix in {".jsonl", ".ndjson"}:
        rows = _read_jsonl(path, label_column)
    else:
        raise ManifestError(f"{path}: expected a .csv or .jsonl file, or an ImageFolder directory")
    return _build(rows, root=base.resolve(), classes=classes, source=path)
