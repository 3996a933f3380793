"""What the dashboard's sections share: the data they are drawn from (read from the database
or from report.json), where their numbers link to, and how values and round states read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.models import RoundState
from app.pipeline.schemas import (
    ClassSize,
    EstimateRecord,
    FinalMetrics,
    Funnel,
    RoundSummary,
    TrainingRun,
)
from app.web.formatting import number
from app.web.urls import dataset_samples_url, job_url, pipeline_samples_url, round_url

ROUND_TONES = {
    RoundState.RUNNING: "running",
    RoundState.REVIEWING: "running",
    RoundState.DONE: "ok",
    RoundState.FAILED: "bad",
    RoundState.CANCELLED: "warn",
}


def stat_value(value: object) -> str | None:
    """A round stat or config value as text; None for what is not shown (empty, a list…)."""
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
