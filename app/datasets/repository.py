"""Every query on datasets, classes, samples, imports and grants but an import's own (its bulk
writes: :mod:`app.datasets.import_repository`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.models import (
    Dataset,
    DatasetGrant,
    ImportIssue,
    ImportRun,
    ImportStatus,
    IssueReason,
    LabelClass,
    Sample,
    utcnow,
)

# --- datasets -----------------------------------------------------------------------------------


def get_dataset(session: Session, dataset_id: int) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def get_dataset_by_name(session: Session, name: str) -> Dataset | None:
    return session.scalars(select(Dataset).where(Dataset.name == name)).one_or_none()


def lock_dataset(session: Session, dataset_id: int) -> None:
    """Serialises imports of one dataset (PostgreSQL row lock; SQLite already locks on BEGIN)."""
    session.execute(select(Dataset.id).where(Dataset.id == dataset_id).with_for_update())


def list_datasets(session: Session) -> Sequence[Dataset]:
    return session.scalars(select(Dataset).order_by(Dataset.name)).all()


def usable_counts_by_dataset(session: Session) -> dict[int, int]:
    rows = session.execute(
        select(Sample.dataset_id, func.count()).where(usable_sample()).group_by(Sample.dataset_id)
    )
    return {dataset_id: count for dataset_id, count in rows}


def class_counts_by_dataset(session: Session) -> dict[int, int]:
    rows = session.execute(
        select(LabelClass.dataset_id, func.count()).group_by(LabelClass.dataset_id)
    )
    return {dataset_id: count for dataset_id, count in rows}


def latest_imports(session: Session) -> dict[int, ImportRun]:
    latest = select(func.max(ImportRun.id)).group_by(ImportRun.dataset_id).scalar_subquery()
    runs = session.scalars(select(ImportRun).where(ImportRun.id.in_(latest)))
    return {run.dataset_id: run for run in runs}


# --- imports ------------------------------------------------------------------------------------


def get_import(session: Session, import_id: int) -> ImportRun | None:
    return session.get(ImportRun, import_id)


def latest_import(session: Session, dataset_id: int) -> ImportRun | None:
    return session.scalars(
        select(ImportRun)
        .where(ImportRun.dataset_id == dataset_id)
        .order_by(ImportRun.id.desc())
        .limit(1)
    ).first()


def running_import(session: Session, dataset_id: int) -> ImportRun | None:
    return session.scalars(
        select(ImportRun).where(
            ImportRun.dataset_id == dataset_id, ImportRun.status == ImportStatus.RUNNING
        )
    ).first()


def fail_running_imports(session: Session, *, reason: str) -> int:
    result = session.execute(
        update(ImportRun)
        .where(ImportRun.status == ImportStatus.RUNNING)
        .values(status=ImportStatus.FAILED, error=reason, finished_at=utcnow())
    )
    return result.rowcount  # type: ignore[attr-defined,no-any-return]


def issue_counts(session: Session, import_id: int) -> list[tuple[IssueReason, int]]:
    rows = session.execute(
        select(ImportIssue.reason, func.count().label("n"))
        .where(ImportIssue.import_id == import_id)
        .group_by(ImportIssue.reason)
        .order_by(func.count().desc(), ImportIssue.reason)
    )
    return [(reason, count) for reason, count in rows]


def list_issues(
    session: Session,
    import_id: int,
    *,
    reason: IssueReason | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[ImportIssue], int]:
    """One page of a run's issues in the order they were found, and how many match in all."""
    condition = ImportIssue.import_id == import_id
    if reason is not None:
        condition = and_(condition, ImportIssue.reason == reason)
    total = session.scalar(select(func.count()).select_from(ImportIssue).where(condition)) or 0
    page = session.scalars(
        select(ImportIssue).where(condition).order_by(ImportIssue.id).limit(limit).offset(offset)
    ).all()
    return list(page), total


# --- classes ------------------------------------------------------------------------------------


