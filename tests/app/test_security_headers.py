"""Every response carries the security headers, pages, API errors and static files alike;
static files are revalidated on each use, and a route's own Cache-Control wins."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.models import Role
from app.security_headers import SECURITY_HEADERS, STATIC_CACHE_CONTROL
from tests.app.jobs.factories import create_predict_job
from tests.conftest import MakeAccount

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def assert_security_headers(headers: Mapping[str, str]) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers[name] == value, name


@SQLITE
@pytest.mark.parametrize(
    ("path", "status"),
    [("/healthz", 200), ("/login", 200), ("/api/me", 401), ("/static/app.css", 200)],
)
def test_security_headers_are_on_every_response(client: TestClient, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert_security_headers(response.headers)
    assert response.headers.get("cache-control") == (
        STATIC_CACHE_CONTROL if path.startswith("/static/") else None
    )


@pytest.mark.parametrize(
    "path",
    [f"/api/jobs/{2**64}", f"/media/samples/{2**64}/original", f"/api/jobs/{2**63}"],
)
def test_numbers_the_database_cannot_hold_are_a_clean_422(
    client: TestClient, make_account: MakeAccount, path: str
) -> None:
    response = client.get(path, headers=make_account(Role.ADMIN).headers)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"] == "a number in the request is out of range"
    assert_security_headers(response.headers)


@SQLITE
def test_a_json_body_that_cannot_be_parsed_is_a_400_in_the_error_shape(
    client: TestClient, make_account: MakeAccount
) -> None:
    headers = {**make_account(Role.ENGINEER).headers, "Content-Type": "application/json"}
    response = client.post("/api/tokens", content=b"\xff\xfe\x00", headers=headers)

    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": {"code": "bad_request", "message": "There was an error parsing the body"}
    }
    assert_security_headers(response.headers)


@SQLITE
@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("GET", "/api/nothing-here", 404, "not_found"), ("PUT", "/api/me", 405, "method_not_allowed")],
)
def test_paths_and_methods_the_app_lacks_are_answered_in_the_error_shape(
    client: TestClient, method: str, path: str, status: int, code: str
) -> None:
    response = client.request(method, path)

    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    if status == 405:
        assert response.headers["allow"] == "GET"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite stores NUL
def test_text_with_a_nul_character_the_database_cannot_hold_is_a_clean_422(
    client: TestClient, make_account: MakeAccount
) -> None:
    headers = make_account(Role.ADMIN).headers
    job_id = create_predict_job(client, headers)  # the job exists: the name reaches the query
    response = client.get(f"/api/jobs/{job_id}/artifacts/model%00.safetensors", headers=headers)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"] == "text in the request contains a NUL character"
    assert_security_headers(response.headers)


@SQLITE
def test_an_unexpected_error_is_a_500_with_the_security_headers(
    app: FastAPI, make_account: MakeAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.auth import routes as auth_routes

    class Broken:
        @staticmethod
        def model_validate(*args: object) -> None:
            raise RuntimeError("boom")

    monkeypatch.setattr(auth_routes, "UserRead", Broken)
    headers = make_account(Role.ENGINEER).headers
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/me", headers=headers)

    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal", "message": "internal error"}}
    assert "boom" not in response.text
    assert_security_headers(response.headers)


@SQLITE
def test_a_static_file_is_revalidated_and_answers_304_when_unchanged(client: TestClient) -> None:
    """Every use asks the server (no stale review module after an upgrade); an unchanged file
    costs a 304 without a body."""
    first = client.get("/static/review.js")
    again = client.get("/static/review.js", headers={"If-None-Match": first.headers["etag"]})

    assert first.headers["cache-control"] == "no-cache"
    assert again.status_code == 304
    assert again.content == b""
