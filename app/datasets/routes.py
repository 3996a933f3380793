"""Datasets API (engineers): register and re-import datasets, follow imports, read the results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Body, Query, Request, status

from app.auth.deps import EngineerDep
from app.datasets import access, grants, service
from app.datasets.deps import DatasetDep, ImportDep
from app.datasets.roots import ImportRoots
from app.datasets.schemas import (
    ClassRead,
    DatasetCreate,
    DatasetListItemRead,
    DatasetOverviewRead,
    ImportAccepted,
    ImportCreate,
    ImportReportRead,
    ImportRunRead,
    SamplePageRead,
    StartedImport,
)
from app.db import SessionDep
from app.errors import Conflict
from app.models import IssueReason, Role

router = APIRouter(prefix="/api", tags=["datasets"])


def _import_roots(request: Request) -> ImportRoots:
    return ImportRoots.of(request.app.state.settings)


def _run_in_background(
    request: Request, background: BackgroundTasks, started: StartedImport
) -> None:
    # A background task runs after the response, so after the request's commit: the import's
    # own sessions see the run it was given.
    app_state = request.app.state
    background.add_task(
        app_state.background.submit,
        f"import-{started.run.id}",
        service.run_started_import,
        app_state.session_factory,
        started,
        settings=app_state.settings,
    )


def _accepted(started: StartedImport) -> ImportAccepted:
    return ImportAccepted.model_validate(
        {"dataset": started.dataset, "import_run": started.run}, from_attributes=True
    )


@router.post("/datasets", status_code=status.HTTP_202_ACCEPTED)
def create_dataset(
    principal: EngineerDep,
    body: DatasetCreate,
    session: SessionDep,
    request: Request,
    background: BackgroundTasks,
) -> ImportAccepted:
    """Registers a dataset and imports it; the same name and source again re-imports it.
    The engineer who registers a dataset is granted it."""
    existing = service.find_dataset(session, body.name)
    if existing is not None and not access.can_see(session, principal, existing.id):
        raise Conflict(f"a dataset named {body.name!r} already exists")
    started = service.start_import(
        session,
        name=body.name,
        path=body.path,
        format=body.format,
        root=body.root,
        classes=body.classes,
        user=principal.user,
        roots=_import_roots(request),
    )
    if existing is None and not principal.role.includes(Role.ADMIN):
        grants.grant(session, user=principal.user, dataset=started.dataset, by=principal.user)
    _run_in_background(request, background, started)
    return _accepted(started)


@router.get("/datasets")
def list_datasets(principal: EngineerDep, session: SessionDep) -> list[DatasetListItemRead]:
    items = service.list_datasets(session, visible=access.visible_dataset_ids(session, principal))
    return [DatasetListItemRead.model_validate(item) for item in items]


@router.get("/datasets/{dataset_id}")
def read_dataset(_: EngineerDep, dataset: DatasetDep, session: SessionDep) -> DatasetOverviewRead:
    return DatasetOverviewRead.model_validate(service.dataset_overview(session, dataset))


@router.post("/datasets/{dataset_id}/imports", status_code=status.HTTP_202_ACCEPTED)
def reimport_dataset(
    principal: EngineerDep,
    dataset: DatasetDep,
    session: SessionDep,
    request: Request,
    background: BackgroundTasks,
    body: Annotated[ImportCreate | None, Body()] = None,
) -> ImportAccepted:
    """Imports the dataset's source again: adds new files, updates changed ones, marks gone ones."""
    started = service.restart_import(
        session,
        dataset=dataset,
        classes=body.classes if body else None,
        user=principal.user,
        roots=_import_roots(request),
    )
    _run_in_background(request, background, started)
    return _accepted(started)


@router.get("/datasets/{dataset_id}/classes")
def list_classes(_: EngineerDep, dataset: DatasetDep, session: SessionDep) -> list[ClassRead]:
    return [ClassRead.model_validate(label) for label in service.list_classes(session, dataset)]


@router.get("/datasets/{dataset_id}/samples")
def list_samples(
    _: EngineerDep,
    dataset: DatasetDep,
    session: SessionDep,
    class_id: int | None = None,
    after_id: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 100,
) -> SamplePageRead:
    """Samples in id order; pass the response's ``next_after_id`` as ``after_id`` for more."""
    page = service.list_samples(session, dataset, class_id=class_id, after_id=after_id, limit=limit)
    return SamplePageRead.model_validate(page)


@router.get("/imports/{import_id}")
def read_import(_: EngineerDep, run: ImportDep) -> ImportRunRead:
    return ImportRunRead.model_validate(run)


@router.get("/imports/{import_id}/report")
def read_import_report(
    _: EngineerDep,
    run: ImportDep,
    session: SessionDep,
    reason: IssueReason | None = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ImportReportRead:
    report = service.import_report(session, run, reason=reason, limit=limit, offset=offset)
    return ImportReportRead.model_validate(report)
