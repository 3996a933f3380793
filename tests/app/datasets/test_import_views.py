"""The import report's view models, built from hand-made service results (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.datasets import import_views
from app.datasets.schemas import (
    ConflictGroup,
    ConflictMember,
    ImportReport,
    ReasonCount,
)
from app.models import ImportIssue, ImportRun, ImportStatus, IssueReason

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_run(
    status: ImportStatus = ImportStatus.SUCCEEDED, *, total: int = 10, processed: int = 10
) -> ImportRun:
    started = NOW - timedelta(minutes=3)
    return ImportRun(
        id=7,
        dataset_id=3,
        status=status,
        total=total,
        processed=processed,
        added=8,
        changed=0,
        unchanged=0,
        missing=0,
        issues=2,
        error=None,
        created_at=started,
        finished_at=None if status is ImportStatus.RUNNING else started + timedelta(seconds=75),
    )


def make_report(
    run: ImportRun, *, issues: int = 2, total_issues: int = 2, conflicts: int = 0
) -> ImportReport:
    return ImportReport(
        run=run,
        by_reason=[
            ReasonCount(IssueReason.EMPTY_FILE, 1),
            ReasonCount(IssueReason.NOT_AN_IMAGE, 1),
        ],
        issues=[
            ImportIssue(path=f"cat/bad{i}.jpg", reason=IssueReason.EMPTY_FILE, detail="empty")
            for i in range(issues)
        ],
        total_issues=total_issues,
        conflicts=[
            ConflictGroup(
                sha256=f"{i:064x}",
                samples=[
                    ConflictMember(sample_id=10 * i + 1, path=f"cat/{i}.jpg", class_name="cat"),
                    ConflictMember(sample_id=10 * i + 2, path=f"dog/{i}.jpg", class_name="dog"),
                ],
            )
            for i in range(conflicts)
        ],
    )


def test_running_import_polls_and_shows_progress() -> None:
    report = import_views.import_report(
        3,
        make_report(make_run(ImportStatus.RUNNING, total=400, processed=100)),
        now=NOW,
        thumbnail_sizes=(96, 256),
    )
    assert report.running
    assert report.poll_url == "/datasets/3/imports/7/report"
    assert report.progress_text == "100 of 400 files and rows (25.0%)"
    assert report.duration == "3 min 00 s"


def test_finished_import_does_not_poll() -> None:
    report = import_views.import_report(3, make_report(make_run()), now=NOW, thumbnail_sizes=(96,))
    assert not report.running
    assert report.poll_url is None
    assert report.tone == "ok"
    assert report.duration == "1 min 15 s"


def test_reasons_link_to_the_filtered_issue_list() -> None:
    report = import_views.import_report(
        3,
        make_report(make_run()),
        now=NOW,
        thumbnail_sizes=(96,),
        reason=IssueReason.NOT_AN_IMAGE,
    )
    first, second = report.reasons
    assert first.label == "Empty file (0 bytes)"
    assert first.filter_url == "/datasets/3/imports/7/issues?reason=empty_file"
    assert first.page_url == "/datasets/3?reason=empty_file"
    assert (first.active, second.active) == (False, True)


def test_issue_page_offers_the_next_page_while_issues_remain() -> None:
    page = import_views.issue_page(
        3, make_report(make_run(), issues=100, total_issues=250), offset=100
    )
    assert page.shown_until == 200
    assert page.remaining == 50
    assert page.more_url == "/datasets/3/imports/7/issues?offset=200"
    assert page.more_label == "Show 50 more (50 left)"


def test_last_issue_page_offers_no_more() -> None:
    page = import_views.issue_page(3, make_report(make_run(), issues=2, total_issues=2))
    assert page.more_url is None


def test_filtered_issue_page_keeps_the_reason_in_its_links() -> None:
    page = import_views.issue_page(
        3,
        make_report(make_run(), issues=100, total_issues=101),
        reason=IssueReason.EMPTY_FILE,
    )
    assert page.more_url == "/datasets/3/imports/7/issues?reason=empty_file&offset=100"
    assert page.clear_url == "/datasets/3/imports/7/issues"
    assert page.reason_label == "Empty file (0 bytes)"


def test_conflicts_show_a_thumbnail_named_by_content_and_the_classes() -> None:
    report = import_views.import_report(
        3, make_report(make_run(), conflicts=1), now=NOW, thumbnail_sizes=(64, 128, 256)
    )
    (conflict,) = report.conflicts
    assert conflict.thumbnail_url == f"/media/samples/1/thumb/128?v={'0' * 16}"
    assert conflict.summary == "2 copies under 2 classes: cat, dog"
    assert [m.original_url for m in conflict.members] == [
        "/media/samples/1/original",
        "/media/samples/2/original",
    ]


def test_conflicts_beyond_the_shown_ones_are_counted() -> None:
    report = import_views.import_report(
        3,
        make_report(make_run(), conflicts=import_views.CONFLICTS_SHOWN + 5),
        now=NOW,
        thumbnail_sizes=(96,),
        conflict_total=80,
    )
    assert len(report.conflicts) == import_views.CONFLICTS_SHOWN
    assert report.conflicts_hidden == 80 - import_views.CONFLICTS_SHOWN
