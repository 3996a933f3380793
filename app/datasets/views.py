"""View models for the dataset pages: every number formatted and every coordinate computed here,
so the templates only place what they are given."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from app.datasets.schemas import (
    ClassCount,
    ConflictGroup,
    DatasetListItem,
    DatasetOverview,
    ImportReport,
    ModeCount,
)
from app.models import ImportRun, ImportStatus, IssueReason

ISSUE_PAGE_SIZE = 100
CONFLICTS_SHOWN = 50
CONFLICT_THUMBNAIL_SIZE = 96

# The class-size chart, in SVG user units (it scales to the page width).
CHART_WIDTH = 960
CHART_HEIGHT = 260
CHART_MARGIN_LEFT = 44
CHART_MARGIN_RIGHT = 8
CHART_MARGIN_TOP = 10
CHART_MARGIN_BOTTOM = 8
#: Above this many classes, neighbouring classes (in size order) share a bar: the SVG stays small.
MAX_BARS = 300
#: A class with one image sits at the log axis's 1; it still gets this many units of bar.
MIN_BAR_HEIGHT = 3.0

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

_STATUS_TONES = {
    ImportStatus.RUNNING: "running",
    ImportStatus.SUCCEEDED: "ok",
    ImportStatus.FAILED: "bad",
}


# --- formatting -------------------------------------------------------------------------------


def number(value: int) -> str:
    return f"{value:,}"


def plural(count: int, singular: str, many: str | None = None) -> str:
    word = singular if count == 1 else (many or f"{singular}s")
    return f"{count:,} {word}"


def short_number(value: int) -> str:
    """1, 10, 100, 1k, 10k, 100k, 1M… for axis ticks."""
    for limit, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if value >= limit and value % limit == 0:
            return f"{value // limit}{suffix}"
    return str(value)


def percent(part: int, whole: int) -> str:
    if whole <= 0:
        return "–"
    share = 100 * part / whole
    if 0 < share < 0.1:
        return "<0.1%"
    return f"{share:.1f}%"


@dataclass(frozen=True)
class Moment:
    """A point in time for a ``<time>`` element: ISO value, absolute text and relative text."""

    iso: str
    text: str
    ago: str


def moment(at: datetime, *, now: datetime) -> Moment:
    return Moment(iso=at.isoformat(), text=at.strftime("%Y-%m-%d %H:%M UTC"), ago=_ago(now - at))


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 45:
        return "just now"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min ago"
    hours = round(seconds / 3600)
    if hours < 36:
        return f"{hours} h ago"
    return f"{round(seconds / 86400)} days ago"


def duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# --- URLs ------------------------------------------------------------------------------------


def dataset_url(dataset_id: int) -> str:
    return f"/datasets/{dataset_id}"


def cleaning_url(dataset_id: int) -> str:
    """The dataset's cleaning dashboard."""
    return f"/datasets/{dataset_id}/cleaning"


def report_url(dataset_id: int, import_id: int) -> str:
    return f"/datasets/{dataset_id}/imports/{import_id}/report"


def issues_url(
    dataset_id: int, import_id: int, *, reason: IssueReason | None = None, offset: int = 0
) -> str:
    query: dict[str, str | int] = {}
    if reason is not None:
        query["reason"] = reason.value
    if offset:
        query["offset"] = offset
    base = f"/datasets/{dataset_id}/imports/{import_id}/issues"
    return f"{base}?{urlencode(query)}" if query else base


def thumbnail_url(sample_id: int, sha256: str, size: int) -> str:
    # The query names the content, so a re-imported, changed file gets a new URL despite the
    # thumbnails' "immutable" caching.
    return f"/media/samples/{sample_id}/thumb/{size}?v={sha256[:16]}"


def original_url(sample_id: int) -> str:
    return f"/media/samples/{sample_id}/original"


def pick_thumbnail_size(sizes: Sequence[int], want: int) -> int:
    """The smallest configured size at least ``want``, else the largest there is."""
    bigger = [size for size in sizes if size >= want]
    return min(bigger) if bigger else max(sizes)


# --- the dataset list -------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportBadge:
    status: str
    tone: str
    when: Moment


def import_badge(run: ImportRun | None, *, now: datetime) -> ImportBadge | None:
    if run is None:
        return None
    return ImportBadge(
        status=run.status.value,
        tone=_STATUS_TONES[run.status],
        when=moment(run.finished_at or run.created_at, now=now),
    )


@dataclass(frozen=True)
class DatasetRow:
    name: str
    url: str
    cleaning_url: str
    source: str
    source_format: str
    usable_samples: str
    class_count: str
    latest_import: ImportBadge | None


@dataclass(frozen=True)
class DatasetListView:
    rows: list[DatasetRow]


