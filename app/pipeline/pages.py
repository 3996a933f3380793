"""The cleaning dashboard (engineers): a dataset's pipeline at a glance, its live part polled by
htmx while a round is open."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.auth.deps import EngineerDep
from app.datasets.deps import DatasetDep
from app.db import SessionDep
from app.pipeline import reports, views
from app.web import render

router = APIRouter(include_in_schema=False)


@router.get("/datasets/{dataset_id}/cleaning")
def cleaning_page(
    request: Request, session: SessionDep, principal: EngineerDep, dataset: DatasetDep
) -> HTMLResponse:
    pipeline = reports.pipeline_of(session, dataset)
    if pipeline is None:
        view = views.no_pipeline(dataset.id, dataset.name)
    else:
        view = views.dashboard(
            reports.status(session, pipeline, dataset),
            training=reports.training_runs(session, pipeline),
            classes=reports.class_sizes(session, pipeline, dataset),
            final=reports.final_metrics(session, pipeline),
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
    live = views.live_view(
        reports.status(session, pipeline, dataset), reports.training_runs(session, pipeline)
    )
    response = render(
        request, "pipeline/_live.html", principal=principal, view=live, extra={"live": live}
    )
    if live.poll_url is None:
        response.headers["HX-Refresh"] = "true"
    return response
