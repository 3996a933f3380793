"""Importing real archives: all of Caltech-101 (PostgreSQL) and part of CIFAR-10 (SQLite).

Each dataset is extracted once per test session into a temporary folder. Expected numbers come
from the archives themselves (their listing, and SHA-256 of their members for duplicates), and
from the data README where a listing cannot tell (411 grayscale Caltech images).
"""

from __future__ import annotations

import csv
import hashlib
import tarfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.datasets import service
from app.datasets.schemas import StartedImport
from app.db import transaction
from app.models import ImportRun, ImportStatus, Sample
from app.settings import Settings
from tests.conftest import DATA_DIR

CALTECH_TAR = DATA_DIR / "caltech101" / "caltech101.tar"
CIFAR_TAR = DATA_DIR / "cifar10" / "train.tar"
CIFAR_LABELS = DATA_DIR / "cifar10" / "train_labels.csv"
CALTECH_TOP = "101_ObjectCategories"
CIFAR_PER_CLASS = 300

Factory = sessionmaker[Session]


@dataclass(frozen=True)
class Extracted:
    """An extracted ImageFolder and what its archive says about it."""

    root: Path
    per_class: dict[str, int]
    duplicates: int  # files whose bytes equal an earlier file's
    conflicts: int  # identical files found under more than one class


def _extract(tar_path: Path, into: Path, wanted: str, keep: int | None = None) -> Extracted:
    """Extracts the files under ``wanted/<class>/`` (the first ``keep`` names per class)."""
    if not tar_path.is_file():
        pytest.skip(f"real test data not found: {tar_path} (see the README's 'Test data')")
    per_class: Counter[str] = Counter()
    groups: dict[str, set[tuple[str, str]]] = defaultdict(set)
    with tarfile.open(tar_path) as archive:
        members = [
            m for m in archive.getmembers() if m.isfile() and m.name.startswith(f"{wanted}/")
        ]
        if keep is not None:
            members = [m for m in members if int(Path(m.name).stem) < keep]
        for member in members:
            handle = archive.extractfile(member)
            assert handle is not None
            data = handle.read()
            target = into / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            label = member.name.split("/")[1]
            per_class[label] += 1
            groups[hashlib.sha256(data).hexdigest()].add((member.name, label))
    duplicates = sum(len(paths) - 1 for paths in groups.values())
    conflicts = sum(1 for paths in groups.values() if len({label for _, label in paths}) > 1)
    return Extracted(into / wanted, dict(per_class), duplicates, conflicts)


@pytest.fixture(scope="session")
def caltech(tmp_path_factory: pytest.TempPathFactory) -> Extracted:
    return _extract(CALTECH_TAR, tmp_path_factory.mktemp("caltech"), CALTECH_TOP)


@pytest.fixture(scope="session")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> Extracted:
    return _extract(CIFAR_TAR, tmp_path_factory.mktemp("cifar"), "train", keep=CIFAR_PER_CLASS)


def do_import(factory: Factory, settings: Settings, name: str, path: Path) -> ImportRun:
    with transaction(factory) as session:
        started = service.start_import(session, name=name, path=str(path))
    run = service.run_started_import(factory, started, settings=settings)
    assert run.status is ImportStatus.SUCCEEDED, run.error
    return run


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_caltech101_imports_every_image(
    session_factory: Factory, settings: Settings, caltech: Extracted
) -> None:
    run = do_import(session_factory, settings, "caltech101", caltech.root)
    total = sum(caltech.per_class.values())
    assert total == 9145 and len(caltech.per_class) == 102
    assert (run.total, run.added, run.issues) == (total, total, 0)
    with session_factory() as session:
        dataset = service.get_dataset(session, run.dataset_id)
        overview = service.dataset_overview(session, dataset)
        tmp = session.scalars(select(Sample).where(Sample.path == "BACKGROUND_Google/tmp")).one()
    assert {c.name: c.count for c in overview.classes} == caltech.per_class
    assert overview.classes[0].name == "airplanes"  # the largest class leads
    assert {(m.mode, m.channels): m.count for m in overview.modes} == {
        ("RGB", 3): total - 411,
        ("L", 1): 411,
    }
    assert (overview.duplicate_samples, overview.conflict_groups) == (
        caltech.duplicates,
        caltech.conflicts,
    )
    assert (tmp.error, tmp.image_format) == (None, "JPEG")

    again = service.run_started_import(
        session_factory, _restart(session_factory, run.dataset_id), settings=settings
    )
    assert (again.added, again.changed, again.unchanged, again.missing) == (0, 0, total, 0)


def _restart(factory: Factory, dataset_id: int) -> StartedImport:
    with transaction(factory) as session:
        return service.restart_import(session, dataset=service.get_dataset(session, dataset_id))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cifar10_subset_imports_as_imagefolder(
    session_factory: Factory, settings: Settings, cifar: Extracted
) -> None:
    run = do_import(session_factory, settings, "cifar", cifar.root)
    assert (run.added, run.issues) == (10 * CIFAR_PER_CLASS, 0)
    with session_factory() as session:
        overview = service.dataset_overview(session, service.get_dataset(session, run.dataset_id))
        sizes = set(session.execute(select(Sample.width, Sample.height)).all())
    assert {c.name: c.count for c in overview.classes} == cifar.per_class
    assert [(m.mode, m.channels, m.count) for m in overview.modes] == [
        ("RGB", 3, 10 * CIFAR_PER_CLASS)
    ]
    assert sizes == {(32, 32)}
    assert (overview.duplicate_samples, overview.conflict_groups) == (
        cifar.duplicates,
        cifar.conflicts,
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cifar10_noisy_labels_import_from_a_csv_manifest(
    session_factory: Factory, settings: Settings, cifar: Extracted, tmp_path: Path
) -> None:
    """The CIFAR-10N 'aggre' labels for the same files, as path,label rows."""
    manifest = tmp_path / "aggre.csv"
    expected: Counter[str] = Counter()
    with CIFAR_LABELS.open(newline="") as source, manifest.open("w", newline="") as target:
        writer = csv.writer(target)
        writer.writerow(["path", "label", "clean"])
        for row in csv.DictReader(source):
            if int(Path(row["path"]).stem) < CIFAR_PER_CLASS:
                writer.writerow([row["path"], row["aggre"], row["clean"]])
                expected[row["aggre"]] += 1
    run = do_import_manifest(session_factory, settings, manifest, root=cifar.root.parent)
    assert (run.added, run.issues) == (10 * CIFAR_PER_CLASS, 0)
    with session_factory() as session:
        overview = service.dataset_overview(session, service.get_dataset(session, run.dataset_id))
    assert {c.name: c.count for c in overview.classes} == dict(expected)
    assert dict(expected) != cifar.per_class  # the noisy labels really differ


def do_import_manifest(
    factory: Factory, settings: Settings, manifest: Path, *, root: Path
) -> ImportRun:
    with transaction(factory) as session:
        started = service.start_import(
            session, name="cifar-aggre", path=str(manifest), root=str(root)
        )
    return service.run_started_import(factory, started, settings=settings)
