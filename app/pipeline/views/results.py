"""What came out of the cleaning loop: class sizes before and after (three charts on one
scale), the dropped classes, every training job's curves, and the final model's metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.datasets.schemas import ClassCount
from app.jobs.views import STATE_TONES as JOB_TONES
from app.models import ClassState
from app.pipeline.schemas import ClassSize, DroppedClass, FinalMetrics, TrainingRun
from app.pipeline.views.common import ROUND_TONES, Links
from app.web.class_chart import ClassChart, class_chart
from app.web.formatting import Fact, number, plural, rate_text, words
from app.web.metric_chart import MetricChart, metric_chart, metric_names
from app.web.urls import restore_class_url

#: The class-size charts stand side by side: at most this many bars each (neighbouring classes
#: in size order share a bar beyond it).
CLASS_CHART_BARS = 200
CLASS_CHART_WIDTH = 420
CLASS_CHART_HEIGHT = 220

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
