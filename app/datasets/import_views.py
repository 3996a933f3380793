"""View models of an import's report on the dataset page: its counts and progress, the problem
files by reason (a page at a time) and the label conflicts among identical images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from app.datasets.schemas import ConflictGroup, ImportReport
from app.models import ImportStatus, IssueReason
from app.web.formatting import Fact, Moment, duration, moment, number, percent, plural
from app.web.urls import (
    dataset_url,
    import_report_url,
    issues_url,
    original_url,
    pick_thumbnail_size,
    thumbnail_url,
)

ISSUE_PAGE_SIZE = 100
CONFLICTS_SHOWN = 50
CONFLICT_THUMBNAIL_SIZE = 96

REASON_LABELS: dict[IssueReason, str] = {
    IssueReason.EMPTY_FILE: "Empty file (0 bytes)",
    IssueReason.TRUNCATED: "Truncated image",
    IssueReason.NOT_AN_IMAGE: "Not an image",
    IssueReason.UNSUPPORTED_FORMAT: "Unsupported image format",
    IssueReason.TOO_MANY_PIXELS: "Too many pixels (decompression bomb)",
    IssueReason.CORRUPT: "Corrupt image data",
    IssueReason.UNREADABLE: "Unreadable (permissions or I/O error)",
    IssueReason.NOT_A_FILE: "Not a regular file",
    IssueReason.MISSING_FILE: "File missing",
    IssueReason.BROKEN_SYMLINK: "Broken symlink",
    IssueReason.SYMLINK_OUTSIDE_ROOT: "Symlink pointing outside the root",
    IssueReason.PATH_OUTSIDE_ROOT: "Path outside the root",
    IssueReason.BAD_FILENAME: "Unusable file name",
    IssueReason.NO_CLASS_FOLDER: "Not inside a class folder",
    IssueReason.EMPTY_LABEL: "Empty label",
    IssueReason.UNKNOWN_LABEL: "Unknown label",
    IssueReason.DUPLICATE_PATH: "Path listed twice",
    IssueReason.BAD_ROW: "Malformed manifest row",
}

STATUS_TONES = {
    ImportStatus.RUNNING: "running",
    ImportStatus.SUCCEEDED: "ok",
    ImportStatus.FAILED: "bad",
}


@dataclass(frozen=True)
class ReasonRow:
    label: str
    code: str
    count: str
    filter_url: str
    page_url: str
    active: bool


@dataclass(frozen=True)
class IssueRow:
    path: str
    reason: str
    code: str
    detail: str


@dataclass(frozen=True)
class IssuePage:
    """One page of an import's problem files; ``more_url`` fetches the next page, if any."""

    rows: list[IssueRow]
    total: str
    shown_until: int
    remaining: int
    more_url: str | None
    more_label: str
    reason: IssueReason | None
    reason_label: str
    clear_url: str | None
    page_url: str


@dataclass(frozen=True)
class ConflictMemberView:
    class_name: str
    path: str
    original_url: str


@dataclass(frozen=True)
class ConflictView:
    sha256: str
    thumbnail_url: str
    original_url: str
    thumbnail_size: int
    members: list[ConflictMemberView]
    summary: str


@dataclass(frozen=True)
class ImportReportView:
    dataset_id: int
    import_id: int
    status: str
    tone: str
    running: bool
    poll_url: str | None
    started: Moment
    finished: Moment | None
    duration: str | None
    processed: int
    total: int
    progress_text: str
    error: str | None
    counts: list[Fact]
    reasons: list[ReasonRow]
    issues: IssuePage
    conflicts: list[ConflictView]
    conflicts_hidden: int


