"""Login and logout pages. The login form is protected by a double-submit CSRF cookie."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app import security
from app.auth import service
from app.auth.deps import SESSION_COOKIE, CurrentPrincipal, OptionalPrincipal
from app.auth.password_checks import PasswordChecks, SignInsBusy
from app.auth.throttle import LoginThrottle, TooManySignIns
from app.db import SessionDep, transaction, write_turn
from app.errors import CsrfFailed, NotAuthenticated
from app.models import User
from app.settings import Settings
from app.web import render

router = APIRouter(include_in_schema=False)

LOGIN_CSRF_COOKIE = "thresher_login_csrf"


def _safe_next(target: str | None) -> str:
    """Only same-site relative paths: never redirect a user off this server after login."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _login_page(
    request: Request, *, next_url: str, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    token = security.new_token()[:43]
    response = render(
        request,
        "login.html",
        principal=None,
        view={"next": next_url, "error": error, "login_csrf": token},
        status_code=status_code,
    )
    settings: Settings = request.app.state.settings
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=settings.secure_cookies
    )
    return response


@router.get("/login")
def login_form(request: Request, principal: OptionalPrincipal, next: str | None = None) -> Response:
    if principal is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(request, next_url=_safe_next(next))


@router.post("/login")
async def login(
    request: Request,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not security.same(csrf_token, expected):
        raise CsrfFailed("the login form expired; reload the page and sign in again")
    throttle: LoginThrottle = request.app.state.login_throttle
    client = request.client.host if request.client else None
    try:
        throttle.check(username, client)
    except TooManySignIns as exc:
        await throttle.hold_refusal()
        return _refused(request, next, exc)
    factory = request.app.state.session_factory
    checks: PasswordChecks = request.app.state.password_checks
    try:
        user = await checks.run(service.authenticate, factory, username=username, password=password)
    except SignInsBusy as exc:
        return _refused(request, next, exc)
    except NotAuthenticated as exc:
        throttle.failed(username, client)
        return _login_page(request, next_url=_safe_next(next), error=exc.message, status_code=401)
    throttle.succeeded(username, client)
    settings: Settings = request.app.state.settings
    lifetime = timedelta(hours=settings.session_hours)
    async with write_turn(request):
        secret = await run_in_threadpool(_start_web_session, factory, user, lifetime)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(lifetime.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


def _refused(request: Request, next: str, error: TooManySignIns | SignInsBusy) -> Response:
    """The sign-in page again, saying why, with Retry-After (in seconds)."""
    wait = int(error.details["wait"])
    response = _login_page(
        request, next_url=_safe_next(next), error=error.message, status_code=error.status_code
    )
    response.headers["Retry-After"] = str(wait)
    return response


def _start_web_session(factory: sessionmaker[Session], user: User, lifetime: timedelta) -> str:
    with transaction(factory) as session:
        secret, _ = service.start_web_session(session, user=user, lifetime=lifetime)
    return secret


@router.post("/logout")
def logout(request: Request, session: SessionDep, _: CurrentPrincipal) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        service.end_web_session(session, cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
