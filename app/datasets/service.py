"""Datasets: registering, importing and summarising them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.datasets import repository, sources
from app.datasets.importer import ImportOptions, ProgressCallback, default_processes, run_import
from app.datasets.roots import ImportRoots
from app.datasets.schemas import (
    ClassCount,
    ConflictGroup,
    ConflictMember,
    DatasetListItem,
    DatasetOverview,
    ImportReport,
    ModeCount,
    ReasonCount,
    SamplePage,
    StartedImport,
)
from app.errors import Conflict, NotFound
from app.logging import get_logger
from app.models import (
    Dataset,
    ImportFormat,
    ImportRun,
    ImportStatus,
    IssueReason,
    LabelClass,
    User,
)
from app.settings import Settings

log = get_logger(__name__)

MAX_PAGE = 1000


def fail_interrupted_imports(session: Session) -> int:
    """Marks imports left running by a stopped server as failed; re-running one is safe."""
    count = repository.fail_running_imports(session, reason="interrupted: the server stopped")
    if count:
        log.warning("datasets.import.interrupted", count=count)
    return count


# --- reading ----------------------------------------------------------------------------------


def list_datasets(
    session: Session, *, visible: frozenset[int] | None = None
) -> list[DatasetListItem]:
    """Every dataset by name (or those in ``visible``), with its usable sample count, class
    count and latest import."""
    usable = repository.usable_counts_by_dataset(session)
    classes = repository.class_counts_by_dataset(session)
    latest = repository.latest_imports(session)
    return [
        DatasetListItem(
            dataset=dataset,
            usable_samples=usable.get(dataset.id, 0),
            class_count=classes.get(dataset.id, 0),
            latest_import=latest.get(dataset.id),
        )
        for dataset in repository.list_datasets(session)
        if visible is None or dataset.id in visible
    ]


def find_dataset(session: Session, name: str) -> Dataset | None:
    return repository.get_dataset_by_name(session, name)


def get_dataset(session: Session, dataset_id: int) -> Dataset:
    dataset = repository.get_dataset(session, dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id}")
    return dataset


def get_dataset_by_name(session: Session, name: str) -> Dataset:
    dataset = repository.get_dataset_by_name(session, name)
    if dataset is None:
        raise NotFound(f"no dataset named {name!r}")
    return dataset


def dataset_by_name_or_id(session: Session, name_or_id: str) -> Dataset:
    """The dataset a command line names: by name, else by id when it is a number (a dataset
    may be named ``2024``: its name wins)."""
    found = repository.get_dataset_by_name(session, name_or_id)
    if found is None and name_or_id.isdigit():
        found = repository.get_dataset(session, int(name_or_id))
    if found is None:
        raise NotFound(f"no dataset named {name_or_id!r}")
    return found


def dataset_overview(session: Session, dataset: Dataset) -> DatasetOverview:
    total, usable, unusable, missing, duplicates = repository.sample_counts(session, dataset.id)
    return DatasetOverview(
        dataset=dataset,
        total_samples=total,
        usable_samples=usable,
        unusable_samples=unusable,
        missing_samples=missing,
        duplicate_samples=duplicates,
        conflict_groups=repository.conflict_group_count(session, dataset.id),
        classes=[
            ClassCount(id=label.id, name=label.name, count=label.sample_count)
            for label in repository.list_classes(session, dataset.id)
        ],
        modes=[
            ModeCount(mode=mode, channels=channels, count=count)
            for mode, channels, count in repository.mode_counts(session, dataset.id)
        ],
        latest_import=repository.latest_import(session, dataset.id),
    )


def list_classes(session: Session, dataset: Dataset) -> list[LabelClass]:
    """The dataset's classes, largest first, then by name."""
    return list(repository.list_classes(session, dataset.id))


