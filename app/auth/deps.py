"""Who is calling: bearer tokens or session cookies, CSRF on cookie-authenticated writes, roles."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app import security
from app.auth import service
from app.auth.service import Principal
from app.db import READ_ONLY, SAFE_METHODS, SessionDep, transaction
from app.errors import CsrfFailed, Forbidden, NotAuthenticated
from app.logging import get_logger
from app.models import Role, TokenScope

log = get_logger(__name__)

SESSION_COOKIE = "thresher_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise NotAuthenticated("send the API token as 'Authorization: Bearer <token>'")
    return credentials.strip()


def optional_principal(request: Request, session: SessionDep) -> Principal | None:
    """The caller, from a bearer token (preferred) or the session cookie; None if anonymous."""
    bearer = _bearer(request)
    if bearer is not None:
        principal = service.principal_from_bearer(session, bearer)
        if service.token_use_is_stale(principal):
            _record_token_use(request, session, principal)
        return principal
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return service.principal_from_session_cookie(session, cookie)
    return None


def _record_token_use(request: Request, session: Session, principal: Principal) -> None:
    if not session.info.get(READ_ONLY):
        service.record_token_use(session, principal)
        return
    # A read stays a read: the rare write of a token's last use takes its own short
    # transaction, and is skipped (for the next request to do) rather than wait for a writer.
    try:
        with transaction(request.app.state.session_factory, no_wait=True) as writer:
            service.record_token_use(writer, principal)
    except OperationalError:
        log.debug("auth.token.use_not_recorded", token_id=principal.token_id)


OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]


async def current_principal(request: Request, principal: OptionalPrincipal) -> Principal:
    """The authenticated caller. Writes made with a session cookie must carry the CSRF token."""
    if principal is None:
        raise NotAuthenticated("sign in or send an API token")
    if principal.via == "session" and request.method not in SAFE_METHODS:
        await _check_csrf(request, principal.csrf_token or "")
    return principal


async def _check_csrf(request: Request, expected: str) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(_FORM_TYPES):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not security.same(sent, expected):
        raise CsrfFailed("missing or wrong CSRF token; reload the page and try again")


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_role(role: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency admitting users with ``role`` or above, through the API (not worker tokens)."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.token_scope is TokenScope.WORKER:
            raise Forbidden("a worker token can only be used by workers")
        if not principal.role.includes(role):
            raise Forbidden(f"this needs the {role.value} role")
        return principal

    return dependency


AnnotatorDep = Annotated[Principal, Depends(require_role(Role.ANNOTATOR))]
EngineerDep = Annotated[Principal, Depends(require_role(Role.ENGINEER))]
AdminDep = Annotated[Principal, Depends(require_role(Role.ADMIN))]
