"""View models of the cleaning dashboard and of the export's HTML report: every number formatted,
every bar and chart coordinate computed and every link built here, so the templates (shared by
the two) only place what they are given.

The report is drawn from report.json's dict (:func:`data_from_report`), the dashboard from the
read functions of :mod:`app.pipeline.reports`; both go through :func:`sections`. Nothing here
reads the clock: the same data gives the same view.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.datasets.schemas import ClassCount
from app.jobs.views import STATE_TONES as JOB_TONES
from app.models import ClassState, RoundState, Stage
from app.pipeline.schemas import (
    ClassSize,
    DroppedClass,
    EstimateRecord,
    FinalMetrics,
    Funnel,
    PipelineStatus,
    RoundSummary,
    TrainingRun,
)
from app.web.class_chart import ClassChart, class_chart
from app.web.formatting import number, percent, plural, rate_text, words
from app.web.metric_chart import MetricChart, metric_chart, metric_names
from app.web.urls import (
    cleaning_live_url,
    dataset_samples_url,
    dataset_url,
    job_url,
    pipeline_samples_url,
    restore_class_url,
    round_url,
)

#: How often the dashboard refreshes its live part while a round is open.
POLL_SECONDS = 5
#: The class-size charts stand side by side: at most this many bars each (neighbouring classes
#: in size order share a bar beyond it).
CLASS_CHART_BARS = 200
CLASS_CHART_WIDTH = 420
CLASS_CHART_HEIGHT = 220

ROUND_TONES = {
    RoundState.RUNNING: "running",
    RoundState.REVIEWING: "running",
    RoundState.DONE: "ok",
    RoundState.FAILED: "bad",
    RoundState.CANCELLED: "warn",
}

#: Funnel steps that take samples out of the training set (drawn in the "out" colour).
_FUNNEL_OUT = frozenset({"duplicates", "junk", "junk_bulk", "rejected", "dropped"})

#: Round stats shown in the rounds table, in this order, with their labels (the rest are in the
#: round's JSON).
_KEY_STATS = {
    "non_rgb": "not RGB",
    "random": "random",
    "train_junk": "junk labels",
    "train_normal": "normal labels",
    "scored": "scored",
    "threshold": "threshold",
    "flagged": "flagged",
    "flagged_strict": "strict flags",
    "pool": "pool",
    "believed_clean": "believed clean",
    "verified_clean": "verified clean",
    "samples": "samples",
    "classes": "classes",
    "k": "k",
    "train": "trained on",
    "predict": "predicted on",
    "eval": "evaluated on",
    "predicted": "predicted",
    "kept": "kept",
    "rejected": "rejected",
    "pulled_back": "pulled back",
    "sampled": "sampled",
    "queued": "queued",
    "decided": "decided",
    "junk": "junk",
    "not_junk": "not junk",
    "accepted": "accepted",
    "relabelled": "relabelled",
    "unsure": "unsure",
    "tasks_cancelled": "tasks cancelled",
    "minimum": "minimum size",
    "kept_classes": "classes kept",
    "dropped_classes": "classes dropped",
    "recipe": "recipe",
    "skipped": "skipped",
}

_ESTIMATE_TITLES = {
    "junk_left": "Junk left among the samples believed clean",
    "flag_precision": "Junk among the strict flags",
    "junk_precision": "Junk among the flagged samples queued",
    "wrongly_rejected": "Good samples left among the rejected (given label right)",
    "usable_rejected": "Usable samples left among the rejected (under some label)",
}

_ESTIMATE_BASES = {
    "junk_left": "junk in a random audit of {trials} unverified samples believed clean",
    "flag_precision": "junk among {trials} strict flags audited at random",
    "junk_precision": "junk among {trials} flagged samples people checked",
    "wrongly_rejected": "given labels confirmed in a random sample of {trials} rejected samples",
    "usable_rejected": "kept under some label in a random sample of {trials} rejected samples",
}

_EVAL_SOURCES = {
    "human_verified": "human-verified samples (confirmed or relabelled), held out of training",
    "held_out": "a random held-out split of the final set (too few human-verified samples)",
}

_FINAL_METRICS = (
    ("top1", "Top-1"),
    ("top5", "Top-5"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("many_shot", "Many-shot"),
    ("medium_shot", "Medium-shot"),
    ("few_shot", "Few-shot"),
)


# --- values and links ---------------------------------------------------------------------------


def _stat_value(value: object) -> str | None:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return number(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and value:
        return value
    return None


@dataclass(frozen=True)
class Fact:
    label: str
    value: str
    url: str | None = None
    tone: str = ""
    hint: str = ""


@dataclass(frozen=True)
class Links:
    """Where numbers link to: the dashboard's API and pages; none in the exported report."""

    dataset_id: int
    enabled: bool

    def samples(self, query: Mapping[str, str] | None) -> str | None:
        return pipeline_samples_url(self.dataset_id, query) if self.enabled else None

    def imported(self) -> str | None:
        return dataset_samples_url(self.dataset_id) if self.enabled else None

    def round(self, round_id: int) -> str | None:
        return round_url(self.dataset_id, round_id) if self.enabled else None

    def job(self, job_id: int | None) -> str | None:
        return job_url(job_id) if self.enabled and job_id is not None else None


