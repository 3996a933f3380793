"""Labelled sets of real images for the cleaning loop: the images under a root, the manifest to
import (``path,label``: the given, possibly wrong labels) and the truth (``path,clean,junk``).

CIFAR-10 with CIFAR-10N labels and Caltech-101 with its BACKGROUND_Google images as junk, read
from their archives in ``../shared/data``; the callers check that the archives are there.
"""

from __future__ import annotations

import csv
import random
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RealSet:
    """Images under ``root``, the manifest to import (``path,label``, paths relative to
    ``root``, the given labels) and the truth (``path,clean,junk``)."""

    root: Path
    manifest: Path
    truth: Path

    def rows(self) -> dict[str, dict[str, str]]:
        with self.truth.open(newline="") as handle:
            return {row["path"]: row for row in csv.DictReader(handle)}

    def given(self) -> dict[str, str]:
        with self.manifest.open(newline="") as handle:
            return {row["path"]: row["label"] for row in csv.DictReader(handle)}


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_labelled_set(
    out_dir: Path, root: Path, items: Sequence[tuple[str, str, str | None]]
) -> RealSet:
    """Writes ``noisy.csv`` and ``truth.csv`` into ``out_dir`` for ``items``: (path relative to
    ``root``, given label, clean label or None for junk)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest, truth = out_dir / "noisy.csv", out_dir / "truth.csv"
    _write_csv(manifest, ["path", "label"], [[path, given] for path, given, _ in items])
    _write_csv(
        truth,
        ["path", "clean", "junk"],
        [[path, clean or "", "0" if clean else "1"] for path, _, clean in items],
    )
    return RealSet(root, manifest, truth)


def extract(archive: Path, root: Path, names: Iterable[str]) -> None:
    """Extracts the members ``names`` of ``archive`` into ``root``."""
    wanted = set(names)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name in wanted]
        tar.extractall(root, members=members, filter="data")


def cifar_first_per_class(
    labels_csv: Path,
    archive: Path,
    root: Path,
    *,
    per_class: int,
    column: str,
    clean_column: str = "clean",
) -> RealSet:
    """The first ``per_class`` CIFAR-10 images of each class (original order) of a split,
    extracted into ``root``, labelled with ``column`` (a CIFAR-10N column for the training
    split); ``clean_column`` holds the true class."""
    counts: dict[str, int] = {}
    chosen: dict[str, dict[str, str]] = {}
    with labels_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if counts.get(row[clean_column], 0) < per_class:
                counts[row[clean_column]] = counts.get(row[clean_column], 0) + 1
                chosen[row["path"]] = row
    extract(archive, root, chosen)
    items = [(path, chosen[path][column], chosen[path][clean_column]) for path in sorted(chosen)]
    return write_labelled_set(root, root, items)


BACKGROUND = "BACKGROUND_Google"


def caltech_junk_mix(
    archive: Path,
    root: Path,
    *,
    classes: Sequence[str] | None,
    per_class: int,
    background: int,
    seed: int = 7,
) -> RealSet:
    """The first ``per_class`` images of each Caltech-101 class of ``classes`` (None: all of
    them but ``Faces``, which holds the photos of ``Faces_easy`` at another crop), and the first
    ``background`` BACKGROUND_Google images filed under random classes of them as junk,
    extracted into ``root``."""
    with tarfile.open(archive) as tar:
        members = [m.name for m in tar.getmembers() if m.isfile() and m.name.count("/") == 2]
    by_class: dict[str, list[str]] = {}
    for name in members:
        by_class.setdefault(name.split("/")[1], []).append(name)
    names = (
        list(classes)
        if classes is not None
        else sorted(c for c in by_class if c not in (BACKGROUND, "Faces"))
    )
    picked = [path for name in names for path in sorted(by_class[name])[:per_class]]
    junk = sorted(by_class[BACKGROUND])[:background]
    extract(archive, root, picked + junk)
    rng = random.Random(seed)
    items: list[tuple[str, str, str | None]] = [
        (path, path.split("/")[1], path.split("/")[1]) for path in picked
    ]
    items += [(path, rng.choice(names), None) for path in junk]
    return write_labelled_set(root, root, items)
