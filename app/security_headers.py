"""Headers every response carries (and a cache lifetime for static files), as a pure ASGI
middleware: Starlette's ``BaseHTTPMiddleware`` (``@app.middleware("http")``) runs each request
through an extra task and stream, a cost every annotator's request would pay."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Everything is served locally: no CDN, no inline scripts.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; frame-ancestors 'none'"
    ),
}
#: Static files are revalidated on every use (an ETag answers 304 when nothing changed): the
#: review page's ES modules import one another, and after an upgrade a cached old module beside
#: a fresh one would break the page until the cache expired.
STATIC_CACHE_CONTROL = "no-cache"


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every HTTP response that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if static:
                    headers.setdefault("Cache-Control", STATIC_CACHE_CONTROL)
            await send(message)

        await self.app(scope, receive, send_with_headers)
