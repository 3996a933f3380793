"""The job pages (engineers): the list and a job's page with live progress, charts and log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth.deps import EngineerDep
from app.db import SessionDep
from app.jobs import service, views
from app.jobs.deps import JobDatasetsDep, JobDep
from app.models import JobState, utcnow
from app.web import render
from app.web.urls import job_url

router = APIRouter(include_in_schema=False)

StateQuery = Annotated[JobState | None, Query(description="Only jobs in this state.")]


def _list_view(
    session: SessionDep,
    visible: frozenset[int] | None,
    state: JobState | None,
    before_id: int | None,
) -> views.JobListView:
    jobs = service.list_jobs(
        session,
        states=(state,) if state else (),
        visible=visible,
        before_id=before_id,
        limit=views.PAGE_SIZE,
    )
    return views.job_list(jobs, service.state_counts(session, visible), now=utcnow(), state=state)


@router.get("/jobs")
def job_list(
    request: Request,
    session: SessionDep,
    principal: EngineerDep,
    visible: JobDatasetsDep,
    state: StateQuery = None,
    before_id: int | None = None,
) -> HTMLResponse:
    view = _list_view(session, visible, state, before_id)
    return render(request, "jobs/list.html", principal=principal, view=view)


@router.get("/jobs/table")
def job_table(
    request: Request,
    session: SessionDep,
    principal: EngineerDep,
    visible: JobDatasetsDep,
    state: StateQuery = None,
) -> HTMLResponse:
    """The list's table, polled by the page while jobs are active."""
    view = _list_view(session, visible, state, None)
    return render(request, "jobs/_table.html", principal=principal, view=view)


@router.get("/jobs/{job_id}")
def job_page(
    request: Request, session: SessionDep, principal: EngineerDep, job: JobDep
) -> HTMLResponse:
    view = views.job_page(service.job_detail(session, job), now=utcnow())
    return render(request, "jobs/detail.html", principal=principal, view=view)


@router.get("/jobs/{job_id}/live")
def job_live(
    request: Request, session: SessionDep, principal: EngineerDep, job: JobDep
) -> HTMLResponse:
    """The live part of the job page, polled while the job is active."""
    live = views.live_view(service.job_detail(session, job), now=utcnow())
    return render(
        request, "jobs/_live.html", principal=principal, view={"live": live}, extra={"live": live}
    )


@router.post("/jobs/{job_id}/cancel")
def cancel(session: SessionDep, principal: EngineerDep, job: JobDep) -> Response:
    service.cancel_job(session, job_id=job.id)
    return RedirectResponse(job_url(job.id), status_code=303)


@router.post("/jobs/{job_id}/retry")
def retry(session: SessionDep, principal: EngineerDep, job: JobDep) -> Response:
    service.retry_job(session, job_id=job.id)
    return RedirectResponse(job_url(job.id), status_code=303)
