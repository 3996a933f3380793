"""Every response carries the security headers, pages, API errors and static files alike;
static files are cacheable, and a route's own Cache-Control wins."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.security_headers import SECURITY_HEADERS, STATIC_CACHE_CONTROL

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@SQLITE
@pytest.mark.parametrize(
    ("path", "status"),
    [("/healthz", 200), ("/login", 200), ("/api/me", 401), ("/static/app.css", 200)],
)
def test_security_headers_are_on_every_response(client: TestClient, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert response.headers.get("cache-control") == (
        STATIC_CACHE_CONTROL if path.startswith("/static/") else None
    )
