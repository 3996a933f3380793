"""The cleaning dashboard (its live part, polled while a round is open, and the parts that
change when a round ends) and the export's report.html, assembled from the sections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.models import Stage
from app.pipeline.schemas import ClassSize, DroppedClass, FinalMetrics, PipelineStatus, TrainingRun
from app.pipeline.views.common import CleaningData, Links, data_from_report, stat_value
from app.pipeline.views.progress import (
    EstimateRow,
    FunnelView,
    RoundRow,
    estimate_row,
    funnel_view,
    round_row,
)
from app.pipeline.views.results import (
    ClassesView,
    DroppedClassRow,
    FinalView,
    TrainingRow,
    classes_view,
    dropped_rows,
    final_view,
    training_row,
)
from app.web.formatting import Fact, number, words
from app.web.urls import cleaning_live_url, dataset_url

#: How often the dashboard refreshes its live part while a round is open.
POLL_SECONDS = 5


@dataclass(frozen=True)
class Sections:
    funnel: FunnelView
    rounds: list[RoundRow]
    estimates: list[EstimateRow]
    training: list[TrainingRow]
    classes: ClassesView | None
    final: FinalView | None


def sections(data: CleaningData, *, links: bool) -> Sections:
    """The sections the dashboard and the report share; ``links``: numbers link to the samples
    API, rounds and jobs (the dashboard), or not (the exported file)."""
    linker = Links(data.dataset_id, links)
    return Sections(
        funnel=funnel_view(data.funnel, linker),
        rounds=[round_row(r, linker) for r in data.rounds],
        estimates=[estimate_row(e, linker) for e in data.estimates],
        training=[training_row(t, linker) for t in data.training],
        classes=classes_view(data.classes) if data.classes is not None else None,
        final=final_view(data.final, linker) if data.final is not None else None,
    )


@dataclass(frozen=True)
class StatusView:
    stage: str
    stages: list[Fact]  # every stage, tone "ok" done, "running" the current one
    auto: str
    auto_tone: str
    note: str
    open_round: RoundRow | None
    next_step: str
    queues: list[Fact]


def status_view(status: PipelineStatus, links: Links) -> StatusView:
    order = list(Stage)
    current = order.index(status.stage)
    stages = []
    for index, stage in enumerate(order):
        if index < current or status.stage is Stage.DONE:
            stages.append(Fact(stage.value, "done", tone="ok"))
        elif index == current:
            stages.append(Fact(stage.value, "now", tone="running"))
        else:
            stages.append(Fact(stage.value, ""))
    step = status.next_step
    if step is None:
        next_step = "nothing: the loop is done, or a round failed and waits for a retry"
    elif step.kind is None:
        next_step = f"move to the {step.stage.value} stage: {step.reason}"
    else:
        next_step = f"start a {words(step.kind.value)} round ({step.stage.value}): {step.reason}"
    if status.open_round is not None:
        next_step = f"after {status.open_round.source}: {next_step}"
    return StatusView(
        stage=status.stage.value,
        stages=stages,
        auto="on" if status.auto else "off",
        auto_tone="ok" if status.auto else "",
        note=status.note,
        open_round=round_row(status.open_round, links) if status.open_round else None,
        next_step=next_step,
        queues=[
            Fact(
                words(q.kind.value),
                f"{number(q.pending)} waiting · {number(q.leased)} leased · {number(q.done)} done",
            )
            for q in status.queues
        ],
    )


@dataclass(frozen=True)
class LiveView:
    """The part of the dashboard htmx refreshes while a round is open (``poll_url``)."""

    dataset_id: int
    poll_url: str | None
    poll_seconds: int
    status: StatusView
    sections: Sections


@dataclass(frozen=True)
class NoPipelineView:
    cli: str
    api: str


@dataclass(frozen=True)
class DashboardView:
    """The page: its live part, then the class sizes and the final model (which change when a
    round ends: the page reloads then); ``missing`` when there is no pipeline yet."""

    dataset_id: int
    name: str
    dataset_url: str
    live: LiveView | None
    classes: ClassesView | None
    dropped: list[DroppedClassRow]
    final: FinalView | None
    missing: NoPipelineView | None


def live_view(status: PipelineStatus, training: list[TrainingRun]) -> LiveView:
    data = CleaningData(
        dataset_id=status.dataset_id,
        funnel=status.funnel,
        rounds=status.rounds,
        estimates=status.estimates,
        training=training,
    )
    return LiveView(
        dataset_id=status.dataset_id,
        poll_url=cleaning_live_url(status.dataset_id) if status.open_round is not None else None,
        poll_seconds=POLL_SECONDS,
        status=status_view(status, Links(status.dataset_id, enabled=True)),
        sections=sections(data, links=True),
    )


def dashboard(
    status: PipelineStatus,
    training: list[TrainingRun],
    classes: list[ClassSize],
    final: FinalMetrics | None,
    dropped: Sequence[DroppedClass] = (),
) -> DashboardView:
    links = Links(status.dataset_id, enabled=True)
    return DashboardView(
        dataset_id=status.dataset_id,
        name=status.dataset_name,
        dataset_url=dataset_url(status.dataset_id),
        live=live_view(status, training),
        classes=classes_view(classes),
        dropped=dropped_rows(status.dataset_id, dropped),
        final=final_view(final, links) if final is not None else None,
        missing=None,
    )


def no_pipeline(dataset_id: int, name: str) -> DashboardView:
    return DashboardView(
        dataset_id=dataset_id,
        name=name,
        dataset_url=dataset_url(dataset_id),
        live=None,
        classes=None,
        dropped=[],
        final=None,
        missing=NoPipelineView(
            cli=f"thresher pipeline create {name}",
            api=f"POST /api/pipelines/{dataset_id}",
        ),
    )


@dataclass(frozen=True)
class ReportView:
    name: str
    root: str
    stage: str
    facts: list[Fact]
    config: list[Fact]
    sections: Sections


def report_view(report: dict[str, Any]) -> ReportView:
    """The exported report.html's view, from report.json's dict (with its ``export`` part)."""
    exported = report.get("export") or {}
    facts = [Fact("Stage", str(report["stage"]))]
    if exported:
        facts += [
            Fact("Samples in the manifest", number(int(exported["samples"]))),
            Fact("Final set", number(int(exported["final"]))),
            Fact("Images linked", number(int(exported["images"]))),
            Fact("Model files", ", ".join(exported["model_files"]) or "none"),
        ]
    return ReportView(
        name=str(report["dataset"]["name"]),
        root=str(report["dataset"]["root"]),
        stage=str(report["stage"]),
        facts=facts,
        config=[
            Fact(key, text)
            for key, value in sorted(report["config"].items())
            if (text := _config_value(value))
        ],
        sections=sections(data_from_report(report), links=False),
    )


def _config_value(value: object) -> str:
    if value is None:
        return "auto"
    if isinstance(value, dict | list):
        return str(value) if value else ""
    return stat_value(value) or ""
