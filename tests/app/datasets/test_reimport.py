"""Importing a source again on both engines: what counts as added, changed, unchanged and
missing, bad files reported by every run, files and rows that come back or go bad."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sqlalchemy import func, select

from app.datasets import service
from app.models import IssueReason, LabelClass, Sample
from app.settings import Settings
from tests.app.datasets.files import image_bytes, truncated, write, write_csv
from tests.app.datasets.imports import (
    Factory,
    counts,
    do_import,
    issues_of,
    reimport,
    samples_by_path,
)


def test_reimport_of_an_unchanged_source_changes_nothing(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    first = do_import(session_factory, settings, "pets", folder)
    before = samples_by_path(session_factory, first.dataset_id)
    second = reimport(session_factory, settings, first.dataset_id)
    assert counts(first) == (5, 0, 0, 0, 0)
    assert counts(second) == (0, 0, 5, 0, 0)
    after = samples_by_path(session_factory, first.dataset_id)
    assert {p: (s.id, s.updated_at) for p, s in after.items()} == {
        p: (s.id, s.updated_at) for p, s in before.items()
    }


def test_same_name_and_source_again_is_a_reimport(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    first = do_import(session_factory, settings, "pets", folder)
    second = do_import(session_factory, settings, "pets", folder)
    assert second.dataset_id == first.dataset_id
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Sample)) == 5


def test_bad_files_are_reported_again_by_every_run(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    write(folder / "cat" / "empty.jpg", b"")
    first = do_import(session_factory, settings, "pets", folder)
    second = reimport(session_factory, settings, first.dataset_id)
    assert issues_of(session_factory, second) == {"cat/empty.jpg": IssueReason.EMPTY_FILE}
    assert counts(second) == (0, 0, 6, 0, 1)


def test_new_changed_and_deleted_files_are_counted(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    first = do_import(session_factory, settings, "pets", folder)
    old = samples_by_path(session_factory, first.dataset_id)
    write(folder / "cat" / "a.jpg", image_bytes("JPEG", size=(64, 64), seed=999))
    (folder / "dog" / "e.jpg").unlink()
    write(folder / "dog" / "f.jpg", image_bytes("JPEG", seed=7))
    run = reimport(session_factory, settings, first.dataset_id)
    assert counts(run) == (1, 1, 3, 1, 0)
    new = samples_by_path(session_factory, first.dataset_id)
    assert new["cat/a.jpg"].id == old["cat/a.jpg"].id
    assert new["cat/a.jpg"].width == 64 and new["cat/a.jpg"].sha256 != old["cat/a.jpg"].sha256
    assert new["dog/e.jpg"].missing is True
    assert len(new) == 6


def test_touched_file_with_the_same_bytes_is_unchanged(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    first = do_import(session_factory, settings, "pets", folder)
    stat = (folder / "cat" / "a.jpg").stat()
    os.utime(folder / "cat" / "a.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = reimport(session_factory, settings, first.dataset_id)
    third = reimport(session_factory, settings, first.dataset_id)
    assert counts(second) == counts(third) == (0, 0, 5, 0, 0)
    sample = samples_by_path(session_factory, first.dataset_id)["cat/a.jpg"]
    assert sample.mtime_ns == stat.st_mtime_ns + 10**9


def test_missing_file_that_reappears_is_present_again(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    first = do_import(session_factory, settings, "pets", folder)
    shutil.move(folder / "dog" / "d.jpg", folder.parent / "d.jpg")
    gone = reimport(session_factory, settings, first.dataset_id)
    still_gone = reimport(session_factory, settings, first.dataset_id)
    shutil.move(folder.parent / "d.jpg", folder / "dog" / "d.jpg")
    back = reimport(session_factory, settings, first.dataset_id)
    assert counts(gone) == (0, 0, 4, 1, 0)
    assert counts(still_gone) == (0, 0, 4, 1, 0)
    assert counts(back) == (0, 1, 4, 0, 0)
    sample = samples_by_path(session_factory, first.dataset_id)["dog/d.jpg"]
    assert sample.missing is False
    with session_factory() as session:
        dog = session.scalars(select(LabelClass).where(LabelClass.name == "dog")).one()
    assert dog.sample_count == 2


def test_fixed_bad_file_becomes_usable(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    write(folder / "cat" / "cut.jpg", truncated(image_bytes("JPEG", size=(96, 96))))
    first = do_import(session_factory, settings, "pets", folder)
    write(folder / "cat" / "cut.jpg", image_bytes("JPEG", size=(96, 96)))
    second = reimport(session_factory, settings, first.dataset_id)
    assert counts(second) == (0, 1, 5, 0, 0)
    sample = samples_by_path(session_factory, first.dataset_id)["cat/cut.jpg"]
    assert (sample.error, sample.error_detail, sample.width) == (None, None, 96)


def test_unreadable_file_fixed_without_a_new_mtime_is_noticed(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    """A file with an error is always probed again: a chmod does not change size or mtime."""
    stat = (folder / "dog" / "d.jpg").stat()
    good = (folder / "dog" / "d.jpg").read_bytes()
    write(folder / "dog" / "d.jpg", b"")
    first = do_import(session_factory, settings, "pets", folder)
    write(folder / "dog" / "d.jpg", good)
    os.utime(folder / "dog" / "d.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = reimport(session_factory, settings, first.dataset_id)
    assert first.issues == 1 and counts(second) == (0, 1, 4, 0, 0)


def test_relabelled_csv_row_moves_the_sample_and_is_counted_changed(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    rows = [["cat/a.jpg", "cat"], ["cat/b.jpg", "cat"], ["dog/d.jpg", "dog"]]
    manifest = write_csv(folder / "labels.csv", rows)
    first = do_import(session_factory, settings, "csv", manifest)
    rows[1][1] = "dog"
    write_csv(manifest, rows)
    second = reimport(session_factory, settings, first.dataset_id)
    assert counts(second) == (0, 1, 2, 0, 0)
    with session_factory() as session:
        overview = service.dataset_overview(session, service.get_dataset(session, first.dataset_id))
    assert [(c.name, c.count) for c in overview.classes] == [("dog", 2), ("cat", 1)]


def test_row_that_becomes_invalid_leaves_its_sample_missing(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    manifest = write_csv(folder / "labels.csv", [["cat/a.jpg", "cat"], ["cat/b.jpg", "cat"]])
    first = do_import(session_factory, settings, "csv", manifest)
    write_csv(manifest, [["cat/a.jpg", "cat"], ["cat/b.jpg", ""]])
    second = reimport(session_factory, settings, first.dataset_id)
    assert counts(second) == (0, 0, 1, 1, 1)
    assert samples_by_path(session_factory, first.dataset_id)["cat/b.jpg"].missing is True