def dataset_list(items: Sequence[DatasetListItem], *, now: datetime) -> DatasetListView:
    return DatasetListView(
        rows=[
            DatasetRow(
                name=item.dataset.name,
                url=dataset_url(item.dataset.id),
                cleaning_url=cleaning_url(item.dataset.id),
                source=item.dataset.source,
                source_format=item.dataset.source_format.value,
                usable_samples=number(item.usable_samples),
                class_count=number(item.class_count),
                latest_import=import_badge(item.latest_import, now=now),
            )
            for item in items
        ]
    )


# --- the class-size chart ---------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One bar, up to the largest class it stands for. A bar for several classes also has a
    floor: the part up to the smallest of them (``floor_height`` 0 for a single class)."""

    x: float
    y: float
    width: float
    height: float
    floor_y: float
    floor_height: float
    title: str


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class ChartNote:
    label: str
    value: str


@dataclass(frozen=True)
class ClassChart:
    """Bars sorted by class size, descending, over a log10 y axis with ticks at powers of ten.

    A bar's height is ``log10(count) / top_exponent`` of the plot height, at least
    ``MIN_BAR_HEIGHT`` for any class with an image; with more than ``MAX_BARS`` classes each bar
    stands for a run of neighbouring classes and is as tall as the largest of them.
    """

    width: int
    height: int
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float
    tick_label_x: float
    bars: list[Bar]
    ticks: list[Tick]
    classes_per_bar: int
    grouped: bool
    caption: str
    axis_label: str
    notes: list[ChartNote]


def class_chart(
    classes: Sequence[ClassCount],
    *,
    unit: str = "image",
    max_bars: int = MAX_BARS,
    width: int = CHART_WIDTH,
    height: int = CHART_HEIGHT,
    largest: int = 0,
) -> ClassChart | None:
    """The chart for ``classes`` (any order), or None when there are no classes. ``unit``:
    what a class counts (``image``: images per class); ``largest``: draw the axis up to at least
    this count (charts drawn side by side share their scale)."""
    if not classes:
        return None
    ordered = sorted(classes, key=lambda c: (-c.count, c.name))
    counts = [c.count for c in ordered]
    top_exponent = _top_exponent(max(counts[0], largest))

    left, right = float(CHART_MARGIN_LEFT), float(width - CHART_MARGIN_RIGHT)
    top, bottom = float(CHART_MARGIN_TOP), float(height - CHART_MARGIN_BOTTOM)
    plot_height = bottom - top

    def bar_height(count: int) -> float:
        if count <= 0:
            return 0.0
        return max(MIN_BAR_HEIGHT, plot_height * math.log10(count) / top_exponent)

    groups = _group(len(ordered), max_bars)
    slot = (right - left) / len(groups)
    gap = slot * 0.2 if slot >= 4 else 0.0
    bars = []
    for index, (start, end) in enumerate(groups):
        tallest = bar_height(counts[start])
        floor = bar_height(counts[end - 1]) if end - start > 1 else 0.0
        bars.append(
            Bar(
                x=_r(left + index * slot + gap / 2),
                y=_r(bottom - tallest),
                width=_r(max(slot - gap, 0.5)),
                height=_r(tallest),
                floor_y=_r(bottom - floor),
                floor_height=_r(floor),
                title=_bar_title(ordered, start, end, unit),
            )
        )
    ticks = [
        Tick(y=_r(bottom - plot_height * exponent / top_exponent), label=short_number(10**exponent))
        for exponent in range(top_exponent + 1)
    ]
    per_bar = -(-len(ordered) // len(groups))
    caption = (
        f"{plural(len(ordered), 'class', 'classes')}, largest first; {unit}s per class, log scale"
    )
    if per_bar > 1:
        caption += (
            f"; each bar stands for up to {per_bar} neighbouring classes, "
            "dark up to the smallest of them, light up to the largest"
        )
    return ClassChart(
        width=width,
        height=height,
        plot_left=left,
        plot_right=right,
        plot_top=top,
        plot_bottom=bottom,
        tick_label_x=left - 6,
        bars=bars,
        ticks=ticks,
        classes_per_bar=per_bar,
        grouped=per_bar > 1,
        caption=caption,
        axis_label=f"{unit}s per class (log scale)",
        notes=_chart_notes(ordered),
    )


def _top_exponent(largest: int) -> int:
    """The smallest k >= 1 with 10**k >= largest: the axis top."""
    exponent = 1
    while 10**exponent < largest:
        exponent += 1
    return exponent


def _group(count: int, most: int) -> list[tuple[int, int]]:
    """Splits ``range(count)`` into at most ``most`` consecutive, non-empty, near-equal runs."""
    parts = min(count, most)
    return [(i * count // parts, (i + 1) * count // parts) for i in range(parts)]


def _bar_title(ordered: Sequence[ClassCount], start: int, end: int, unit: str) -> str:
    first = ordered[start]
    if end - start == 1:
        return f"{first.name}: {plural(first.count, unit)}"
    last = ordered[end - 1]
    if first.count == last.count:
        sizes = plural(first.count, unit) + " each"
    else:
        sizes = f"{number(last.count)}–{number(first.count)} {unit}s"
    return (
        f"classes #{number(start + 1)}–#{number(end)} by size: {sizes} ({first.name} … {last.name})"
    )


def _chart_notes(ordered: Sequence[ClassCount]) -> list[ChartNote]:
    largest, smallest = ordered[0], ordered[-1]
    median = statistics.median(c.count for c in ordered)
    median_text = number(int(median)) if float(median).is_integer() else f"{median:,.1f}"
    notes = [
        ChartNote("Largest", f"{largest.name} ({number(largest.count)})"),
        ChartNote("Median", median_text),
        ChartNote("Smallest", f"{smallest.name} ({number(smallest.count)})"),
    ]
    if smallest.count > 0:
        ratio = largest.count / smallest.count
        notes.append(ChartNote("Imbalance", f"{ratio:,.1f}×"))
    else:
        empty = sum(1 for c in ordered if c.count == 0)
        notes.append(ChartNote("Empty classes", number(empty)))
    return notes


def _r(value: float) -> float:
    return round(value, 2)


# --- the dataset page -------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    label: str
    value: str
    tone: str = ""
    hint: str = ""


@dataclass(frozen=True)
class ModeRow:
    mode: str
    channels: str
    count: str
    share: str
    not_three_channel: bool


def mode_rows(modes: Sequence[ModeCount]) -> list[ModeRow]:
    total = sum(m.count for m in modes)
    return [
        ModeRow(
            mode=m.mode,
            channels=str(m.channels),
            count=number(m.count),
            share=percent(m.count, total),
            not_three_channel=m.channels != 3,
        )
        for m in sorted(modes, key=lambda m: (-m.count, m.mode))
    ]


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
    counts: list[Stat]
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
        tone=_STATUS_TONES[run.status],
        running=running,
        poll_url=report_url(dataset_id, run.id) if running else None,
        started=moment(run.created_at, now=now),
        finished=moment(run.finished_at, now=now) if run.finished_at else None,
        duration=duration((end - run.created_at).total_seconds()) if end else None,
        processed=run.processed,
        total=run.total,
        progress_text=progress_text,
        error=run.error,
        counts=[
            Stat("Added", number(run.added)),
            Stat("Changed", number(run.changed)),
            Stat("Unchanged", number(run.unchanged)),
            Stat("Missing", number(run.missing), "warn" if run.missing else ""),
            Stat("Problems", number(run.issues), "bad" if run.issues else ""),
        ],
        reasons=[
            ReasonRow(
                label=REASON_LABELS.get(row.reason, row.reason.value),
                code=row.reason.value,
                count=number(row.count),
                filter_url=issues_url(dataset_id, run.id, reason=row.reason),
                page_url=f"{dataset_url(dataset_id)}?{urlencode({'reason': row.reason.value})}",
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


@dataclass(frozen=True)
class DatasetPageView:
    id: int
    name: str
    cleaning_url: str
    source: str
    source_format: str
    root: str
    created: Moment
    stats: list[Stat]
    chart: ClassChart | None
    modes: list[ModeRow]
    report: ImportReportView | None


def dataset_page(
    overview: DatasetOverview,
    report: ImportReport | None,
    *,
    now: datetime,
    thumbnail_sizes: Sequence[int],
    reason: IssueReason | None = None,
) -> DatasetPageView:
    dataset = overview.dataset
    return DatasetPageView(
        id=dataset.id,
        name=dataset.name,
        cleaning_url=cleaning_url(dataset.id),
        source=dataset.source,
        source_format=dataset.source_format.value,
        root=dataset.root,
        created=moment(dataset.created_at, now=now),
        stats=[
            Stat("Usable samples", number(overview.usable_samples), hint="decodable and present"),
            Stat(
                "Unusable",
                number(overview.unusable_samples),
                "bad" if overview.unusable_samples else "",
                hint="present, but the file cannot be used as an image",
            ),
            Stat(
                "Missing",
                number(overview.missing_samples),
                "warn" if overview.missing_samples else "",
                hint="gone from the source at the last import",
            ),
            Stat("Classes", number(len(overview.classes))),
            Stat(
                "Duplicates",
                number(overview.duplicate_samples),
                hint="usable samples that are byte-identical copies of another",
            ),
            Stat(
                "Label conflicts",
                number(overview.conflict_groups),
                "warn" if overview.conflict_groups else "",
                hint="identical images given more than one label",
            ),
        ],
        chart=class_chart(overview.classes),
        modes=mode_rows(overview.modes),
        report=(
            import_report(
                dataset.id,
                report,
                now=now,
                thumbnail_sizes=thumbnail_sizes,
                reason=reason,
                conflict_total=overview.conflict_groups,
            )
            if report is not None
            else None
        ),
    )
