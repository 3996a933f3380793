"""Pipeline API (engineers): create and configure a dataset's cleaning loop, start and advance
its steps, follow its rounds, read every number the dashboard shows, trace each to samples, and
download the export's manifest and report. (The server's background reconciler starts in
:func:`app.main.create_app`.)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import PlainTextResponse

from app.auth.deps import EngineerDep
from app.datasets.deps import DatasetDep
from app.db import SessionDep
from app.errors import NotFound
from app.jobs.config import job_settings
from app.models import EventKind, SampleStatus
from app.pipeline import class_reports, export, reports, sample_reports, service
from app.pipeline.config import PipelineEnv
from app.pipeline.deps import PipelineDep
from app.pipeline.schemas import (
    AdvanceCreate,
    AdvanceRead,
    ClassSize,
    EstimateRecord,
    FinalMetrics,
    Funnel,
    NextStepRead,
    PipelineCreate,
    PipelineStatus,
    PipelineUpdate,
    ReconcileRead,
    RoundSummary,
    SampleHistory,
    SamplePage,
    StepCreate,
    TrainingRun,
)
from app.pipeline.stages.context import StepParams

router = APIRouter(prefix="/api/pipelines", tags=["pipeline"])


def pipeline_env(request: Request) -> PipelineEnv:
    return PipelineEnv(data_dir=request.app.state.settings.data_dir, jobs=job_settings(request))


EnvDep = Annotated[PipelineEnv, Depends(pipeline_env)]


def _status(session: SessionDep, dataset: DatasetDep) -> PipelineStatus:
    return reports.status(session, service.get_pipeline(session, dataset), dataset)


# --- the pipeline -------------------------------------------------------------------------------


@router.post("/{dataset_id}", status_code=status.HTTP_201_CREATED)
def create_pipeline(
    principal: EngineerDep,
    dataset: DatasetDep,
    body: PipelineCreate,
    session: SessionDep,
    response: Response,
) -> PipelineStatus:
    """Creates the dataset's pipeline (201), or returns the existing one unchanged (200)."""
    _, created = service.create_pipeline(
        session, dataset=dataset, config=body.config, auto=body.auto, user=principal.user
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return _status(session, dataset)


@router.get("/{dataset_id}")
def read_pipeline(
    _: EngineerDep, dataset: DatasetDep, pipeline: PipelineDep, session: SessionDep
) -> PipelineStatus:
    """Stage, config, rounds, queues, the funnel and the estimates."""
    return reports.status(session, pipeline, dataset)


@router.patch("/{dataset_id}")
def update_pipeline(
    _: EngineerDep, dataset: DatasetDep, body: PipelineUpdate, session: SessionDep
) -> PipelineStatus:
    """Changes config keys, turns auto mode on or off, or moves to a stage."""
    service.update_pipeline(
        session, dataset=dataset, config=body.config, auto=body.auto, stage=body.stage
    )
    return _status(session, dataset)


@router.post("/{dataset_id}/steps", status_code=status.HTTP_201_CREATED)
def start_step(
    principal: EngineerDep,
    dataset: DatasetDep,
    body: StepCreate,
    session: SessionDep,
    env: EnvDep,
    response: Response,
) -> RoundSummary:
    """Starts a round (201); with a ``request_key`` used before, returns that round (200)."""
    round_, created = service.start_step(
        session,
        dataset=dataset,
        kind=body.kind,
        params=StepParams(
            recipe=body.recipe,
            seed=body.seed,
            n=body.n,
            fraction=body.fraction,
            iteration=body.iteration,
            threshold=body.threshold,
        ),
        env=env,
        user=principal.user,
        request_key=body.request_key,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return reports.round_summary(session, round_)


@router.post("/{dataset_id}/advance")
def advance(
    principal: EngineerDep,
    dataset: DatasetDep,
    body: AdvanceCreate,
    session: SessionDep,
    env: EnvDep,
) -> AdvanceRead:
    """Starts the step auto mode would start next (or moves to the next stage)."""
    round_, step = service.advance(
        session, dataset=dataset, env=env, user=principal.user, request_key=body.request_key
    )
    pipeline = service.get_pipeline(session, dataset)
    return AdvanceRead(
        round=reports.round_summary(session, round_) if round_ else None,
        stage=pipeline.stage,
        reason=step.reason if step else "nothing to do: the loop is done or a round failed",
    )


@router.post("/{dataset_id}/reconcile")
def reconcile(
    _: EngineerDep,
    dataset: DatasetDep,
    session: SessionDep,
    env: EnvDep,
    full: bool = False,
) -> ReconcileRead:
    """Applies new decisions and finished jobs now (the server also does it every few
    seconds); ``full`` re-reads every decision."""
    result = service.reconcile_now(session, dataset=dataset, env=env, full=full)
    return ReconcileRead(
        decisions=result.decisions,
        samples_changed=result.samples_changed,
        classes_changed=result.classes_changed,
        rounds_advanced=result.rounds_advanced,
        rounds_started=result.rounds_started,
        note=result.note,
    )


# --- rounds -------------------------------------------------------------------------------------


@router.get("/{dataset_id}/rounds")
def list_rounds(_: EngineerDep, pipeline: PipelineDep, session: SessionDep) -> list[RoundSummary]:
    return reports.rounds(session, pipeline)


@router.get("/{dataset_id}/rounds/{round_id}")
def read_round(
    _: EngineerDep, pipeline: PipelineDep, round_id: int, session: SessionDep
) -> RoundSummary:
    return reports.round_summary(session, service.get_round(session, pipeline, round_id))


@router.post("/{dataset_id}/rounds/{round_id}/finish")
def finish_round(
    _: EngineerDep, dataset: DatasetDep, round_id: int, session: SessionDep, env: EnvDep
) -> RoundSummary:
    """Ends a review early; its remaining tasks still count when they are decided."""
    round_ = service.finish_round(session, dataset=dataset, round_id=round_id, env=env)
    return reports.round_summary(session, round_)


@router.post("/{dataset_id}/rounds/{round_id}/cancel")
def cancel_round(
    _: EngineerDep, dataset: DatasetDep, round_id: int, session: SessionDep, env: EnvDep
) -> RoundSummary:
    round_ = service.cancel_round(session, dataset=dataset, round_id=round_id, env=env)
    return reports.round_summary(session, round_)


@router.post("/{dataset_id}/rounds/{round_id}/retry")
def retry_round(
    _: EngineerDep, dataset: DatasetDep, round_id: int, session: SessionDep, env: EnvDep
) -> RoundSummary:
    round_ = service.retry_round(session, dataset=dataset, round_id=round_id, env=env)
    return reports.round_summary(session, round_)


# --- what the dashboard shows -------------------------------------------------------------------


@router.get("/{dataset_id}/next")
def next_step(_: EngineerDep, pipeline: PipelineDep, session: SessionDep) -> NextStepRead | None:
    step = service.preview_next(session, pipeline)
    return NextStepRead(stage=step.stage, kind=step.kind, reason=step.reason) if step else None


@router.get("/{dataset_id}/funnel")
def read_funnel(
    _: EngineerDep, dataset: DatasetDep, __: PipelineDep, session: SessionDep
) -> Funnel:
    return reports.funnel(session, dataset)


@router.get("/{dataset_id}/estimates")
def read_estimates(
    _: EngineerDep, pipeline: PipelineDep, session: SessionDep
) -> list[EstimateRecord]:
    return reports.estimates(session, pipeline)


@router.get("/{dataset_id}/classes")
def read_classes(
    _: EngineerDep, dataset: DatasetDep, pipeline: PipelineDep, session: SessionDep
) -> list[ClassSize]:
    return class_reports.class_sizes(session, pipeline, dataset)


@router.post("/{dataset_id}/classes/{class_id}/restore")
def restore_class(
    principal: EngineerDep, dataset: DatasetDep, class_id: int, session: SessionDep
) -> list[ClassSize]:
    """Restores a dropped class: kept again, its samples back in the training set, the votes
    on it so far set aside. Returns every class as ``…/classes`` does."""
    service.restore_class(session, dataset=dataset, class_id=class_id, user=principal.user)
    return class_reports.class_sizes(session, service.get_pipeline(session, dataset), dataset)


@router.get("/{dataset_id}/training")
def read_training(_: EngineerDep, pipeline: PipelineDep, session: SessionDep) -> list[TrainingRun]:
    return reports.training_runs(session, pipeline)


@router.get("/{dataset_id}/final")
def read_final(_: EngineerDep, pipeline: PipelineDep, session: SessionDep) -> FinalMetrics | None:
    return reports.final_metrics(session, pipeline)


@router.get("/{dataset_id}/samples")
def list_samples(
    _: EngineerDep,
    dataset: DatasetDep,
    __: PipelineDep,
    session: SessionDep,
    status: SampleStatus | None = None,
    final: bool = False,
    class_id: int | None = None,
    round_id: int | None = None,
    event: EventKind | None = None,
    after_id: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=sample_reports.MAX_PAGE)] = 100,
) -> SamplePage:
    """The samples behind a number: by status, in the final set, by class, or with an event
    (of a kind, in a round). Page with ``next_after_id``."""
    return sample_reports.list_samples(
        session,
        dataset,
        status=status,
        final=final,
        class_id=class_id,
        round_id=round_id,
        event=event,
        after_id=after_id,
        limit=limit,
    )


