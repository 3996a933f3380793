"""View models of the dataset pages: the list and a dataset's overview (stats, class sizes,
image modes), every number formatted here so the templates only place what they are given. The
import report on the overview is :mod:`app.datasets.import_views`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from app.datasets.import_views import STATUS_TONES, ImportReportView, import_report
from app.datasets.schemas import DatasetListItem, DatasetOverview, ImportReport, ModeCount
from app.models import ImportRun, IssueReason
from app.web.class_chart import ClassChart, class_chart
from app.web.formatting import Fact, Moment, moment, number, percent
from app.web.urls import cleaning_url, dataset_url

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
        tone=STATUS_TONES[run.status],
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


# --- the dataset page -------------------------------------------------------------------------


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
class DatasetPageView:
    id: int
    name: str
    cleaning_url: str
    source: str
    source_format: str
    root: str
    created: Moment
    stats: list[Fact]
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
        stats=_stats(overview),
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


def _stats(overview: DatasetOverview) -> list[Fact]:
    """The counts at the top of the page; a tone where something needs looking at."""
    return [
        Fact("Usable samples", number(overview.usable_samples), hint="decodable and present"),
        Fact(
            "Unusable",
            number(overview.unusable_samples),
            tone="bad" if overview.unusable_samples else "",
            hint="present, but the file cannot be used as an image",
        ),
        Fact(
            "Missing",
            number(overview.missing_samples),
            tone="warn" if overview.missing_samples else "",
            hint="gone from the source at the last import",
        ),
        Fact("Classes", number(len(overview.classes))),
        Fact(
            "Duplicates",
            number(overview.duplicate_samples),
            hint="usable samples that are byte-identical copies of another",
        ),
        Fact(
            "Label conflicts",
            number(overview.conflict_groups),
            tone="warn" if overview.conflict_groups else "",
            hint="identical images given more than one label",
        ),
    ]
