"""The dataset pages (engineers): the list, a dataset's overview, and its import report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from app.auth.deps import EngineerDep
from app.datasets import access, import_views, service, views
from app.datasets.deps import DatasetDep
from app.db import SessionDep
from app.errors import NotFound
from app.models import ImportRun, IssueReason, utcnow
from app.settings import Settings
from app.web import render

router = APIRouter(include_in_schema=False)

ReasonQuery = Annotated[IssueReason | None, Query(description="Only issues with this reason.")]


@router.get("/datasets")
def dataset_list(request: Request, session: SessionDep, principal: EngineerDep) -> HTMLResponse:
    visible = access.visible_dataset_ids(session, principal)
    view = views.dataset_list(service.list_datasets(session, visible=visible), now=utcnow())
    return render(request, "datasets/list.html", principal=principal, view=view)


@router.get("/datasets/{dataset_id}")
def dataset_page(
    request: Request,
    session: SessionDep,
    principal: EngineerDep,
    dataset: DatasetDep,
    reason: ReasonQuery = None,
) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    overview = service.dataset_overview(session, dataset)
    report = None
    if overview.latest_import is not None:
        report = service.import_report(
            session,
            overview.latest_import,
            reason=reason,
            limit=import_views.ISSUE_PAGE_SIZE,
            conflict_limit=import_views.CONFLICTS_SHOWN,
        )
    view = views.dataset_page(
        overview,
        report,
        now=utcnow(),
        thumbnail_sizes=settings.thumbnail_sizes,
        reason=reason,
    )
    return render(request, "datasets/detail.html", principal=principal, view=view)


@router.get("/datasets/{dataset_id}/imports/{import_id}/report")
def import_report_fragment(
    request: Request,
    session: SessionDep,
    principal: EngineerDep,
    dataset: DatasetDep,
    import_id: int,
) -> HTMLResponse:
    """The report section, polled by the page while the import runs. Once the run is over the
    response asks htmx to reload the page, so the counts and the chart catch up too."""
    settings: Settings = request.app.state.settings
    run = _import_of(session, dataset.id, import_id)
    report = service.import_report(
        session,
        run,
        limit=import_views.ISSUE_PAGE_SIZE,
        conflict_limit=import_views.CONFLICTS_SHOWN,
    )
    view = import_views.import_report(
        dataset.id, report, now=utcnow(), thumbnail_sizes=settings.thumbnail_sizes
    )
    response = render(
        request, "datasets/_import_report.html", principal=principal, view={"report": view}
    )
    if not view.running:
        response.headers["HX-Refresh"] = "true"
    return response


@router.get("/datasets/{dataset_id}/imports/{import_id}/issues")
def import_issues_fragment(
    request: Request,
    session: SessionDep,
    principal: EngineerDep,
    dataset: DatasetDep,
    import_id: int,
    reason: ReasonQuery = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> HTMLResponse:
    """The problem-file list, filtered by reason (offset 0: the whole list) or the rows of the
    next page (offset > 0: rows to put in place of the "show more" row)."""
    run = _import_of(session, dataset.id, import_id)
    report = service.import_report(
        session,
        run,
        reason=reason,
        limit=import_views.ISSUE_PAGE_SIZE,
        offset=offset,
        conflict_limit=0,
    )
    page = import_views.issue_page(dataset.id, report, reason=reason, offset=offset)
    template = "datasets/_issue_rows.html" if offset else "datasets/_issues.html"
    return render(request, template, principal=principal, view=page, extra={"issues": page})


def _import_of(session: Session, dataset_id: int, import_id: int) -> ImportRun:
    run = service.get_import(session, import_id)
    if run.dataset_id != dataset_id:
        raise NotFound(f"dataset {dataset_id} has no import {import_id}")
    return run
