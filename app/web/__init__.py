"""Shared UI code: the Jinja2 environment and the context every page gets (here), and the pieces
every area's ``views`` build their view models from.

- :mod:`app.web.formatting`: numbers, shares, sizes, durations and moments as people read them;
- :mod:`app.web.urls`: every page and API link the pages print;
- :mod:`app.web.class_chart`: the class-size bar chart (log scale) of the dataset page and the
  cleaning dashboard;
- :mod:`app.web.metric_chart`: the per-epoch line charts of the job page and the dashboard.

The templates (``templates/``) only place what these computed; ``static/`` holds the scripts and
stylesheets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from app.auth.service import Principal
from app.settings import PROJECT_ROOT


def create_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(PROJECT_ROOT / "templates"))
    templates.env.autoescape = True
    templates.env.trim_blocks = True
    templates.env.lstrip_blocks = True
    return templates


def render(
    request: Request,
    template: str,
    *,
    principal: Principal | None,
    view: Any = None,
    status_code: int = 200,
    extra: Mapping[str, Any] | None = None,
) -> HTMLResponse:
    """Renders ``template`` with its view model as ``view`` and the signed-in user's basics."""
    context: dict[str, Any] = {
        "view": view,
        "user": principal.user if principal else None,
        "csrf_token": principal.csrf_token if principal else None,
        **(extra or {}),
    }
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, template, context, status_code=status_code)