def class_ids(session: Session, dataset_id: int) -> dict[str, int]:
    rows = session.execute(
        select(LabelClass.name, LabelClass.id).where(LabelClass.dataset_id == dataset_id)
    )
    return {name: class_id for name, class_id in rows}


def insert_classes(session: Session, dataset_id: int, names: Iterable[str]) -> None:
    rows = [{"dataset_id": dataset_id, "name": name, "sample_count": 0} for name in names]
    if rows:
        session.execute(insert(LabelClass), rows)


def list_classes(session: Session, dataset_id: int) -> Sequence[LabelClass]:
    return session.scalars(
        select(LabelClass)
        .where(LabelClass.dataset_id == dataset_id)
        .order_by(LabelClass.sample_count.desc(), LabelClass.name)
    ).all()


def classes_by_id(session: Session, dataset_id: int) -> list[tuple[int, str]]:
    """(class id, name) of the dataset's classes, by id."""
    return _class_pairs(session, dataset_id, LabelClass.id)


def classes_by_name(session: Session, dataset_id: int) -> list[tuple[int, str]]:
    """(class id, name) of the dataset's classes, by name."""
    return _class_pairs(session, dataset_id, LabelClass.name)


def _class_pairs(
    session: Session, dataset_id: int, order: InstrumentedAttribute[Any]
) -> list[tuple[int, str]]:
    rows = session.execute(
        select(LabelClass.id, LabelClass.name)
        .where(LabelClass.dataset_id == dataset_id)
        .order_by(order)
    )
    return [(class_id, name) for class_id, name in rows]


def refresh_class_counts(session: Session, dataset_id: int) -> None:
    """Sets every class's ``sample_count`` to its usable, present samples, in one statement."""
    count = (
        select(func.count())
        .select_from(Sample)
        .where(Sample.class_id == LabelClass.id, usable_sample())
        .scalar_subquery()
    )
    session.execute(
        update(LabelClass)
        .where(LabelClass.dataset_id == dataset_id)
        .values(sample_count=count)
        .execution_options(synchronize_session=False)
    )


# --- samples ------------------------------------------------------------------------------------


def usable_sample(sample: type[Sample] = Sample) -> ColumnElement[bool]:
    """The condition a usable sample meets: decodable (no error) and present (not missing).
    ``sample``: an alias of :class:`Sample` to test instead."""
    return and_(sample.error.is_(None), sample.missing.is_(False))


def _usable(dataset_id: int) -> Any:
    return and_(Sample.dataset_id == dataset_id, usable_sample())


def sample_counts(session: Session, dataset_id: int) -> tuple[int, int, int, int, int]:
    """(total, usable, unusable, missing, duplicates) over the dataset's samples."""
    usable = usable_sample()
    row = session.execute(
        select(
            func.count(),
            func.count().filter(usable),
            func.count().filter(Sample.error.is_not(None), Sample.missing.is_(False)),
            func.count().filter(Sample.missing.is_(True)),
            func.count().filter(usable, Sample.duplicate_of_id.is_not(None)),
        ).where(Sample.dataset_id == dataset_id)
    ).one()
    total, usable_count, unusable, missing, duplicates = row
    return total, usable_count, unusable, missing, duplicates


def mode_counts(session: Session, dataset_id: int) -> list[tuple[str, int, int]]:
    rows = session.execute(
        select(Sample.mode, Sample.channels, func.count())
        .where(_usable(dataset_id))
        .group_by(Sample.mode, Sample.channels)
        .order_by(func.count().desc(), Sample.mode)
    )
    return [(mode or "", channels or 0, count) for mode, channels, count in rows]


def _conflict_hashes(dataset_id: int) -> Any:
    return (
        select(Sample.sha256)
        .where(_usable(dataset_id), Sample.sha256.is_not(None))
        .group_by(Sample.sha256)
        .having(func.count(Sample.class_id.distinct()) > 1)
    )


