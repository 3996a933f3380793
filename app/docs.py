"""The interactive API docs at ``/docs``: Swagger UI served from this server, not a CDN.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN and starts it with an inline script;
the Content-Security-Policy blocks both, and closed networks cannot reach a CDN anyway. Here
the page names only same-origin files: Swagger UI's bundle and stylesheet from the
``swagger-ui-bundle-v2`` package (swagger-ui-dist, unmodified) and ``static/docs-init.js``,
which reads the schema's URL from the page. ReDoc is not served.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from app.errors import NotFound
from app.security_headers import STATIC_CACHE_CONTROL

__all__ = ["ASSETS", "SWAGGER_UI_DIR", "router"]

SWAGGER_UI_DIR = Path(swagger_ui_path)
#: The Swagger UI files the page loads, by name, with their media types; nothing else is served.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}

router = APIRouter(include_in_schema=False)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} – API</title>
<link rel="icon" type="image/png" href="{root}/docs/swagger-ui/favicon-32x32.png">
<link rel="stylesheet" href="{root}/docs/swagger-ui/swagger-ui.css">
<script src="{root}/docs/swagger-ui/swagger-ui-bundle.js" defer></script>
<script src="{root}/static/docs-init.js" defer></script>
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
</body>
</html>
"""


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    openapi_url = request.app.openapi_url
    if openapi_url is None:
        raise NotFound("the API schema is not published")
    page = _PAGE.format(
        title=escape(request.app.title),
        root=escape(root),
        openapi_url=escape(root + openapi_url),
    )
    return HTMLResponse(page)


@router.get("/docs/swagger-ui/{name}")
def swagger_ui_asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound("no such file")
    return FileResponse(
        SWAGGER_UI_DIR / name,
        media_type=media_type,
        headers={"Cache-Control": STATIC_CACHE_CONTROL},
    )