def issue_page(
    dataset_id: int,
    report: ImportReport,
    *,
    reason: IssueReason | None = None,
    offset: int = 0,
    page_size: int = ISSUE_PAGE_SIZE,
) -> IssuePage:
    run = report.run
    shown_until = offset + len(report.issues)
    remaining = max(report.total_issues - shown_until, 0)
    more_url = None
    if remaining and report.issues:
        more_url = issues_url(dataset_id, run.id, reason=reason, offset=shown_until)
    return IssuePage(
        rows=[
            IssueRow(
                path=issue.path,
                reason=REASON_LABELS.get(issue.reason, issue.reason.value),
                code=issue.reason.value,
                detail=issue.detail,
            )
            for issue in report.issues
        ],
        total=number(report.total_issues),
        shown_until=shown_until,
        remaining=remaining,
        more_url=more_url,
        more_label=f"Show {number(min(remaining, page_size))} more ({number(remaining)} left)",
        reason=reason,
        reason_label=REASON_LABELS.get(reason, reason.value) if reason is not None else "",
        clear_url=issues_url(dataset_id, run.id) if reason is not None else None,
        page_url=dataset_url(dataset_id),
    )


def import_report(
    dataset_id: int,
    report: ImportReport,
    *,
    now: datetime,
    thumbnail_sizes: Sequence[int],
    reason: IssueReason | None = None,
    conflict_total: int | None = None,
) -> ImportReportView:
    """``conflict_total``: how many conflict groups there are in all, when ``report`` holds
    only the first of them."""
    run = report.run
    running = run.status is ImportStatus.RUNNING
    end = run.finished_at or (now if running else None)
    size = pick_thumbnail_size(thumbnail_sizes, CONFLICT_THUMBNAIL_SIZE)
    shown = report.conflicts[:CONFLICTS_SHOWN]
    if run.total:
        progress_text = f"{number(run.processed)} of {number(run.total)} files and rows"
        progress_text += f" ({percent(run.processed, run.total)})"
    else:
        progress_text = "scanning the source…" if running else "nothing found in the source"
    return ImportReportView(
        dataset_id=dataset_id,
        import_id=run.id,
        status=run.status.value,
        tone=STATUS_TONES[run.status],
        running=running,
        poll_url=import_report_url(dataset_id, run.id) if running else None,
        started=moment(run.created_at, now=now),
        finished=moment(run.finished_at, now=now) if run.finished_at else None,
        duration=duration((end - run.created_at).total_seconds()) if end else None,
        processed=run.processed,
        total=run.total,
        progress_text=progress_text,
        error=run.error,
        counts=[
            Fact("Added", number(run.added)),
            Fact("Changed", number(run.changed)),
            Fact("Unchanged", number(run.unchanged)),
            Fact("Missing", number(run.missing), tone="warn" if run.missing else ""),
            Fact("Problems", number(run.issues), tone="bad" if run.issues else ""),
        ],
        reasons=[
            ReasonRow(
                label=REASON_LABELS.get(row.reason, row.reason.value),
                code=row.reason.value,
                count=number(row.count),
                filter_url=issues_url(dataset_id, run.id, reason=row.reason),
                page_url=dataset_url(dataset_id, reason=row.reason),
                active=row.reason == reason,
            )
            for row in report.by_reason
        ],
        issues=issue_page(dataset_id, report, reason=reason),
        conflicts=[_conflict(group, size) for group in shown],
        conflicts_hidden=max((conflict_total or len(report.conflicts)) - len(shown), 0),
    )


def _conflict(group: ConflictGroup, size: int) -> ConflictView:
    first = group.samples[0]
    labels = sorted({member.class_name for member in group.samples})
    return ConflictView(
        sha256=group.sha256,
        thumbnail_url=thumbnail_url(first.sample_id, group.sha256, size),
        original_url=original_url(first.sample_id),
        thumbnail_size=size,
        members=[
            ConflictMemberView(
                class_name=member.class_name,
                path=member.path,
                original_url=original_url(member.sample_id),
            )
            for member in group.samples
        ],
        summary=f"{plural(len(group.samples), 'copy', 'copies')} under "
        f"{plural(len(labels), 'class', 'classes')}: {', '.join(labels)}",
    )