# --- what is shown ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CleaningData:
    """Everything the dashboard's sections and the report show, as the read functions of
    :mod:`app.pipeline.reports` return it (``classes``/``final`` None: not read)."""

    dataset_id: int
    funnel: Funnel
    rounds: list[RoundSummary]
    estimates: list[EstimateRecord]
    training: list[TrainingRun]
    classes: list[ClassSize] | None = None
    final: FinalMetrics | None = None


def data_from_report(report: dict[str, Any]) -> CleaningData:
    """report.json's dict (:func:`app.pipeline.export.build_report`) as typed data."""
    final = report.get("final")
    return CleaningData(
        dataset_id=int(report["dataset"]["id"]),
        funnel=Funnel.model_validate(report["funnel"]),
        rounds=[RoundSummary.model_validate(r) for r in report["rounds"]],
        estimates=[EstimateRecord.model_validate(e) for e in report["estimates"]],
        training=[TrainingRun.model_validate(t) for t in report["training"]],
        classes=[ClassSize.model_validate(c) for c in report["classes"]],
        final=FinalMetrics.model_validate(final) if final is not None else None,
    )


# --- the funnel ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunnelBar:
    key: str
    label: str
    count: str
    share: str  # of the usable images
    width: float  # percent of the largest step
    tone: str  # "out": leaves the training set; "final": the final set
    url: str | None


@dataclass(frozen=True)
class FunnelView:
    bars: list[FunnelBar]
    caption: str


def funnel_view(funnel: Funnel, links: Links) -> FunnelView:
    largest = max((step.count for step in funnel.steps), default=0)
    usable = funnel.count("usable")
    bars = []
    for step in funnel.steps:
        url = links.imported() if step.key == "imported" else links.samples(step.filter)
        tone = "out" if step.key in _FUNNEL_OUT else "final" if step.key == "final" else ""
        bars.append(
            FunnelBar(
                key=step.key,
                label=step.label,
                count=number(step.count),
                share="" if step.key == "imported" else percent(step.count, usable),
                width=round(100 * step.count / largest, 2) if largest else 0.0,
                tone=tone,
                url=url,
            )
        )
    return FunnelView(
        bars=bars,
        caption="Samples at each step; bars to scale, shares of the usable images. "
        "Red steps leave the training set.",
    )


# --- rounds -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobLink:
    label: str
    state: str
    tone: str
    url: str | None


@dataclass(frozen=True)
class RoundRow:
    id: int
    source: str
    state: str
    tone: str
    phase: str
    url: str | None
    jobs_done: str
    jobs: list[JobLink]
    tasks_pending: str
    tasks_leased: str
    tasks_done: str
    stats: list[Fact]
    events: list[Fact]
    error: str | None


