"""View model of the engineers' statistics page: queues by state, each annotator's pace,
agreement on tasks decided twice. Every field is text, ready to print."""

from __future__ import annotations

from dataclasses import dataclass

from app.review.records import QueueCount, QueueStats
from app.review.views import KIND_TITLES, queue_url, seconds_text, share_text
from app.web.formatting import number, timestamp


@dataclass(frozen=True)
class QueueRow:
    dataset_name: str
    title: str
    url: str
    pending: str
    leased: str
    done: str
    cancelled: str
    share_done: str


@dataclass(frozen=True)
class AnnotatorRow:
    username: str
    decisions: str
    per_hour: str
    active_hours: str
    median: str


@dataclass(frozen=True)
class AgreementRow:
    title: str
    pairs: str
    agreed: str
    rate: str


@dataclass(frozen=True)
class StatsView:
    hours: int
    since: str
    queues: list[QueueRow]
    annotators: list[AnnotatorRow]
    median: str
    agreement: list[AgreementRow]


def stats_page(stats: QueueStats, *, hours: int) -> StatsView:
    def share(queue: QueueCount) -> str:
        total = queue.pending + queue.leased + queue.done
        return share_text(queue.done / total) if total else "–"

    return StatsView(
        hours=hours,
        since=timestamp(stats.since),
        queues=[
            QueueRow(
                dataset_name=queue.dataset_name,
                title=KIND_TITLES[queue.kind],
                url=queue_url(queue.dataset_id, queue.kind),
                pending=number(queue.pending),
                leased=number(queue.leased),
                done=number(queue.done),
                cancelled=number(queue.cancelled),
                share_done=share(queue),
            )
            for queue in stats.queues
        ],
        annotators=[
            AnnotatorRow(
                username=a.username,
                decisions=number(a.decisions),
                per_hour=f"{a.decisions_per_hour:,.0f}",
                active_hours=number(a.active_hours),
                median=seconds_text(a.median_seconds),
            )
            for a in stats.annotators
        ],
        median=seconds_text(stats.median_seconds),
        agreement=[
            AgreementRow(
                title=KIND_TITLES[a.kind],
                pairs=number(a.pairs),
                agreed=number(a.agreed),
                rate=share_text(a.rate) if a.rate is not None else "–",
            )
            for a in stats.agreement
        ],
    )
