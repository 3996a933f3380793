"""Every query of the pipeline area.

Pipelines are locked row by row (``FOR UPDATE``; on SQLite every transaction already holds the
write lock from ``BEGIN IMMEDIATE``), so two server processes never advance the same pipeline at
once. Sample states and events are written in bulk (executemany), never row by row.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session

from app.models import (
    ClassState,
    Dataset,
    EventKind,
    Job,
    JobResult,
    LabelClass,
    Pipeline,
    PipelineClass,
    PipelineEvent,
    PipelineRound,
    PipelineRoundJob,
    PipelineSample,
    ReviewTask,
    RoundKind,
    RoundState,
    Sample,
    SampleStatus,
    TaskKind,
    TaskState,
    Verdict,
)

#: Ids per ``IN (...)`` list: well under SQLite's variable limit.
CHUNK = 5_000

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _usable() -> ColumnElement[bool]:
    return and_(Sample.error.is_(None), Sample.missing.is_(False), Sample.sha256.is_not(None))


# --- pipelines ----------------------------------------------------------------------------------


def get_pipeline(
    session: Session,
    *,
    dataset_id: int | None = None,
    pipeline_id: int | None = None,
    for_update: bool = False,
    skip_locked: bool = False,
) -> Pipeline | None:
    """The pipeline of a dataset (or by id); ``for_update`` row-locks it (``skip_locked``: None
    when another transaction holds it)."""
    query = select(Pipeline)
    if dataset_id is not None:
        query = query.where(Pipeline.dataset_id == dataset_id)
    if pipeline_id is not None:
        query = query.where(Pipeline.id == pipeline_id)
    if for_update:
        query = query.with_for_update(skip_locked=skip_locked)
        # A row the session already holds would be returned as it was: read it again.
        query = query.execution_options(populate_existing=True)
    return session.scalars(query).one_or_none()


def dataset_by_name(session: Session, name: str) -> Dataset | None:
    return session.scalars(select(Dataset).where(Dataset.name == name)).one_or_none()


def pipeline_ids(session: Session) -> list[int]:
    return list(session.scalars(select(Pipeline.id).order_by(Pipeline.id)))


# --- rounds -------------------------------------------------------------------------------------


def list_rounds(session: Session, pipeline_id: int) -> list[PipelineRound]:
    """Oldest first."""
    query = (
        select(PipelineRound)
        .where(PipelineRound.pipeline_id == pipeline_id)
        .order_by(PipelineRound.id)
        .execution_options(populate_existing=True)
    )
    return list(session.scalars(query))


def get_round(session: Session, round_id: int) -> PipelineRound | None:
    return session.get(PipelineRound, round_id, populate_existing=True)


def round_by_request_key(session: Session, pipeline_id: int, key: str) -> PipelineRound | None:
    query = select(PipelineRound).where(
        PipelineRound.pipeline_id == pipeline_id, PipelineRound.request_key == key
    )
    return session.scalars(query).one_or_none()


def next_round_number(session: Session, pipeline_id: int, kind: RoundKind) -> int:
    highest = session.scalar(
        select(func.max(PipelineRound.number)).where(
            PipelineRound.pipeline_id == pipeline_id, PipelineRound.kind == kind
        )
    )
    return int(highest or 0) + 1


def latest_round(
    session: Session, pipeline_id: int, kinds: Collection[RoundKind], *, done: bool = True
) -> PipelineRound | None:
    query = select(PipelineRound).where(
        PipelineRound.pipeline_id == pipeline_id, PipelineRound.kind.in_(list(kinds))
    )
    if done:
        query = query.where(PipelineRound.state == RoundState.DONE)
    return session.scalars(query.order_by(PipelineRound.id.desc()).limit(1)).first()


def add_round_job(session: Session, *, round_id: int, job_id: int, role: str) -> None:
    session.add(PipelineRoundJob(round_id=round_id, job_id=job_id, role=role))


def round_jobs(session: Session, round_id: int) -> list[tuple[Job, str]]:
    """The round's jobs with their roles, in the order they were queued."""
    rows = session.execute(
        select(Job, PipelineRoundJob.role)
        .join(PipelineRoundJob, PipelineRoundJob.job_id == Job.id)
        .where(PipelineRoundJob.round_id == round_id)
        .order_by(Job.id)
        .execution_options(populate_existing=True)
    )
    return [(job, role) for job, role in rows]