def _key_stats(stats: dict[str, Any]) -> list[Fact]:
    facts = []
    for key, label in _KEY_STATS.items():
        text = _stat_value(stats.get(key))
        if text is not None:
            facts.append(Fact(label, text))
    for key, name in (("confident_learning", "cleanlab"), ("knn", "kNN")):
        detector = stats.get(key)
        if not isinstance(detector, dict):
            continue
        if "flagged" in detector:
            facts.append(Fact(f"{name} flagged", number(int(detector["flagged"]))))
            facts.append(Fact(f"{name} and top-k both", number(int(detector.get("both", 0)))))
        elif "error" in detector:
            skipped = "not run" in str(detector["error"])
            facts.append(
                Fact(name, "not run" if skipped else "failed", tone="" if skipped else "bad")
            )
    embedding = stats.get("embedding")
    if isinstance(embedding, dict) and "missing" in embedding:
        facts.append(
            Fact(
                "embedded",
                f"{number(int(embedding['missing']))} images in "
                f"{number(int(embedding.get('shards', 1)))} shards",
            )
        )
    sources = stats.get("sources")
    if isinstance(sources, dict):
        for key in ("kept", "soft", "relabelled"):
            if sources.get(key):
                facts.append(Fact(f"trained on {key}", number(int(sources[key]))))
    return facts


def round_row(summary: RoundSummary, links: Links) -> RoundRow:
    done = sum(1 for job in summary.jobs if job.state.value == "succeeded")
    return RoundRow(
        id=summary.id,
        source=summary.source,
        state=summary.state.value,
        tone=ROUND_TONES[summary.state],
        phase=summary.phase,
        url=links.round(summary.id),
        jobs_done=f"{done}/{len(summary.jobs)}" if summary.jobs else "–",
        jobs=[
            JobLink(
                label=f"{job.role} #{job.job_id}",
                state=job.state.value,
                tone=JOB_TONES[job.state],
                url=links.job(job.job_id),
            )
            for job in summary.jobs
        ],
        tasks_pending=number(summary.tasks.pending),
        tasks_leased=number(summary.tasks.leased),
        tasks_done=number(summary.tasks.done),
        stats=_key_stats(summary.stats),
        events=[
            Fact(
                words(kind),
                number(count),
                links.samples({"round_id": str(summary.id), "event": kind}),
            )
            for kind, count in sorted(summary.events.items())
            if count
        ],
        error=summary.error,
    )


# --- estimates ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EstimateRow:
    title: str
    source: str
    url: str | None
    rate: str
    upper: str  # the one-sided upper bound
    lower: str
    confidence: str
    basis: str  # what sample it is computed from
    scaled: str | None  # the bounds as counts of the population
    overall: str | None
    verdict: Fact | None


def estimate_row(record: EstimateRecord, links: Links) -> EstimateRow:
    e = record.estimate
    confidence = f"{e.confidence * 100:.0f}%"
    basis = _ESTIMATE_BASES.get(record.what, "{trials} samples reviewed").format(
        trials=number(e.trials)
    )
    basis = f"{number(e.successes)} of {number(e.trials)}: {basis} ({record.source})"
    scaled = None
    if e.population is not None and e.count is not None:
        scaled = (
            f"about {number(round(e.count))} of {number(e.population)} "
            f"({number(math.floor(e.count_low or 0))}–{number(math.ceil(e.count_high or 0))})"
        )
    overall = None
    if record.overall and record.overall.get("high") is not None:
        overall = (
            f"{rate_text(record.overall.get('rate'))} over everything believed clean "
            f"(upper bound {rate_text(record.overall['high'])})"
        )
    verdict = None
    if record.meets_target is not None:
        verdict = (
            Fact("target", "met", tone="ok")
            if record.meets_target
            else Fact("target", "not met yet", tone="warn")
        )
    return EstimateRow(
        title=_ESTIMATE_TITLES.get(record.what, words(record.what)),
        source=record.source,
        url=links.round(record.round_id),
        rate=rate_text(e.rate),
        upper=rate_text(e.high),
        lower=rate_text(e.low),
        confidence=confidence,
        basis=basis,
        scaled=scaled,
        overall=overall,
        verdict=verdict,
    )


# --- class sizes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassChartView:
    key: str
    title: str
    chart: ClassChart | None
    note: str


@dataclass(frozen=True)
class ClassesView:
    charts: list[ClassChartView]
    classes: str
    dropped: str


