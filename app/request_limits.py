"""Request bodies, bounded: who may send one, how big, how slowly (a pure ASGI middleware).

For every request with a body (anything but GET, HEAD, OPTIONS), before a byte of it is read:

1. **Size.** Each route has a limit (:data:`BODY_RULES`; small JSON and forms by default). A
   declared ``Content-Length`` over it gets 413 at once; a body that grows over it while
   streaming gets 413 as soon as it does.
2. **Authentication.** Outside the public sign-in form, the caller's token or session cookie is
   checked first (a short read-only transaction). An anonymous caller's body is never read:
   the app sees an empty body and answers 401 (or the sign-in redirect) as it always does.
3. **Time.** A body that pauses longer than ``body_idle_seconds``, or takes longer than
   ``body_seconds`` in all, gets 408.

Small bodies are read here, in full, before the app runs; so no route holds a database
transaction (on SQLite, the write lock) while a client trickles its body in. Routes that
stream large bodies themselves (:attr:`BodyRule.streamed`: result chunks, artifacts, manifest
uploads) check the worker's lease first and then read in bounded steps, under their own
limits; this middleware only times them out.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.deps import optional_principal
from app.db import SAFE_METHODS, transaction
from app.errors import AppError
from app.logging import get_logger
from app.settings import Settings

log = get_logger(__name__)

#: Paths that take a body from anonymous callers.
PUBLIC_WRITE_PATHS = frozenset({"/login"})


@dataclass(frozen=True)
class BodyRule:
    """The body limit of the routes whose path matches ``pattern``; None: the route streams
    the body itself, in bounded steps, after its own checks (the lease), and enforces its own
    limit."""

    pattern: re.Pattern[str]
    max_bytes: Callable[[Settings], int] | None


BODY_RULES = (
    BodyRule(re.compile(r"/api/worker/jobs/\d+/(artifacts/[^/]+|results/\d+)"), None),
    BodyRule(re.compile(r"/api/jobs/manifests"), None),
    # Registering or importing a dataset may carry its manifest inline.
    BodyRule(
        re.compile(r"/api/datasets(/\d+/imports)?"), lambda settings: settings.max_import_body_bytes
    ),
)


def body_limit(path: str, settings: Settings) -> int | None:
    """The body limit of ``path`` in bytes; None when its route streams and bounds the body."""
    for rule in BODY_RULES:
        if rule.pattern.fullmatch(path):
            return None if rule.max_bytes is None else rule.max_bytes(settings)
    return settings.max_body_bytes


class BodyTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class BodyTimeout(AppError):
    status_code = 408
    code = "request_timeout"


class _ClientGone(Exception):
    """The client disconnected while sending its body."""


class RequestLimits:
    """See the module's docstring."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = body_limit(path, self.settings)
        declared = _declared_length(scope)
        if limit is not None and declared is not None and declared > limit:
            await _refuse(
                send, BodyTooLarge(f"the body has {declared} bytes; the limit is {limit}")
            )
            return
        if path not in PUBLIC_WRITE_PATHS and not await run_in_threadpool(_authenticated, scope):
            # Not a byte of an anonymous body is read; the app answers as for any anonymous call.
            await self.app(scope, _empty_body, send)
            return
        if limit is None:
            timed = _TimedReceive(receive, self.settings, limit=None, deadline=False)
            await self.app(scope, timed, send)
            return
        timed = _TimedReceive(receive, self.settings, limit=limit, deadline=True)
        try:
            body = await timed.read_all()
        except _ClientGone:
            return
        except AppError as exc:
            log.info("request.body_refused", path=path, code=exc.code)
            await _refuse(send, exc)
            return
        await self.app(scope, _replay(body, receive), send)


class _TimedReceive:
    """``receive``, counting bytes against the limit and timing each wait for more."""

    def __init__(
        self, receive: Receive, settings: Settings, *, limit: int | None, deadline: bool
    ) -> None:
        self._receive = receive
        self._idle = settings.body_idle_seconds
        self._deadline = time.monotonic() + settings.body_seconds if deadline else None
        self._limit = limit
        self._size = 0

    async def __call__(self) -> Message:
        timeout = self._idle
        if self._deadline is not None:
            timeout = max(0.0, min(timeout, self._deadline - time.monotonic()))
        try:
            message = await asyncio.wait_for(self._receive(), timeout=timeout)
        except TimeoutError:
            raise BodyTimeout("the request body came too slowly; send it again") from None
        if message["type"] == "http.request" and self._limit is not None:
            self._size += len(message.get("body", b""))
            if self._size > self._limit:
                raise BodyTooLarge(f"the body is over the limit of {self._limit} bytes")
        return message

    async def read_all(self) -> bytes:
        parts: list[bytes] = []
        while True:
            message = await self()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(parts)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _authenticated(scope: Scope) -> bool:
    request = Request(scope)
    try:
        with transaction(request.app.state.session_factory, read_only=True) as session:
            return optional_principal(request, session) is not None
    except AppError:  # any refusal while identifying the caller: the app gives the answer
        return False


async def _empty_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, whenever it comes

    return replay


async def _refuse(send: Send, error: AppError) -> None:
    body = json.dumps({"error": error.to_dict()}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body is left unread, so the connection cannot be reused.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
