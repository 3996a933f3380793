"""Manifests: the sample lists jobs run on, stored as bundle files named by their SHA-256.

A job spec names a manifest by hash (:class:`ml.core.protocol.jobs.ManifestRef`); workers
download the file. Files are written once, atomically, and never change, so the hash is the whole
identity.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session

from app.datasets import repository as datasets_repository
from app.errors import Invalid, NotFound
from app.models import Dataset
from ml.core.protocol.bundle_format import BundleError
from ml.core.protocol.bundles import JobManifest, decode_manifest, encode_manifest
from ml.core.protocol.jobs import ManifestRef

MANIFEST_DIR = "jobs/manifests"
JUNK_CLASSES = ("normal", "junk")


class ManifestNotFound(NotFound):
    code = "manifest_not_found"


def manifest_path(data_dir: Path, sha256: str) -> Path:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ManifestNotFound(f"no manifest {sha256!r}")
    return data_dir / MANIFEST_DIR / f"{sha256}.thrb"


def store_manifest_bytes(data_dir: Path, data: bytes) -> ManifestRef:
    """Validates and stores an encoded manifest; storing the same bytes twice is a no-op."""
    try:
        manifest = decode_manifest(data)
    except BundleError as error:
        raise Invalid(f"not a valid manifest: {error}") from error
    digest = hashlib.sha256(data).hexdigest()
    path = manifest_path(data_dir, digest)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{digest}.{uuid.uuid4().hex}.tmp")
        temporary.write_bytes(data)
        temporary.replace(path)
    return ManifestRef(sha256=digest, count=len(manifest), num_classes=manifest.num_classes)


def manifest_file(data_dir: Path, sha256: str) -> Path:
    """The stored manifest's file; ManifestNotFound when there is none."""
    path = manifest_path(data_dir, sha256)
    if not path.is_file():
        raise ManifestNotFound(f"no manifest {sha256}")
    return path


def store_manifest(data_dir: Path, manifest: JobManifest) -> ManifestRef:
    try:
        data = encode_manifest(manifest)
    except BundleError as error:
        raise Invalid(f"cannot build the manifest: {error}") from error
    return store_manifest_bytes(data_dir, data)


def load_manifest(data_dir: Path, sha256: str) -> JobManifest:
    return decode_manifest(manifest_file(data_dir, sha256).read_bytes())


@lru_cache(maxsize=16)
def result_sample_ids(data_dir: Path, sha256: str, fold: int | None) -> NDArray[np.int64]:
    """The sorted sample ids a job may report results for: the manifest's, or those of one
    fold. Cached: manifests never change."""
    manifest = load_manifest(data_dir, sha256)
    ids = manifest.sample_ids if fold is None else manifest.sample_ids[manifest.folds == fold]
    return np.sort(ids)


def dataset_manifest(
    session: Session,
    data_dir: Path,
    *,
    dataset: Dataset,
    sample_ids: Sequence[int] | None = None,
    class_ids: Sequence[int] | None = None,
    junk: Sequence[bool] | None = None,
    folds: Sequence[int] | None = None,
) -> ManifestRef:
    """Builds and stores the manifest of some of ``dataset``'s usable samples.

    Args:
        sample_ids: the samples, in the manifest's order; default: every usable sample by id.
        class_ids: their labels (class ids of the dataset), when not their imported classes.
        junk: junk flags instead of class labels: the manifest's classes are ``normal``, ``junk``.
        folds: each sample's fold (0..127), e.g. for out-of-fold jobs.

    Raises:
        Invalid: unknown, unusable or repeated samples; lists of the wrong length; unknown
            classes.
    """
    if class_ids is not None and junk is not None:
        raise Invalid("give class_ids or junk flags, not both")
    rows = datasets_repository.usable_samples(session, dataset.id, sample_ids)
    by_id = {row[0]: row for row in rows}
    order = _sample_order(dataset, rows, by_id, sample_ids)
    n = len(order)
    for name, values in (("class_ids", class_ids), ("junk", junk), ("folds", folds)):
        if values is not None and len(values) != n:
            raise Invalid(f"{name} has {len(values)} entries for {n} samples")
    if junk is not None:
        names = list(JUNK_CLASSES)
        class_id_array = np.arange(len(names), dtype=np.int64)
        labels = np.asarray([1 if flag else 0 for flag in junk], dtype=np.int32)
    else:
        given = class_ids if class_ids is not None else [by_id[sid][1] for sid in order]
        names, class_id_array, labels = _class_labels(session, dataset, given)
    digests = b"".join(bytes.fromhex(by_id[sid][3]) for sid in order)
    manifest = JobManifest(
        root=dataset.root,
        sample_ids=np.asarray(order, dtype=np.int64),
        labels=labels,
        folds=_fold_array(folds, n),
        sha256=np.frombuffer(digests, dtype=np.uint8).reshape(n, 32),
        paths=[by_id[sid][2] for sid in order],
        class_ids=class_id_array,
        class_names=names,
        meta={"dataset_id": dataset.id},
    )
    return store_manifest(data_dir, manifest)


_UsableRow = tuple[int, int, str, str]


def _sample_order(
    dataset: Dataset,
    rows: Sequence[_UsableRow],
    by_id: dict[int, _UsableRow],
    sample_ids: Sequence[int] | None,
) -> list[int]:
    """The manifest's sample ids in order: ``sample_ids``, checked, or every usable one by id."""
    if sample_ids is None:
        return [row[0] for row in rows]
    order = list(sample_ids)
    if len(set(order)) != len(order):
        raise Invalid("sample_ids has duplicates")
    missing = [sid for sid in order if sid not in by_id]
    if missing:
        raise Invalid(
            f"{len(missing)} sample ids are not usable samples of dataset {dataset.id}",
            sample_ids=missing[:20],
        )
    return order


def _class_labels(
    session: Session, dataset: Dataset, given: Sequence[int]
) -> tuple[list[str], NDArray[np.int64], NDArray[np.int32]]:
    """(class names, their class ids, each sample's label as an index into them) for samples
    labelled with the dataset's class ids ``given``."""
    classes = datasets_repository.classes_by_id(session, dataset.id)
    index = {cid: i for i, (cid, _) in enumerate(classes)}
    unknown = sorted({cid for cid in given if cid not in index})
    if unknown:
        raise Invalid(f"classes {unknown[:20]} are not classes of dataset {dataset.id}")
    names = [name for _, name in classes]
    class_id_array = np.asarray([cid for cid, _ in classes], dtype=np.int64)
    return names, class_id_array, np.asarray([index[cid] for cid in given], dtype=np.int32)


def _fold_array(folds: Sequence[int] | None, n: int) -> NDArray[np.int8]:
    """Each sample's fold, -1 for none."""
    if folds is None:
        return np.full(n, -1, dtype=np.int8)
    if any(not 0 <= f <= 127 for f in folds):
        raise Invalid("folds must be between 0 and 127")
    return np.asarray(folds, dtype=np.int8)
