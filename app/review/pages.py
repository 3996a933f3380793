"""The review pages: the annotator's home, the three review pages with their htmx fragments,
and the engineers' queue statistics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth.deps import AnnotatorDep, EngineerDep
from app.datasets import access
from app.datasets.deps import DatasetDep
from app.db import SessionDep
from app.errors import Invalid
from app.models import Role, TaskKind
from app.review import stats_views, views
from app.review.routes import lease_duration
from app.review.service import leases as lease_service
from app.review.service import stats as stats_service
from app.settings import Settings
from app.web import render

router = APIRouter(include_in_schema=False)

PageSize = Annotated[int, Query(description="Grid review: thumbnails per page (48, 72 or 96).")]


def _page_size(kind: TaskKind, size: int) -> int:
    if views.MODES[kind] != "grid":
        return 1 + views.LABEL_AHEAD
    if size not in views.GRID_PAGE_SIZES:
        offered = ", ".join(str(s) for s in views.GRID_PAGE_SIZES)
        raise Invalid(f"page size {size} is not offered; use {offered}")
    return size


def _task_ids(text: str, name: str = "task_ids") -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise Invalid(f"{name} must be comma-separated task ids") from exc


@router.get("/")
def start_page(principal: AnnotatorDep) -> Response:
    """Annotators start at their review queues, engineers at their datasets."""
    target = "/datasets" if principal.role.includes(Role.ENGINEER) else "/review"
    return RedirectResponse(target, status_code=303)


@router.get("/review")
def home(request: Request, session: SessionDep, principal: AnnotatorDep) -> Response:
    """The review queues with their counts, and the signed-in user's progress today."""
    visible = access.visible_dataset_ids(session, principal)
    view = views.home(
        principal.user.username,
        [
            q
            for q in stats_service.open_queues(session)
            if visible is None or q.dataset_id in visible
        ],
        stats_service.progress(session, user=principal.user),
    )
    return render(request, "review/home.html", principal=principal, view=view)


@router.get("/review/stats")
def stats_page(
    request: Request,
    session: SessionDep,
    principal: EngineerDep,
    dataset_id: int | None = None,
    hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24,
) -> HTMLResponse:
    access.check_scope(session, principal, dataset_id)
    stats = stats_service.queue_stats(session, dataset_id=dataset_id, hours=hours)
    view = stats_views.stats_page(stats, hours=hours)
    return render(request, "review/stats.html", principal=principal, view=view)


@router.get("/review/{dataset_id}/{kind}")
def review_page(
    request: Request,
    session: SessionDep,
    principal: AnnotatorDep,
    dataset: DatasetDep,
    kind: TaskKind,
    size: PageSize = views.GRID_PAGE_SIZES[0],
) -> HTMLResponse:
    """The review page for the kind, without tasks: a GET leases nothing (a link from another
    site must not take tasks). The page's script leases its first batch at once with a POST
    carrying the CSRF token (``next``), renews it while the page is open and visible, and
    gives it back when the page is hidden or closed."""
    settings: Settings = request.app.state.settings
    page_size = _page_size(kind, size)
    view = views.review_page(
        dataset,
        kind,
        stats_service.progress(session, user=principal.user),
        remaining=stats_service.remaining(
            session, user=principal.user, kind=kind, dataset_id=dataset.id, cap=views.REMAINING_CAP
        ),
        page_size=page_size,
        lease_seconds=settings.review_browser_lease_seconds,
    )
    return render(request, "review/page.html", principal=principal, view=view)


@router.post("/review/{dataset_id}/{kind}/next")
def next_batch(
    request: Request,
    session: SessionDep,
    principal: AnnotatorDep,
    dataset: DatasetDep,
    kind: TaskKind,
    n: Annotated[int, Form(ge=1, le=lease_service.MAX_LEASE)] = 1,
    exclude: Annotated[str, Form(description="Task ids shown or decided already.")] = "",
) -> HTMLResponse:
    """The next tasks, leased now, as the page's fragment (the first batch too): the script
    keeps it out of sight until the annotator gets there, so images are loaded by then. The
    annotator's own live leases of the queue come back first, so a reload takes nothing new."""
    settings: Settings = request.app.state.settings
    data = lease_service.lease_batch(
        session,
        user=principal.user,
        dataset=dataset,
        kind=kind,
        n=n,
        exclude=_task_ids(exclude, "exclude"),
        lease_for=lease_duration(request, principal),
        references_per_class=views.GIVEN_REFERENCES,
        class_grid=views.CLASS_GRID,
    )
    batch = views.batch(kind, data, thumbnail_sizes=settings.thumbnail_sizes, page_size=n)
    return render(request, "review/_batch.html", principal=principal, view=batch)


@router.post("/review/release", status_code=204)
def release(
    session: SessionDep,
    principal: AnnotatorDep,
    task_ids: Annotated[str, Form(description="Comma-separated ids of the tasks to give back.")],
) -> Response:
    """Gives back the page's leases when it is hidden or closed. The page sends it with
    ``navigator.sendBeacon``, which cannot set headers: the CSRF token comes in the form body
    (``csrf_token``), where the authentication dependency also looks for it."""
    lease_service.release_leases(session, user=principal.user, task_ids=_task_ids(task_ids))
    return Response(status_code=204)


@router.get("/review/{dataset_id}/{kind}/progress")
def progress_fragment(
    request: Request,
    session: SessionDep,
    principal: AnnotatorDep,
    dataset: DatasetDep,
    kind: TaskKind,
) -> HTMLResponse:
    """The progress line of a review page, refreshed by htmx."""
    view = views.progress_view(
        stats_service.progress(session, user=principal.user),
        remaining=stats_service.remaining(
            session, user=principal.user, kind=kind, dataset_id=dataset.id, cap=views.REMAINING_CAP
        ),
    )
    return render(
        request,
        "review/_progress.html",
        principal=principal,
        view=view,
        extra={"progress_url": f"{views.queue_url(dataset.id, kind)}/progress"},
    )
