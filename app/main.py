"""The application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import docs
from app.auth import pages as auth_pages
from app.auth import routes as auth_routes
from app.auth.password_checks import PasswordChecks
from app.auth.throttle import LoginThrottle
from app.background import BackgroundRunner
from app.datasets import grant_routes as dataset_grant_routes
from app.datasets import pages as dataset_pages
from app.datasets import routes as dataset_routes
from app.datasets import service as dataset_service
from app.db import create_db_engine, create_session_factory, transaction, write_gate
from app.errors import AppError, NotAuthenticated
from app.jobs import pages as job_pages
from app.jobs import routes as job_routes
from app.jobs import worker_routes as job_worker_routes
from app.jobs.config import JobSettings
from app.logging import configure_logging, get_logger
from app.media import routes as media_routes
from app.pipeline import pages as pipeline_pages
from app.pipeline import routes as pipeline_routes
from app.pipeline.config import PipelineEnv, PipelineSettings
from app.pipeline.reconcile import Reconciler
from app.request_limits import RequestLimits
from app.review import pages as review_pages
from app.review import routes as review_routes
from app.security_headers import SECURITY_HEADERS, SecurityHeaders
from app.settings import PROJECT_ROOT, Settings, get_settings
from app.web import create_templates, render

log = get_logger(__name__)

_NUMBER_OUT_OF_RANGE = "22003"  # PostgreSQL's SQLSTATE numeric_value_out_of_range


#: Every router, in the order routes are matched.
ROUTERS = (
    review_routes,  # first: routes are matched in order, and these are the busiest
    auth_routes,
    auth_pages,
    dataset_routes,
    dataset_grant_routes,
    dataset_pages,
    media_routes,
    job_routes,
    job_worker_routes,
    job_pages,
    pipeline_routes,
    pipeline_pages,
    docs,
    review_pages,  # serves "/": the annotator's home; engineers go on to /datasets
)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Builds the app: engine, session factory, templates and background runner included;
    while it serves, this process's pipeline reconciler runs (:func:`_start_reconciler`)."""
    settings = settings or get_settings()
    configure_logging(settings.log_format)
    settings.ensure_data_dir()
    app = FastAPI(
        title="Thresher",
        summary="Clean noisy, long-tailed image datasets with people in the loop.",
        version="0.1.0",
        lifespan=_lifespan,
        docs_url=None,  # app.docs serves /docs offline; no ReDoc
        redoc_url=None,
    )
    _set_up_state(app, settings)
    app.mount("/static", StaticFiles(directory=PROJECT_ROOT / "static"), name="static")
    for module in ROUTERS:
        app.include_router(module.router)
    app.add_api_route("/healthz", _healthz, include_in_schema=False)
    app.add_middleware(RequestLimits, settings=settings)
    app.add_middleware(SecurityHeaders)  # added last: outermost, so every response has them
    _add_error_handlers(app)
    return app


def _set_up_state(app: FastAPI, settings: Settings) -> None:
    """What the requests share, on ``app.state``."""
    engine = create_db_engine(settings.resolved_database_url)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = create_session_factory(engine)
    # An asyncio lock belongs to one event loop: the lifespan makes the one that serves.
    app.state.write_gate = write_gate(settings.resolved_database_url)
    app.state.password_checks = PasswordChecks()
    app.state.templates = create_templates()
    app.state.background = BackgroundRunner()
    app.state.secret_key = settings.load_secret_key()
    app.state.login_throttle = LoginThrottle()


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app.state
    with transaction(state.session_factory) as session:
        dataset_service.fail_interrupted_imports(session)
    state.write_gate = write_gate(state.settings.resolved_database_url)  # this loop's
    log.info("server.started", database=state.engine.url.render_as_string(hide_password=True))
    reconciler = state.pipeline_reconciler = _start_reconciler(app)
    try:
        yield
    finally:
        if reconciler is not None:
            reconciler.stop()
    state.background.shutdown()
    state.password_checks.shutdown()
    state.engine.dispose()


def _healthz() -> dict[str, str]:
    return {"status": "ok"}


def _add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(OverflowError, _unstorable_value_handler)
    app.add_exception_handler(DataError, _unstorable_value_handler)
    # Starlette runs this one outside every middleware, so it sets the security headers itself.
    app.add_exception_handler(Exception, _unexpected_error_handler)


def _start_reconciler(app: FastAPI) -> Reconciler | None:
    """Starts this process's pipeline reconciler, which moves every pipeline on every few
    seconds (``THRESHER_PIPELINE_RECONCILE_SECONDS``; 0 turns it off: None)."""
    interval = PipelineSettings().reconcile_seconds
    if interval <= 0:
        return None
    state = app.state
    if getattr(state, "job_settings", None) is None:
        state.job_settings = JobSettings()
    env = PipelineEnv(data_dir=state.settings.data_dir, jobs=state.job_settings)
    reconciler = Reconciler(state.session_factory, env=env, interval=interval)
    reconciler.start()
    return reconciler


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(("/api/", "/media/")) or "application/json" in (
        request.headers.get("accept", "")
    )


async def _app_error_handler(request: Request, exc: AppError) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status_code)
    if isinstance(exc, NotAuthenticated):
        if request.headers.get("HX-Request"):
            # An htmx swap would paste the login page into the section; reload the page instead.
            return Response(status_code=204, headers={"HX-Redirect": "/login"})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
    return render(
        request,
        "error.html",
        principal=None,
        view={"status": exc.status_code, "message": exc.message},
        status_code=exc.status_code,
    )


async def _http_error_handler(request: Request, exc: StarletteHTTPException) -> Response:
    """What Starlette and FastAPI refuse by themselves (an unknown path, a method the route
    does not take, a JSON body that cannot be parsed), in the app's one error shape."""
    error = AppError(str(exc.detail))
    error.status_code = exc.status_code
    try:
        error.code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
    except ValueError:
        error.code = "error"
    response = await _app_error_handler(request, error)
    response.headers.update(exc.headers or {})
    return response


async def _unstorable_value_handler(request: Request, exc: Exception) -> Response:
    """A value in the request that the database cannot hold, refused by the driver: a number
    out of range (an id of 2**64, say; SQLite: OverflowError, PostgreSQL: a DataError) or, on
    PostgreSQL, text with a NUL character. Nothing was written: the request's transaction
    rolled back."""
    cause = getattr(exc, "orig", None) or exc
    if isinstance(exc, OverflowError) or getattr(cause, "sqlstate", None) == _NUMBER_OUT_OF_RANGE:
        message = "a number in the request is out of range"
    elif "NUL" in str(cause):  # psycopg refuses it before sending: no SQLSTATE to go by
        message = "text in the request contains a NUL character"
    else:
        message = "a value in the request cannot be stored"
    log.info("request.unstorable_value", path=request.url.path, error=type(cause).__name__)
    return JSONResponse({"error": {"code": "invalid", "message": message}}, status_code=422)


async def _unexpected_error_handler(request: Request, exc: Exception) -> Response:
    log.error("request.failed", path=request.url.path, error=repr(exc)[:500])
    body = {"error": {"code": "internal", "message": "internal error"}}
    return JSONResponse(body, status_code=500, headers=SECURITY_HEADERS)


async def _validation_error_handler(request: Request, exc: RequestValidationError) -> Response:
    problems = [
        {"field": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
        for error in exc.errors()
    ]
    body = {"error": {"code": "invalid", "message": "invalid request", "details": problems}}
    return JSONResponse(body, status_code=422)
