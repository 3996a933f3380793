"""Manifests of a dataset's samples on both engines: which samples, their labels and folds, and
the requests refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from app.errors import Invalid
from app.jobs import manifests
from app.models import Dataset
from ml.core.protocol.bundles import JobManifest
from tests.app.jobs.factories import tiny_dataset


def build(session: Session, data_dir: Path, dataset: Dataset, **options: object) -> JobManifest:
    ref = manifests.dataset_manifest(session, data_dir, dataset=dataset, **options)  # type: ignore[arg-type]
    return manifests.load_manifest(data_dir, ref.sha256)


def test_by_default_every_usable_sample_under_its_imported_class(
    session: Session, data_dir: Path
) -> None:
    dataset, samples = tiny_dataset(session, n=4)
    manifest = build(session, data_dir, dataset)
    ids = [sample.id for sample in samples[:-1]]
    assert manifest.sample_ids.tolist() == ids
    assert manifest.class_names == ["cat", "dog"]
    assert manifest.labels.tolist() == [0, 1, 0, 1]
    assert manifest.folds.tolist() == [-1] * 4


def test_given_samples_keep_their_order_labels_and_folds(session: Session, data_dir: Path) -> None:
    dataset, samples = tiny_dataset(session, n=4)
    chosen = [samples[3].id, samples[0].id]
    cat = samples[0].class_id
    manifest = build(
        session, data_dir, dataset, sample_ids=chosen, class_ids=[cat] * 2, folds=[2, 5]
    )
    assert manifest.sample_ids.tolist() == chosen
    assert manifest.labels.tolist() == [0, 0]
    assert manifest.folds.tolist() == [2, 5]


def test_junk_flags_label_the_samples_normal_or_junk(session: Session, data_dir: Path) -> None:
    dataset, samples = tiny_dataset(session, n=4)
    chosen = [samples[0].id, samples[1].id]
    manifest = build(session, data_dir, dataset, sample_ids=chosen, junk=[True, False])
    assert manifest.class_names == list(manifests.JUNK_CLASSES)
    assert manifest.labels.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"sample_ids": "twice"}, "duplicates"),
        ({"sample_ids": "missing"}, "not usable samples"),
        ({"class_ids": "unknown"}, "are not classes"),
        ({"junk": [True]}, "junk has 1 entries for 4 samples"),
        ({"folds": [0, 1, 2, 128]}, "between 0 and 127"),
        ({"class_ids": "unknown", "junk": [True] * 4}, "not both"),
    ],
)
def test_a_request_the_dataset_cannot_serve_is_refused(
    session: Session, data_dir: Path, options: dict[str, object], reason: str
) -> None:
    dataset, samples = tiny_dataset(session, n=4)
    first, gone = samples[0].id, samples[-1].id
    named = {"twice": [first, first], "missing": [first, gone], "unknown": [-1] * 4}
    resolved = {k: named[v] if isinstance(v, str) else v for k, v in options.items()}
    with pytest.raises(Invalid, match=reason):
        build(session, data_dir, dataset, **resolved)