def classes_view(classes: Sequence[ClassSize]) -> ClassesView:
    """Before cleaning (every class, usable images by given label), after (the final set by
    label) and as the final recipe's balanced sampler draws them; the last two leave out the
    classes dropped in the class review."""
    active = [c for c in classes if c.state is not ClassState.DROPPED]
    dropped = len(classes) - len(active)
    largest = max((max(c.before, c.after, round(c.sampled)) for c in classes), default=0)

    def chart(counts: list[ClassCount], unit: str) -> ClassChart | None:
        return class_chart(
            counts,
            unit=unit,
            max_bars=CLASS_CHART_BARS,
            width=CLASS_CHART_WIDTH,
            height=CLASS_CHART_HEIGHT,
            largest=largest,
        )

    left_out = (
        f"; {plural(dropped, 'dropped class', 'dropped classes')} left out" if dropped else ""
    )
    return ClassesView(
        charts=[
            ClassChartView(
                "before",
                "Before cleaning",
                chart([ClassCount(c.class_id, c.name, c.before) for c in classes], "image"),
                "usable images by given label, duplicates left out",
            ),
            ClassChartView(
                "after",
                "After cleaning",
                chart([ClassCount(c.class_id, c.name, c.after) for c in active], "image"),
                f"the final set by current label{left_out}",
            ),
            ClassChartView(
                "sampled",
                "As the balanced sampler draws them",
                chart([ClassCount(c.class_id, c.name, round(c.sampled)) for c in active], "draw"),
                f"draws per epoch of the final recipe's sampler{left_out}",
            ),
        ],
        classes=number(len(classes)),
        dropped=number(dropped),
    )


@dataclass(frozen=True)
class DroppedClassRow:
    """A dropped class on the dashboard, with the form that restores it."""

    class_id: int
    name: str
    samples: str
    dropped_by: str
    restore_url: str


def dropped_rows(dataset_id: int, dropped: Sequence[DroppedClass]) -> list[DroppedClassRow]:
    return [
        DroppedClassRow(
            class_id=item.class_id,
            name=item.name,
            samples=plural(item.samples, "image", "images"),
            dropped_by=", ".join(item.dropped_by) or "–",
            restore_url=restore_class_url(dataset_id, item.class_id),
        )
        for item in dropped
    ]


# --- training -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingRow:
    title: str
    source: str
    state: str
    tone: str
    url: str | None
    loss_chart: MetricChart | None
    accuracy_chart: MetricChart | None


def training_row(run: TrainingRun, links: Links) -> TrainingRow:
    losses, accuracies = metric_names(run.epochs)
    return TrainingRow(
        title=f"{run.role} · job #{run.job_id} · {words(run.kind.value)}",
        source=run.source,
        state=run.state.value,
        tone=JOB_TONES[run.state],
        url=links.job(run.job_id),
        loss_chart=metric_chart("Loss", run.epochs, losses),
        accuracy_chart=metric_chart("Accuracy", run.epochs, accuracies, percent=True),
    )


# --- the final model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FinalView:
    state: str
    tone: str
    job: str
    job_url: str | None
    round_url: str | None
    metrics: list[Fact]
    evaluation: str
    facts: list[Fact]
    waiting: bool


def final_view(final: FinalMetrics, links: Links) -> FinalView:
    metrics = final.metrics or {}
    shown = []
    for key, label in _FINAL_METRICS:
        value = metrics.get(key)
        shown.append(
            Fact(
                label,
                rate_text(value) if isinstance(value, int | float) else "–",
                hint="" if value is not None else "no class in this group, or not reported",
            )
        )
    source = _EVAL_SOURCES.get(final.eval_source, final.eval_source or "not chosen yet")
    evaluation = f"Validated on {number(final.eval_samples)} samples: {source}."
    facts = [
        Fact("Trained on", f"{number(final.train_samples)} samples"),
        Fact("Classes", number(final.classes)),
        Fact("Recipe", final.recipe or "–"),
        Fact(
            "Teachers",
            ", ".join(f"job #{t}" for t in final.teachers) or "none",
            hint=final.teacher_note,
        ),
    ]
    return FinalView(
        state=final.state.value,
        tone=ROUND_TONES[final.state],
        job=f"job #{final.job_id}" if final.job_id is not None else "no job",
        job_url=links.job(final.job_id),
        round_url=links.round(final.round_id),
        metrics=shown,
        evaluation=evaluation,
        facts=facts,
        waiting=final.metrics is None,
    )


# --- the sections, the dashboard, the report ----------------------------------------------------


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
    return _stat_value(value) or ""
