"""Accounts through HTTP: 401 for anonymous calls, 403 by role, tokens, sessions and CSRF."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.models import Role
from tests.conftest import MakeAccount, bearer, browser_login, new_api_token, post_login


def test_anonymous_api_call_gets_401(client: TestClient) -> None:
    response = client.get("/api/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_anonymous_page_redirects_to_login(client: TestClient) -> None:
    response = client.get("/datasets?page=2", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/datasets%3Fpage%3D2"


def test_bearer_token_identifies_user(client: TestClient, make_account: MakeAccount) -> None:
    engineer = make_account(Role.ENGINEER)
    response = client.get("/api/me", headers=engineer.headers)
    assert response.status_code == 200
    assert response.json()["username"] == engineer.user.username


def test_unknown_bearer_token_gets_401(client: TestClient) -> None:
    response = client.get("/api/me", headers={"Authorization": "Bearer thr_nope"})
    assert response.status_code == 401


def test_malformed_authorization_header_gets_401(client: TestClient) -> None:
    response = client.get("/api/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401
    assert "Bearer" in response.json()["error"]["message"]


def test_annotator_gets_403_on_engineer_endpoint(
    client: TestClient, make_account: MakeAccount
) -> None:
    annotator = make_account(Role.ANNOTATOR, token=False)
    browser_login(client, annotator.user.username)
    assert client.get("/api/me").status_code == 200
    response = client.get("/api/tokens")
    assert response.status_code == 403
    assert "engineer" in response.json()["error"]["message"]


def test_engineer_gets_403_on_admin_endpoint(client: TestClient, make_account: MakeAccount) -> None:
    engineer = make_account(Role.ENGINEER)
    assert client.get("/api/users", headers=engineer.headers).status_code == 403


def test_token_is_shown_once_and_stored_hashed(
    client: TestClient, make_account: MakeAccount
) -> None:
    engineer = make_account(Role.ENGINEER)
    created = client.post("/api/tokens", json={"name": "laptop"}, headers=engineer.headers)
    assert created.status_code == 201
    secret = created.json()["token"]
    assert secret.startswith("thr_")
    listed = client.get("/api/tokens", headers=engineer.headers).json()
    assert all("token" not in token for token in listed)
    assert secret not in str(listed)
    assert client.get("/api/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 200


def test_revoked_token_stops_working(client: TestClient, make_account: MakeAccount) -> None:
    engineer = make_account(Role.ENGINEER)
    created = new_api_token(client, engineer.headers, name="ci")
    headers = bearer(created["token"])
    assert (
        client.delete(f"/api/tokens/{created['id']}", headers=engineer.headers).status_code == 200
    )
    response = client.get("/api/me", headers=headers)
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


def test_worker_token_cannot_use_engineer_api(
    client: TestClient, make_account: MakeAccount
) -> None:
    engineer = make_account(Role.ENGINEER)
    created = new_api_token(client, engineer.headers, name="gpu-1", scope="worker")
    response = client.get("/api/tokens", headers=bearer(created["token"]))
    assert response.status_code == 403
    assert "worker" in response.json()["error"]["message"]


def test_admin_creates_user_with_generated_password(
    client: TestClient, make_account: MakeAccount
) -> None:
    admin = make_account(Role.ADMIN)
    response = client.post(
        "/api/users", json={"username": "ann", "role": "annotator"}, headers=admin.headers
    )
    assert response.status_code == 201
    password = response.json()["password"]
    assert password and len(password) >= 12
    browser_login(client, "ann", password)
    assert client.get("/api/me").json()["role"] == "annotator"


def test_duplicate_username_gets_409(client: TestClient, make_account: MakeAccount) -> None:
    admin = make_account(Role.ADMIN)
    body = {"username": "twin", "role": "annotator", "password": "long enough pw"}
    assert client.post("/api/users", json=body, headers=admin.headers).status_code == 201
    assert client.post("/api/users", json=body, headers=admin.headers).status_code == 409


def test_invalid_username_gets_422_naming_the_field(
    client: TestClient, make_account: MakeAccount
) -> None:
    admin = make_account(Role.ADMIN)
    response = client.post("/api/users", json={"username": "no spaces"}, headers=admin.headers)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "body.username"


def test_wrong_password_shows_login_error(client: TestClient, make_account: MakeAccount) -> None:
    annotator = make_account(Role.ANNOTATOR, token=False)
    response = post_login(client, annotator.user.username, "wrong password")
    assert response.status_code == 401
    assert "wrong username or password" in response.text
    assert "thresher_session" not in client.cookies


def test_login_without_csrf_cookie_is_refused(
    client: TestClient, make_account: MakeAccount
) -> None:
    annotator = make_account(Role.ANNOTATOR, token=False)
    response = client.post(
        "/login",
        data={
            "username": annotator.user.username,
            "password": annotator.password,
            "csrf_token": "x",
        },
    )
    assert response.status_code == 403
    assert "thresher_session" not in client.cookies


def test_cookie_write_without_csrf_token_is_refused(
    client: TestClient, make_account: MakeAccount
) -> None:
    engineer = make_account(Role.ENGINEER, token=False)
    csrf = browser_login(client, engineer.user.username)
    refused = client.post("/api/tokens", json={"name": "x"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_failed"
    wrong = client.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": "wrong"})
    assert wrong.status_code == 403
    accepted = client.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf})
    assert accepted.status_code == 201


def test_logout_needs_csrf_and_ends_session(client: TestClient, make_account: MakeAccount) -> None:
    annotator = make_account(Role.ANNOTATOR, token=False)
    csrf = browser_login(client, annotator.user.username)
    assert client.post("/logout", follow_redirects=False).status_code == 403
    response = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    client.cookies.clear()
    assert client.get("/api/me").status_code == 401


def test_login_redirect_stays_on_this_site(client: TestClient, make_account: MakeAccount) -> None:
    annotator = make_account(Role.ANNOTATOR, token=False)
    client.get("/login")
    response = client.post(
        "/login",
        data={
            "username": annotator.user.username,
            "password": annotator.password,
            "csrf_token": client.cookies.get("thresher_login_csrf"),
            "next": "https://evil.example/",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"
