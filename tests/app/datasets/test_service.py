"""Importing through the service on both engines: bad files, duplicates, summaries, refusals
and failures. Importing again is in test_reimport.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.datasets import service
from app.db import transaction
from app.errors import Conflict, Invalid, NotFound
from app.models import Dataset, ImportFormat, ImportIssue, ImportStatus, IssueReason, LabelClass
from app.settings import Settings
from tests.app.datasets.files import (
    hostile_folder,
    image_bytes,
    truncated,
    write,
    write_csv,
    write_jsonl,
)
from tests.app.datasets.imports import Factory, do_import, issues_of, reimport, samples_by_path

# --- hostile input ----------------------------------------------------------------------------


def test_hostile_folder_imports_and_reports_every_bad_file(
    session_factory: Factory, settings: Settings, tmp_path: Path
) -> None:
    expected = hostile_folder(tmp_path / "root", tmp_path / "outside")
    run = do_import(session_factory, settings, "hostile", tmp_path / "root")
    assert run.status is ImportStatus.SUCCEEDED, run.error
    bad = {path: reason for path, reason in expected.items() if reason is not None}
    assert issues_of(session_factory, run) == bad
    samples = samples_by_path(session_factory, run.dataset_id)
    usable = {path for path, sample in samples.items() if sample.error is None}
    assert usable == {path for path, reason in expected.items() if reason is None}
    with_errors = {path: sample.error for path, sample in samples.items() if sample.error}
    assert with_errors == {path: reason for path, reason in bad.items() if reason.is_file_problem}
    assert samples["cat/tmp"].image_format == "JPEG"
    assert samples["dog/new\nline.jpg"].error is None
    assert run.total == run.processed == len(expected)


def test_file_problem_samples_keep_size_but_no_image_facts(
    session_factory: Factory, settings: Settings, tmp_path: Path
) -> None:
    write(tmp_path / "src" / "cat" / "cut.jpg", truncated(image_bytes("JPEG", size=(96, 96))))
    run = do_import(session_factory, settings, "cut", tmp_path / "src")
    sample = samples_by_path(session_factory, run.dataset_id)["cat/cut.jpg"]
    assert sample.error is IssueReason.TRUNCATED and sample.error_detail
    assert sample.byte_size == (tmp_path / "src" / "cat" / "cut.jpg").stat().st_size
    assert (sample.sha256, sample.width, sample.mode) == (None, None, None)


def test_pixel_limit_comes_from_settings(
    session_factory: Factory, settings: Settings, tmp_path: Path
) -> None:
    write(tmp_path / "src" / "cat" / "big.png", image_bytes("PNG", size=(200, 100)))
    write(tmp_path / "src" / "cat" / "small.png", image_bytes("PNG", size=(50, 50)))
    strict = settings.model_copy(update={"max_image_pixels": 10_000})
    run = do_import(session_factory, strict, "limited", tmp_path / "src")
    assert issues_of(session_factory, run) == {"cat/big.png": IssueReason.TOO_MANY_PIXELS}


def test_csv_manifest_with_bad_rows_imports_the_good_ones(
    session_factory: Factory, settings: Settings, tmp_path: Path
) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write(tmp_path / "img" / name, image_bytes("JPEG", seed=ord(name[0])))
    write(tmp_path / "img" / "cut.jpg", truncated(image_bytes("JPEG", size=(96, 96))))
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\n")
    manifest = write_csv(
        tmp_path / "img" / "labels.csv",
        [
            ["a.jpg", "cat"],
            ["b.jpg", " "],
            ["c.jpg", "zebra"],
            ["../classes.txt", "cat"],
            ["a.jpg", "dog"],
            ["c.jpg"],
            ["gone.jpg", "dog"],
            ["cut.jpg", "dog"],
        ],
    )
    run = do_import(
        session_factory, settings, "csv", manifest, classes=str(tmp_path / "classes.txt")
    )
    assert issues_of(session_factory, run) == {
        "b.jpg": IssueReason.EMPTY_LABEL,
        "c.jpg": IssueReason.UNKNOWN_LABEL,
        "../classes.txt": IssueReason.PATH_OUTSIDE_ROOT,
        "a.jpg": IssueReason.DUPLICATE_PATH,
        "": IssueReason.BAD_ROW,
        "gone.jpg": IssueReason.MISSING_FILE,
        "cut.jpg": IssueReason.TRUNCATED,
    }
    samples = samples_by_path(session_factory, run.dataset_id)
    assert {path: sample.error for path, sample in samples.items()} == {
        "a.jpg": None,
        "gone.jpg": IssueReason.MISSING_FILE,
        "cut.jpg": IssueReason.TRUNCATED,
    }
    with session_factory() as session:
        overview = service.dataset_overview(session, service.get_dataset(session, run.dataset_id))
    assert [(c.name, c.count) for c in overview.classes] == [("cat", 1), ("bird", 0), ("dog", 0)]


def test_jsonl_manifest_imports_with_line_numbers_in_the_report(
    session_factory: Factory, settings: Settings, tmp_path: Path
) -> None:
    write(tmp_path / "a.jpg", image_bytes("JPEG"))
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [{"path": "a.jpg", "label": "cat"}, "{broken", {"path": "../x.jpg", "label": "cat"}],
    )
    run = do_import(session_factory, settings, "jsonl", manifest)
    with session_factory() as session:
        report = service.import_report(session, run)
    assert [(issue.reason, issue.detail.split(":")[0]) for issue in report.issues] == [
        (IssueReason.BAD_ROW, "line 2"),
        (IssueReason.PATH_OUTSIDE_ROOT, "line 3"),
    ]
    assert run.added == 1


# --- duplicates, conflicts and summaries ------------------------------------------------------


def test_exact_duplicates_link_to_the_lowest_id_and_conflicts_are_reported(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    data = (folder / "cat" / "a.jpg").read_bytes()
    write(folder / "cat" / "a-copy.jpg", data)
    write(folder / "dog" / "a-as-dog.jpg", data)
    run = do_import(session_factory, settings, "pets", folder)
    samples = samples_by_path(session_factory, run.dataset_id)
    first = samples["cat/a-copy.jpg"]  # paths are imported in sorted order
    assert first.duplicate_of_id is None
    assert samples["cat/a.jpg"].duplicate_of_id == first.id
    assert samples["dog/a-as-dog.jpg"].duplicate_of_id == first.id
    assert all(s.duplicate_of_id is None for p, s in samples.items() if "a" not in p.split("/")[1])
    with session_factory() as session:
        report = service.import_report(session, run)
        overview = service.dataset_overview(session, service.get_dataset(session, run.dataset_id))
    [group] = report.conflicts
    assert [(m.path, m.class_name) for m in group.samples] == [
        ("cat/a-copy.jpg", "cat"),
        ("cat/a.jpg", "cat"),
        ("dog/a-as-dog.jpg", "dog"),
    ]
    assert (overview.duplicate_samples, overview.conflict_groups) == (2, 1)


def test_duplicate_links_follow_the_files_on_reimport(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    data = (folder / "cat" / "b.jpg").read_bytes()
    write(folder / "dog" / "b-again.jpg", data)
    first = do_import(session_factory, settings, "pets", folder)
    (folder / "cat" / "b.jpg").unlink()
    reimport(session_factory, settings, first.dataset_id)
    samples = samples_by_path(session_factory, first.dataset_id)
    assert samples["dog/b-again.jpg"].duplicate_of_id is None
    with session_factory() as session:
        dataset = service.get_dataset(session, first.dataset_id)
        assert service.dataset_overview(session, dataset).conflict_groups == 0


def test_overview_counts_samples_modes_and_classes(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    write(folder / "dog" / "gray.png", image_bytes("PNG", mode="L"))
    write(folder / "dog" / "bad.jpg", b"not an image")
    write(folder / "bird" / "x.jpg", image_bytes("JPEG", seed=55))
    first = do_import(session_factory, settings, "pets", folder)
    (folder / "bird" / "x.jpg").unlink()
    run = reimport(session_factory, settings, first.dataset_id)
    with session_factory() as session:
        overview = service.dataset_overview(session, service.get_dataset(session, run.dataset_id))
    assert overview.total_samples == 8
    assert (overview.usable_samples, overview.unusable_samples) == (6, 1)
    assert overview.missing_samples == 1
    assert [(m.mode, m.channels, m.count) for m in overview.modes] == [("RGB", 3, 5), ("L", 1, 1)]
    assert [(c.name, c.count) for c in overview.classes] == [("cat", 3), ("dog", 3), ("bird", 0)]
    assert overview.latest_import is not None and overview.latest_import.id == run.id


def test_list_datasets_summarises_each(
    session_factory: Factory, settings: Settings, folder: Path, tmp_path: Path
) -> None:
    do_import(session_factory, settings, "pets", folder)
    write(tmp_path / "other" / "x" / "a.jpg", image_bytes("JPEG"))
    other = do_import(session_factory, settings, "b-other", tmp_path / "other")
    with session_factory() as session:
        items = service.list_datasets(session)
    assert [(i.dataset.name, i.usable_samples, i.class_count) for i in items] == [
        ("b-other", 1, 1),
        ("pets", 5, 2),
    ]
    assert items[0].latest_import is not None and items[0].latest_import.id == other.id


def test_samples_are_paged_by_id(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    run = do_import(session_factory, settings, "pets", folder)
    with session_factory() as session:
        dataset = service.get_dataset(session, run.dataset_id)
        first = service.list_samples(session, dataset, limit=3)
        rest = service.list_samples(session, dataset, limit=3, after_id=first.next_after_id)
        cat = session.scalars(select(LabelClass).where(LabelClass.name == "cat")).one()
        cats = service.list_samples(session, dataset, class_id=cat.id)
    assert [s.path for s in first.samples + rest.samples] == sorted(
        samples_by_path(session_factory, run.dataset_id)
    )
    assert first.next_after_id == first.samples[-1].id and rest.next_after_id is None
    assert [s.path for s in cats.samples] == ["cat/a.jpg", "cat/b.jpg", "cat/c.png"]


def test_report_pages_and_filters_issues_by_reason(
    session_factory: Factory, settings: Settings, tmp_path: Path
) -> None:
    for index in range(5):
        write(tmp_path / "src" / "cat" / f"empty{index}.jpg", b"")
    write(tmp_path / "src" / "cat" / "text.jpg", b"text")
    run = do_import(session_factory, settings, "bad", tmp_path / "src")
    with session_factory() as session:
        page = service.import_report(session, run, reason=IssueReason.EMPTY_FILE, limit=2, offset=2)
    assert [(c.reason, c.count) for c in page.by_reason] == [
        (IssueReason.EMPTY_FILE, 5),
        (IssueReason.NOT_AN_IMAGE, 1),
    ]
    assert page.total_issues == 5
    assert [issue.path for issue in page.issues] == ["cat/empty2.jpg", "cat/empty3.jpg"]


# --- refusals and failures --------------------------------------------------------------------


def test_second_import_while_one_runs_is_a_conflict(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    with transaction(session_factory) as session:
        started = service.start_import(session, name="pets", path=str(folder))
    with pytest.raises(Conflict) as caught, transaction(session_factory) as session:
        service.restart_import(session, dataset=service.get_dataset(session, started.dataset.id))
    assert caught.value.details == {"import_id": started.run.id}


def test_same_name_with_another_source_is_a_conflict(
    session_factory: Factory, settings: Settings, folder: Path, tmp_path: Path
) -> None:
    do_import(session_factory, settings, "pets", folder)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(Conflict), transaction(session_factory) as session:
        service.start_import(session, name="pets", path=str(tmp_path / "elsewhere"))


def test_vanished_source_fails_the_run_with_its_error(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    with transaction(session_factory) as session:
        started = service.start_import(session, name="pets", path=str(folder))
    shutil.rmtree(folder)
    run = service.run_started_import(session_factory, started, settings=settings)
    assert run.status is ImportStatus.FAILED
    assert run.error and "No such file" in run.error
    with pytest.raises(Invalid), transaction(session_factory) as session:
        service.restart_import(session, dataset=service.get_dataset(session, run.dataset_id))


def test_interrupted_imports_are_failed_at_start_up(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    with transaction(session_factory) as session:
        started = service.start_import(session, name="pets", path=str(folder))
    with transaction(session_factory) as session:
        assert service.fail_interrupted_imports(session) == 1
    with session_factory() as session:
        run = service.get_import(session, started.run.id)
        assert run.status is ImportStatus.FAILED and run.finished_at is not None


def test_unknown_ids_are_not_found(session_factory: Factory) -> None:
    with session_factory() as session:
        with pytest.raises(NotFound):
            service.get_dataset(session, 404)
        with pytest.raises(NotFound):
            service.get_import(session, 404)


def test_a_command_line_names_a_dataset_by_name_before_id(session_factory: Factory) -> None:
    with session_factory() as session:
        first, digits = (
            Dataset(name=name, root="/d", source="/d", source_format=ImportFormat.IMAGEFOLDER)
            for name in ("birds", "1")
        )
        session.add_all([first, digits])
        session.flush()
        assert first.id == 1 and digits.id == 2

        assert service.dataset_by_name_or_id(session, "birds") is first
        assert service.dataset_by_name_or_id(session, "2") is digits
        assert service.dataset_by_name_or_id(session, "1") is digits  # its name wins over id 1
        with pytest.raises(NotFound, match="no dataset named '404'"):
            service.dataset_by_name_or_id(session, "404")


def test_manifest_format_given_explicitly(
    session_factory: Factory, settings: Settings, folder: Path
) -> None:
    manifest = write_csv(folder / "labels.txt", [["cat/a.jpg", "cat"]])
    run = do_import(session_factory, settings, "txt", manifest, format=ImportFormat.CSV)
    assert run.added == 1
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(ImportIssue)) == 0