def jobs_of_rounds(
    session: Session, round_ids: Collection[int]
) -> dict[int, list[tuple[Job, str]]]:
    result: dict[int, list[tuple[Job, str]]] = {}
    if not round_ids:
        return result
    rows = session.execute(
        select(PipelineRoundJob.round_id, Job, PipelineRoundJob.role)
        .join(Job, Job.id == PipelineRoundJob.job_id)
        .where(PipelineRoundJob.round_id.in_(list(round_ids)))
        .order_by(Job.id)
    )
    for round_id, job, role in rows:
        result.setdefault(round_id, []).append((job, role))
    return result


# --- samples and classes ------------------------------------------------------------------------


def init_samples(session: Session, dataset_id: int, now: datetime) -> int:
    """Adds a state row for every usable sample of the dataset that has none (a copy of
    another sample starts as ``duplicate``); returns how many were added."""
    known = exists().where(PipelineSample.sample_id == Sample.id)
    status = case(
        (Sample.duplicate_of_id.is_(None), literal(SampleStatus.CANDIDATE.value)),
        else_=literal(SampleStatus.DUPLICATE.value),
    )
    source = select(
        Sample.id,
        Sample.dataset_id,
        status,
        status,
        Sample.class_id,
        Sample.class_id,
        literal(now, PipelineSample.updated_at.type),
    ).where(Sample.dataset_id == dataset_id, _usable(), ~known)
    result = session.execute(
        insert(PipelineSample).from_select(
            [
                "sample_id",
                "dataset_id",
                "status",
                "model_status",
                "given_class_id",
                "label_class_id",
                "updated_at",
            ],
            source,
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def new_duplicates(session: Session, dataset_id: int) -> list[tuple[int, int, int]]:
    """(sample id, original id, class id) of duplicate samples with no duplicate event yet."""
    noted = exists().where(
        PipelineEvent.sample_id == PipelineSample.sample_id,
        PipelineEvent.kind == EventKind.DUPLICATE,
    )
    rows = session.execute(
        select(PipelineSample.sample_id, Sample.duplicate_of_id, PipelineSample.given_class_id)
        .join(Sample, Sample.id == PipelineSample.sample_id)
        .where(
            PipelineSample.dataset_id == dataset_id,
            PipelineSample.status == SampleStatus.DUPLICATE,
            ~noted,
        )
    )
    return [(int(a), int(b or 0), int(c)) for a, b, c in rows]


def init_classes(session: Session, dataset_id: int, now: datetime) -> None:
    known = exists().where(PipelineClass.class_id == LabelClass.id)
    source = select(
        LabelClass.id,
        LabelClass.dataset_id,
        literal(ClassState.ACTIVE.value),
        literal(now, PipelineClass.updated_at.type),
    ).where(LabelClass.dataset_id == dataset_id, ~known)
    session.execute(
        insert(PipelineClass).from_select(["class_id", "dataset_id", "state", "updated_at"], source)
    )


class SampleState(NamedTuple):
    sample_id: int
    status: SampleStatus
    model_status: SampleStatus
    given_class_id: int
    label_class_id: int
    human_verdict: Verdict | None
    decision_id: int | None


_STATE_COLUMNS = (
    PipelineSample.sample_id,
    PipelineSample.status,
    PipelineSample.model_status,
    PipelineSample.given_class_id,
    PipelineSample.label_class_id,
    PipelineSample.human_verdict,
    PipelineSample.decision_id,
)


def sample_states(session: Session, sample_ids: Collection[int]) -> dict[int, SampleState]:
    result: dict[int, SampleState] = {}
    for part in chunks(sorted(sample_ids)):
        rows = session.execute(select(*_STATE_COLUMNS).where(PipelineSample.sample_id.in_(part)))
        result.update({row[0]: SampleState._make(row) for row in rows})
    return result


def states_where(
    session: Session,
    dataset_id: int,
    *,
    statuses: Collection[SampleStatus] | None = None,
    label_class_ids: Collection[int] | None = None,
    unverified: bool = False,
    modes: tuple[bool, str] | None = None,
) -> list[SampleState]:
    """State rows of present, usable samples, by sample id: with one of ``statuses``, labelled
    with one of ``label_class_ids``, without a human verdict (``unverified``), or whose image
    mode is (``(True, "RGB")``) or is not (``(False, "RGB")``) the given one."""
    query = (
        select(*_STATE_COLUMNS)
        .join(Sample, Sample.id == PipelineSample.sample_id)
        .where(PipelineSample.dataset_id == dataset_id, _usable())
    )
    if statuses is not None:
        query = query.where(PipelineSample.status.in_(list(statuses)))
    if label_class_ids is not None:
        query = query.where(PipelineSample.label_class_id.in_(list(label_class_ids)))
    if unverified:
        query = query.where(PipelineSample.decision_id.is_(None))
    if modes is not None:
        wanted, mode = modes
        query = query.where(Sample.mode == mode if wanted else Sample.mode != mode)
    return [SampleState._make(row) for row in session.execute(query.order_by(Sample.id))]


def label_ranks(session: Session, sample_ids: Collection[int]) -> dict[int, int | None]:
    """The rank of each sample's label in its last prediction (-1: not among the recorded)."""
    result: dict[int, int | None] = {}
    for part in chunks(sorted(sample_ids)):
        rows = session.execute(
            select(PipelineSample.sample_id, PipelineSample.label_rank).where(
                PipelineSample.sample_id.in_(part)
            )
        )
        result.update({int(sid): rank for sid, rank in rows})
    return result


def human_sample_pool(session: Session, dataset_id: int) -> list[int]:
    """Rejected samples no human has judged the label of, with no label_check task open."""
    open_task = exists().where(
        ReviewTask.sample_id == PipelineSample.sample_id,
        ReviewTask.kind == TaskKind.LABEL_CHECK,
        ReviewTask.state.in_([TaskState.PENDING, TaskState.LEASED]),
    )
    query = (
        select(PipelineSample.sample_id)
        .join(Sample, Sample.id == PipelineSample.sample_id)
        .where(
            PipelineSample.dataset_id == dataset_id,
            _usable(),
            PipelineSample.status == SampleStatus.REJECTED,
            (PipelineSample.human_verdict.is_(None))
            | (PipelineSample.human_verdict == Verdict.NOT_JUNK),
            ~open_task,
        )
        .order_by(PipelineSample.sample_id)
    )
    return list(session.scalars(query))


def pred_jobs(session: Session, sample_ids: Collection[int]) -> dict[int, int]:
    """The job whose prediction of each sample is the latest (for suggestions)."""
    result: dict[int, int] = {}
    for part in chunks(sorted(sample_ids)):
        rows = session.execute(
            select(PipelineSample.sample_id, PipelineSample.pred_job_id).where(
                PipelineSample.sample_id.in_(part), PipelineSample.pred_job_id.is_not(None)
            )
        )
        result.update({int(sid): int(job_id or 0) for sid, job_id in rows})
    return result


def update_samples(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Updates state rows by ``sample_id`` (each mapping names the columns it sets; mappings
    with the same keys are sent together)."""
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    for group in groups.values():
        for part in chunks(group, 2_000):
            session.execute(update(PipelineSample), list(part))


def dataset_sample_count(session: Session, dataset_id: int) -> int:
    """Every sample row of the dataset: usable, unusable and missing files."""
    return int(session.scalar(select(func.count()).where(Sample.dataset_id == dataset_id)) or 0)


def verdict_counts(session: Session, dataset_id: int) -> dict[Verdict, int]:
    """Samples per applied human verdict."""
    rows = session.execute(
        select(PipelineSample.human_verdict, func.count())
        .where(PipelineSample.dataset_id == dataset_id, PipelineSample.human_verdict.is_not(None))
        .group_by(PipelineSample.human_verdict)
    )
    return {verdict: int(n) for verdict, n in rows if verdict is not None}


def status_counts(session: Session, dataset_id: int) -> dict[SampleStatus, int]:
    rows = session.execute(
        select(PipelineSample.status, func.count())
        .where(PipelineSample.dataset_id == dataset_id)
        .group_by(PipelineSample.status)
    )
    return {status: int(count) for status, count in rows}


def class_counts(
    session: Session,
    dataset_id: int,
    *,
    statuses: Collection[SampleStatus] | None = None,
    by_given: bool = False,
) -> dict[int, int]:
    """Samples per class (their current label, or ``by_given`` their imported one)."""
    column = PipelineSample.given_class_id if by_given else PipelineSample.label_class_id
    query = select(column, func.count()).where(PipelineSample.dataset_id == dataset_id)
    if statuses is not None:
        query = query.where(PipelineSample.status.in_(list(statuses)))
    return {int(cid): int(n) for cid, n in session.execute(query.group_by(column))}


def set_sample_scores(
    session: Session, column: str, values: Sequence[tuple[int, float | None]]
) -> None:
    update_samples(session, [{"sample_id": sid, column: value} for sid, value in values])


def pipeline_classes(session: Session, dataset_id: int) -> dict[int, PipelineClass]:
    query = (
        select(PipelineClass)
        .where(PipelineClass.dataset_id == dataset_id)
        .execution_options(populate_existing=True)
    )
    return {row.class_id: row for row in session.scalars(query)}


def dropped_class_ids(session: Session, dataset_id: int) -> set[int]:
    query = select(PipelineClass.class_id).where(
        PipelineClass.dataset_id == dataset_id, PipelineClass.state == ClassState.DROPPED
    )
    return set(session.scalars(query))


def class_names(session: Session, dataset_id: int) -> dict[int, str]:
    rows = session.execute(
        select(LabelClass.id, LabelClass.name).where(LabelClass.dataset_id == dataset_id)
    )
    return {int(cid): name for cid, name in rows}


def sample_files(session: Session, sample_ids: Collection[int]) -> dict[int, tuple[str, str]]:
    """(path, sha256) of each sample."""
    result: dict[int, tuple[str, str]] = {}
    for part in chunks(sorted(sample_ids)):
        rows = session.execute(
            select(Sample.id, Sample.path, Sample.sha256).where(Sample.id.in_(part))
        )
        result.update({int(sid): (path, sha or "") for sid, path, sha in rows})
    return result


# --- events -------------------------------------------------------------------------------------


def event_row(
    dataset_id: int,
    *,
    kind: EventKind,
    now: datetime,
    round_id: int | None = None,
    sample_id: int | None = None,
    class_id: int | None = None,
    from_status: SampleStatus | None = None,
    to_status: SampleStatus | None = None,
    score: float | None = None,
    job_id: int | None = None,
    decision_id: int | None = None,
    detail: str = "",
) -> dict[str, Any]:
    """A row for :func:`insert_events` (``score`` stored as a plain float)."""
    return {
        "dataset_id": dataset_id,
        "round_id": round_id,
        "sample_id": sample_id,
        "class_id": class_id,
        "kind": kind,
        "from_status": from_status,
        "to_status": to_status,
        "score": None if score is None else float(score),
        "job_id": job_id,
        "decision_id": decision_id,
        "detail": detail,
        "created_at": now,
    }


def insert_events(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    for part in chunks(rows, 2_000):
        session.execute(insert(PipelineEvent), list(part))


def sample_events(session: Session, sample_id: int) -> list[PipelineEvent]:
    query = (
        select(PipelineEvent).where(PipelineEvent.sample_id == sample_id).order_by(PipelineEvent.id)
    )
    return list(session.scalars(query))


def class_events(session: Session, dataset_id: int) -> list[PipelineEvent]:
    query = (
        select(PipelineEvent)
        .where(PipelineEvent.dataset_id == dataset_id, PipelineEvent.sample_id.is_(None))
        .order_by(PipelineEvent.id)
    )
    return list(session.scalars(query))


def round_event_counts(session: Session, round_id: int) -> dict[EventKind, int]:
    """A round's sample events per kind: its per-round counts, each traceable to samples."""
    rows = session.execute(
        select(PipelineEvent.kind, func.count())
        .where(PipelineEvent.round_id == round_id, PipelineEvent.sample_id.is_not(None))
        .group_by(PipelineEvent.kind)
    )
    return {kind: int(n) for kind, n in rows}


def ever_event_counts(session: Session, dataset_id: int) -> dict[EventKind, int]:
    """Samples that ever had an event of each kind (each sample counted once per kind)."""
    rows = session.execute(
        select(PipelineEvent.kind, func.count(func.distinct(PipelineEvent.sample_id)))
        .where(PipelineEvent.dataset_id == dataset_id, PipelineEvent.sample_id.is_not(None))
        .group_by(PipelineEvent.kind)
    )
    return {kind: int(n) for kind, n in rows}


class SampleListRow(NamedTuple):
    sample_id: int
    path: str
    status: SampleStatus
    given_class_id: int
    label_class_id: int
    human_verdict: Verdict | None
    decision_id: int | None
    junk_score: float | None
    label_rank: int | None
    cl_issue: bool | None


def list_samples(
    session: Session,
    dataset_id: int,
    *,
    status: SampleStatus | None = None,
    statuses: Collection[SampleStatus] | None = None,
    class_id: int | None = None,
    round_id: int | None = None,
    event: EventKind | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[SampleListRow]:
    """Samples by id: with a status, labelled with a class, or having an event (of a kind, in a
    round); the rows behind every count the reports show."""
    query = (
        select(
            PipelineSample.sample_id,
            Sample.path,
            PipelineSample.status,
            PipelineSample.given_class_id,
            PipelineSample.label_class_id,
            PipelineSample.human_verdict,
            PipelineSample.decision_id,
            PipelineSample.junk_score,
            PipelineSample.label_rank,
            PipelineSample.cl_issue,
        )
        .join(Sample, Sample.id == PipelineSample.sample_id)
        .where(PipelineSample.dataset_id == dataset_id)
    )
    if status is not None:
        query = query.where(PipelineSample.status == status)
    if statuses is not None:
        query = query.where(PipelineSample.status.in_(list(statuses)))
    if class_id is not None:
        query = query.where(PipelineSample.label_class_id == class_id)
    if round_id is not None or event is not None:
        conditions = [PipelineEvent.sample_id == PipelineSample.sample_id]
        if round_id is not None:
            conditions.append(PipelineEvent.round_id == round_id)
        if event is not None:
            conditions.append(PipelineEvent.kind == event)
        query = query.where(exists().where(*conditions))
    if after_id is not None:
        query = query.where(PipelineSample.sample_id > after_id)
    rows = session.execute(query.order_by(PipelineSample.sample_id).limit(limit))
    return [SampleListRow._make(row) for row in rows]


class ExportRow(NamedTuple):
    sample_id: int
    path: str
    given_class_id: int
    error: str | None
    missing: bool
    duplicate_of_id: int | None
    status: SampleStatus | None
    label_class_id: int | None
    human_verdict: Verdict | None
    decision_id: int | None
    junk_score: float | None
    label_rank: int | None
    cl_issue: bool | None
    cl_quality: float | None
    knn_issue: bool | None
    knn_agreement: float | None


def export_rows(session: Session, dataset_id: int) -> list[ExportRow]:
    """Every sample of the dataset (usable or not) with its pipeline state, by path."""
    rows = session.execute(
        select(
            Sample.id,
            Sample.path,
            Sample.class_id,
            Sample.error,
            Sample.missing,
            Sample.duplicate_of_id,
            PipelineSample.status,
            PipelineSample.label_class_id,
            PipelineSample.human_verdict,
            PipelineSample.decision_id,
            PipelineSample.junk_score,
            PipelineSample.label_rank,
            PipelineSample.cl_issue,
            PipelineSample.cl_quality,
            PipelineSample.knn_issue,
            PipelineSample.knn_agreement,
        )
        .outerjoin(PipelineSample, PipelineSample.sample_id == Sample.id)
        .where(Sample.dataset_id == dataset_id)
        .order_by(Sample.path)
    )
    return [
        ExportRow(
            sample_id=int(row[0]),
            path=row[1],
            given_class_id=int(row[2]),
            error=row[3].value if row[3] is not None else None,
            missing=bool(row[4]),
            duplicate_of_id=row[5],
            status=row[6],
            label_class_id=row[7],
            human_verdict=row[8],
            decision_id=row[9],
            junk_score=row[10],
            label_rank=row[11],
            cl_issue=row[12],
            cl_quality=row[13],
            knn_issue=row[14],
            knn_agreement=row[15],
        )
        for row in rows
    ]


def events_by_sample(session: Session, dataset_id: int) -> dict[int, list[PipelineEvent]]:
    query = (
        select(PipelineEvent)
        .where(PipelineEvent.dataset_id == dataset_id, PipelineEvent.sample_id.is_not(None))
        .order_by(PipelineEvent.id)
    )
    result: dict[int, list[PipelineEvent]] = {}
    for event in session.scalars(query):
        assert event.sample_id is not None
        result.setdefault(event.sample_id, []).append(event)
    return result


# --- job results --------------------------------------------------------------------------------


def _result_rows(
    session: Session, pairs: Collection[tuple[int, int]], *columns: Any
) -> Iterator[tuple[Any, ...]]:
    """``(sample_id, *columns)`` of the stored results of each (job id, sample id)."""
    by_job: dict[int, list[int]] = {}
    for job_id, sample_id in pairs:
        by_job.setdefault(job_id, []).append(sample_id)
    for job_id, sample_ids in by_job.items():
        for part in chunks(sorted(sample_ids)):
            rows = session.execute(
                select(JobResult.sample_id, *columns).where(
                    JobResult.job_id == job_id, JobResult.sample_id.in_(part)
                )
            )
            yield from (tuple(row) for row in rows)


def topk_of(session: Session, pairs: Collection[tuple[int, int]]) -> dict[int, tuple[bytes, bytes]]:
    """The stored top-k (class ids, probabilities; little-endian int32/float32 bytes) of each
    (job id, sample id), by sample id."""
    return {
        int(sample_id): (bytes(ids), bytes(probs))
        for sample_id, ids, probs in _result_rows(
            session, pairs, JobResult.topk_class_id, JobResult.topk_prob
        )
        if ids is not None and probs is not None
    }


def latest_label_probs(session: Session, sample_ids: Collection[int]) -> dict[int, float]:
    """Each sample's latest prediction's probability of the label it was given to the model
    (from the job ``pred_job_id`` names), where the job reported one."""
    pairs = [(job_id, sample_id) for sample_id, job_id in pred_jobs(session, sample_ids).items()]
    return {
        int(sample_id): float(prob)
        for sample_id, prob in _result_rows(session, pairs, JobResult.label_prob)
        if prob is not None and math.isfinite(prob)
    }


def job_results_of_sample(
    session: Session, sample_id: int, job_ids: Collection[int]
) -> dict[int, JobResult]:
    if not job_ids:
        return {}
    query = select(JobResult).where(
        JobResult.sample_id == sample_id, JobResult.job_id.in_(list(job_ids))
    )
    return {row.job_id: row for row in session.scalars(query)}
