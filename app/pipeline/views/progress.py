"""What the cleaning loop did: the funnel of samples, the rounds with their jobs, tasks and
stats, and the estimates with their confidence bounds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from app.jobs.views import STATE_TONES as JOB_TONES
from app.pipeline.schemas import EstimateRecord, Funnel, RoundSummary
from app.pipeline.views.common import ROUND_TONES, Links, stat_value
from app.web.formatting import Fact, number, percent, rate_text, words

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
        text = stat_value(stats.get(key))
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
                url=links.samples({"round_id": str(summary.id), "event": kind}),
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
