"""The cleaning dashboard (engineers): a dataset's pipeline at a glance, its live part polled by
htmx while a round is open, and the form that restores a dropped class."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.auth.deps import EngineerDep
from app.datasets.deps import DatasetDep
from app.db import SessionDep
from app.pipeline import class_reports, reports, service
from app.pipeline.views import page
from app.web import render
from app.web.urls import cleaning_url

router = APIRouter(include_in_schema=False)


@router.get("/datasets/{dataset_id}/cleaning")
def cleaning_page(
    request: Request, session: SessionDep, principal: EngineerDep, dataset: DatasetDep
) -> HTMLResponse:
    pipeline = reports.pipeline_of(session, dataset)
    if pipeline is None:
        view = page.no_pipeline(dataset.id, dataset.name)
    else:
        view = page.dashboard(
            reports.status(session, pipeline, dataset),
            training=reports.training_runs(session, pipeline),
            classes=class_reports.class_sizes(session, pipeline, dataset),
            final=reports.final_metrics(session, pipeline),
            dropped=class_reports.dropped_classes(session, dataset),
        )
    return render(request, "pipeline/dashboard.html", principal=principal, view=view)


@router.get("/datasets/{dataset_id}/cleaning/live")
def cleaning_live(
    request: Request, session: SessionDep, principal: EngineerDep, dataset: DatasetDep
) -> HTMLResponse:
    """The live part, polled while a round is open. Once none is open the response asks htmx
    to reload the page, so the class sizes and the final model catch up too."""
    pipeline = reports.pipeline_of(session, dataset)
    if pipeline is None:  # deleted meanwhile: the page says what to do
        response = HTMLResponse("")
        response.headers["HX-Refresh"] = "true"
        return response
    live = page.live_view(
        reports.status(session, pipeline, dataset), reports.training_runs(session, pipeline)
    )
    response = render(
        request, "pipeline/_live.html", principal=principal, view=live, extra={"live": live}
    )
    if live.poll_url is None:
        response.headers["HX-Refresh"] = "true"
    return response


@router.post("/datasets/{dataset_id}/cleaning/classes/{class_id}/restore")
def restore_class(
    session: SessionDep, principal: EngineerDep, dataset: DatasetDep, class_id: int
) -> RedirectResponse:
    """The dashboard's Restore button (a form with the CSRF token): the class is kept again
    and its samples return to the training set; back to the dashboard."""
    service.restore_class(session, dataset=dataset, class_id=class_id, user=principal.user)
    return RedirectResponse(cleaning_url(dataset.id, section="cleaning-dropped"), status_code=303)