@router.get("/{dataset_id}/samples/{sample_id}")
def read_sample(
    _: EngineerDep,
    dataset: DatasetDep,
    pipeline: PipelineDep,
    sample_id: int,
    session: SessionDep,
    env: EnvDep,
) -> SampleHistory:
    """A sample's state and history: events, human decisions, training runs, predictions."""
    history = sample_reports.sample_history(
        session, pipeline, dataset, sample_id, data_dir=env.data_dir
    )
    if history is None:
        raise NotFound(f"sample {sample_id} is not in this dataset's pipeline")
    return history


# --- export -------------------------------------------------------------------------------------


@router.get("/{dataset_id}/export/manifest.csv", response_class=PlainTextResponse)
def export_csv(
    _: EngineerDep, dataset: DatasetDep, pipeline: PipelineDep, session: SessionDep
) -> PlainTextResponse:
    """The cleaned manifest as CSV (every sample: final label, status, reason, history)."""
    rows = export.manifest_rows(session, pipeline, dataset)
    return PlainTextResponse(export.manifest_csv(rows), media_type="text/csv")


@router.get("/{dataset_id}/export/manifest.jsonl", response_class=PlainTextResponse)
def export_jsonl(
    _: EngineerDep, dataset: DatasetDep, pipeline: PipelineDep, session: SessionDep
) -> PlainTextResponse:
    rows = export.manifest_rows(session, pipeline, dataset)
    return PlainTextResponse(export.manifest_jsonl(rows), media_type="application/x-ndjson")


@router.get("/{dataset_id}/export/report.json")
def export_report(
    _: EngineerDep, dataset: DatasetDep, pipeline: PipelineDep, session: SessionDep
) -> Response:
    """Every number of the run (what ``thresher export`` writes as report.json)."""
    data = export.report_json(export.build_report(session, pipeline, dataset))
    return Response(data, media_type="application/json")