def conflict_group_count(session: Session, dataset_id: int) -> int:
    subquery = _conflict_hashes(dataset_id).subquery()
    return session.scalar(select(func.count()).select_from(subquery)) or 0


def conflicts(
    session: Session, dataset_id: int, *, limit: int
) -> list[tuple[str, list[tuple[int, str, str]]]]:
    """Up to ``limit`` conflict groups by hash: [(sha256, [(sample_id, path, class_name)])]."""
    hashes = list(
        session.scalars(_conflict_hashes(dataset_id).order_by(Sample.sha256).limit(limit))
    )
    if not hashes:
        return []
    rows = session.execute(
        select(Sample.sha256, Sample.id, Sample.path, LabelClass.name)
        .join(LabelClass, LabelClass.id == Sample.class_id)
        .where(_usable(dataset_id), Sample.sha256.in_(hashes))
        .order_by(Sample.sha256, Sample.id)
    )
    groups: dict[str, list[tuple[int, str, str]]] = {sha: [] for sha in hashes}
    for sha, sample_id, path, class_name in rows:
        if sha is not None:
            groups[sha].append((sample_id, path, class_name))
    return list(groups.items())


def list_samples(
    session: Session,
    dataset_id: int,
    *,
    class_id: int | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[Sample]:
    query = select(Sample).where(Sample.dataset_id == dataset_id)
    if class_id is not None:
        query = query.where(Sample.class_id == class_id)
    if after_id is not None:
        query = query.where(Sample.id > after_id)
    return list(session.scalars(query.order_by(Sample.id).limit(limit)))


def usable_samples(
    session: Session, dataset_id: int, sample_ids: Sequence[int] | None = None
) -> list[tuple[int, int, str, str]]:
    """(id, class id, path, sha256) of the dataset's usable samples (decodable, present), by id;
    only those in ``sample_ids`` when given."""
    query = select(Sample.id, Sample.class_id, Sample.path, Sample.sha256).where(
        Sample.dataset_id == dataset_id, usable_sample(), Sample.sha256.is_not(None)
    )
    rows: list[Any] = []
    if sample_ids is None:
        rows = list(session.execute(query.order_by(Sample.id)))
    else:
        ordered = sorted(set(sample_ids))
        for start in range(0, len(ordered), 10_000):
            part = ordered[start : start + 10_000]
            rows.extend(session.execute(query.where(Sample.id.in_(part)).order_by(Sample.id)))
    return [(row[0], row[1], row[2], row[3]) for row in rows]


def sample_dataset_id(session: Session, sample_id: int) -> int | None:
    """The dataset of the sample; None when there is no such sample."""
    return session.scalar(select(Sample.dataset_id).where(Sample.id == sample_id))


# --- grants -------------------------------------------------------------------------------------


def granted_dataset_ids(session: Session, user_id: int) -> set[int | None]:
    """The datasets granted to the user; None among them: every dataset."""
    query = select(DatasetGrant.dataset_id).where(DatasetGrant.user_id == user_id)
    return set(session.scalars(query))


def list_grants(
    session: Session, *, user_id: int | None = None, dataset_id: int | None = None
) -> Sequence[DatasetGrant]:
    query = select(DatasetGrant).order_by(DatasetGrant.id)
    if user_id is not None:
        query = query.where(DatasetGrant.user_id == user_id)
    if dataset_id is not None:
        query = query.where(DatasetGrant.dataset_id == dataset_id)
    return session.scalars(query).all()


def find_grant(session: Session, *, user_id: int, dataset_id: int | None) -> DatasetGrant | None:
    """The user's grant of the dataset (of every dataset when ``dataset_id`` is None)."""
    query = select(DatasetGrant).where(
        DatasetGrant.user_id == user_id,
        DatasetGrant.dataset_id.is_(None)
        if dataset_id is None
        else DatasetGrant.dataset_id == dataset_id,
    )
    return session.scalars(query).first()


def get_grant(session: Session, grant_id: int) -> DatasetGrant | None:
    return session.get(DatasetGrant, grant_id)