def list_samples(
    session: Session,
    dataset: Dataset,
    *,
    class_id: int | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> SamplePage:
    """Samples in id order after ``after_id`` (keyset pagination), optionally of one class."""
    limit = max(1, min(limit, MAX_PAGE))
    samples = repository.list_samples(
        session, dataset.id, class_id=class_id, after_id=after_id, limit=limit + 1
    )
    more = len(samples) > limit
    samples = samples[:limit]
    return SamplePage(samples=samples, next_after_id=samples[-1].id if more else None)


def get_import(session: Session, import_id: int) -> ImportRun:
    run = repository.get_import(session, import_id)
    if run is None:
        raise NotFound(f"no import {import_id}")
    return run


def import_report(
    session: Session,
    run: ImportRun,
    *,
    reason: IssueReason | None = None,
    limit: int = 100,
    offset: int = 0,
    conflict_limit: int = 100,
) -> ImportReport:
    """The run's issues (one page, optionally of one reason) and its dataset's conflicts now."""
    issues, total = repository.list_issues(
        session,
        run.id,
        reason=reason,
        limit=max(1, min(limit, MAX_PAGE)),
        offset=max(0, offset),
    )
    return ImportReport(
        run=run,
        by_reason=[
            ReasonCount(reason=reason, count=count)
            for reason, count in repository.issue_counts(session, run.id)
        ],
        issues=issues,
        total_issues=total,
        conflicts=[
            ConflictGroup(
                sha256=sha,
                samples=[
                    ConflictMember(sample_id=sample_id, path=path, class_name=class_name)
                    for sample_id, path, class_name in members
                ],
            )
            for sha, members in repository.conflicts(
                session, run.dataset_id, limit=max(0, conflict_limit)
            )
        ],
    )


# --- importing --------------------------------------------------------------------------------


def start_import(
    session: Session,
    *,
    name: str,
    path: str,
    format: ImportFormat | None = None,
    root: str | None = None,
    classes: str | Sequence[str] | None = None,
    user: User | None = None,
    roots: ImportRoots | None = None,
) -> StartedImport:
    """Checks the source and creates a running import; the dataset too on its first import.

    ``classes`` is a class-list file, or the names themselves. With ``roots`` (requests through
    the API), every path must lie inside one of them (see :mod:`app.datasets.roots`).

    An existing dataset of that name is re-imported when the source is the same one (folder or
    manifest, format and root); another source under the same name is a ``Conflict``. The caller
    commits, then runs the import with ``run_started_import`` (never inside a request).
    """
    if roots is not None:
        roots.check(path, field="path")
        if root is not None:
            roots.check(root, field="root")
    resolved = sources.resolve_source(path, format=format, root=root)
    class_list = _class_list(classes, roots)
    dataset = repository.get_dataset_by_name(session, name)
    if dataset is None:
        dataset = Dataset(
            name=name,
            root=resolved.root,
            source=resolved.source,
            source_format=resolved.format,
            created_by_id=user.id if user else None,
        )
        session.add(dataset)
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError as exc:
            raise Conflict(f"a dataset named {name!r} already exists") from exc
        log.info("datasets.dataset.created", dataset_id=dataset.id, name=name)
    elif (dataset.source, dataset.source_format, dataset.root) != (
        resolved.source,
        resolved.format,
        resolved.root,
    ):
        raise Conflict(
            f"the dataset {name!r} imports {dataset.source_format.value} from {dataset.source}; "
            "choose another name for another source",
            dataset_id=dataset.id,
        )
    return _new_run(session, dataset, class_list, user)


def restart_import(
    session: Session,
    *,
    dataset: Dataset,
    classes: str | Sequence[str] | None = None,
    user: User | None = None,
    roots: ImportRoots | None = None,
) -> StartedImport:
    """A new run over the dataset's own source (it must still exist, and with ``roots``, still
    lie inside them)."""
    root = None if dataset.source_format is ImportFormat.IMAGEFOLDER else dataset.root
    if roots is not None:
        roots.check(dataset.source, field="path")
        roots.check(dataset.root, field="root")
    sources.resolve_source(dataset.source, format=dataset.source_format, root=root)
    return _new_run(session, dataset, _class_list(classes, roots), user)


def _class_list(
    classes: str | Sequence[str] | None, roots: ImportRoots | None
) -> tuple[str, ...] | None:
    if classes is None:
        return None
    if isinstance(classes, str):
        if roots is not None:
            roots.check(classes, field="classes")
        return tuple(sources.read_class_list(classes))
    return tuple(sources.check_class_names(classes))


def _new_run(
    session: Session, dataset: Dataset, classes: tuple[str, ...] | None, user: User | None
) -> StartedImport:
    repository.lock_dataset(session, dataset.id)
    running = repository.running_import(session, dataset.id)
    if running is not None:
        raise Conflict(
            f"import {running.id} of {dataset.name!r} is still running",
            import_id=running.id,
        )
    run = ImportRun(
        dataset_id=dataset.id,
        status=ImportStatus.RUNNING,
        created_by_id=user.id if user else None,
    )
    session.add(run)
    session.flush()
    log.info("datasets.import.queued", import_id=run.id, dataset_id=dataset.id)
    return StartedImport(dataset=dataset, run=run, classes=classes)


def run_started_import(
    factory: sessionmaker[Session],
    started: StartedImport,
    *,
    settings: Settings,
    on_progress: ProgressCallback | None = None,
) -> ImportRun:
    """Runs a committed ``start_import``/``restart_import`` to the end (the import's own job)."""
    options = ImportOptions(
        max_pixels=settings.max_image_pixels,
        processes=settings.import_processes or default_processes(),
        classes=started.classes,
    )
    return run_import(factory, started.run.id, options, on_progress=on_progress)
