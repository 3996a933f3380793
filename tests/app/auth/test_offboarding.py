"""Offboarding through HTTP: deactivating users, changing roles, the last admin, new passwords."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from app.auth import service as auth_service
from app.auth.service import LastAdmin
from app.db import transaction
from app.models import Role
from tests.conftest import (
    Account,
    MakeAccount,
    bearer,
    browser_login,
    new_api_token,
    post_login,
)


def new_token(client: TestClient, owner: Account, scope: str = "api") -> dict[str, str]:
    return bearer(new_api_token(client, owner.headers, name=f"{scope}-token", scope=scope)["token"])


@pytest.fixture
def admin(make_account: MakeAccount) -> Account:
    return make_account(Role.ADMIN)


@pytest.fixture
def engineer(make_account: MakeAccount) -> Account:
    return make_account(Role.ENGINEER)


def patch_user(
    client: TestClient, admin: Account, user: Account, **changes: object
) -> dict[str, Any]:
    response = client.patch(f"/api/users/{user.user.id}", json=changes, headers=admin.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_deactivating_a_user_refuses_their_session_and_every_token_at_once(
    client: TestClient, admin: Account, engineer: Account
) -> None:
    worker = new_token(client, engineer, "worker")
    browser_login(client, engineer.user.username)
    assert client.get("/api/me").json()["username"] == engineer.user.username

    body = patch_user(client, admin, engineer, is_active=False)

    assert body["is_active"] is False
    assert client.get("/api/me").status_code == 401  # the session cookie
    assert client.get("/api/me", headers=engineer.headers).status_code == 401
    lease = {"worker": "w1", "kinds": ["train_predict"], "device": "cpu"}
    assert client.post("/api/worker/lease", json=lease, headers=worker).status_code == 401
    client.cookies.clear()
    refused = post_login(client, engineer.user.username, engineer.password)
    assert refused.status_code == 401


def test_a_reactivated_user_signs_in_again_but_old_tokens_stay_revoked(
    client: TestClient, admin: Account, engineer: Account
) -> None:
    patch_user(client, admin, engineer, is_active=False)

    assert patch_user(client, admin, engineer, is_active=True)["is_active"] is True

    browser_login(client, engineer.user.username)
    assert client.get("/api/me").status_code == 200
    refused = client.get("/api/me", headers=engineer.headers)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]


def test_a_role_change_takes_effect_on_the_next_request(
    client: TestClient, make_account: MakeAccount, admin: Account
) -> None:
    annotator = make_account(Role.ANNOTATOR, token=False)
    csrf = browser_login(client, annotator.user.username)
    assert client.get("/api/tokens").status_code == 403

    patch_user(client, admin, annotator, role="engineer")

    assert client.get("/api/me").json()["role"] == "engineer"
    assert client.get("/api/tokens").status_code == 200
    created = client.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf})
    assert created.status_code == 201


def test_demoting_an_engineer_to_annotator_revokes_their_tokens_and_keeps_their_session(
    client: TestClient, admin: Account, engineer: Account
) -> None:
    browser_login(client, engineer.user.username)

    patch_user(client, admin, engineer, role="annotator")

    assert client.get("/api/me").json()["role"] == "annotator"
    assert client.get("/api/tokens").status_code == 403
    assert client.get("/api/me", headers=engineer.headers).status_code == 401


def test_the_last_active_admin_cannot_be_deactivated_or_demoted(
    client: TestClient, admin: Account
) -> None:
    for change in ({"is_active": False}, {"role": "engineer"}, {"role": "annotator"}):
        refused = client.patch(f"/api/users/{admin.user.id}", json=change, headers=admin.headers)
        assert refused.status_code == 409, change
        assert refused.json()["error"]["code"] == "last_admin"
        assert "last active admin" in refused.json()["error"]["message"]
    assert client.get("/api/me", headers=admin.headers).json()["role"] == "admin"


def test_an_admin_may_step_down_only_while_another_admin_is_active(
    client: TestClient, make_account: MakeAccount
) -> None:
    first = make_account(Role.ADMIN)
    second = make_account(Role.ADMIN)
    patch_user(client, first, second, is_active=False)
    path = f"/api/users/{first.user.id}"
    refused = client.patch(path, json={"role": "engineer"}, headers=first.headers)
    assert refused.status_code == 409  # the deactivated admin does not count
    third = make_account(Role.ADMIN)

    demoted = client.patch(path, json={"role": "engineer"}, headers=third.headers)

    assert demoted.status_code == 200, demoted.text
    assert client.get("/api/me", headers=first.headers).json()["role"] == "engineer"
    assert client.get("/api/users", headers=first.headers).status_code == 403


def test_user_changes_need_an_admin_and_valid_input(
    client: TestClient, admin: Account, engineer: Account
) -> None:
    path = f"/api/users/{engineer.user.id}"
    not_admin = client.patch(path, json={"is_active": False}, headers=engineer.headers)
    assert not_admin.status_code == 403
    assert client.patch("/api/users/999999", json={"is_active": False}).status_code == 401
    assert client.patch(path, json={}, headers=admin.headers).status_code == 422
    assert client.patch(path, json={"role": "root"}, headers=admin.headers).status_code == 422
    assert client.patch(path, json={"shell": "x"}, headers=admin.headers).status_code == 422
    missing = client.patch("/api/users/999999", json={"role": "admin"}, headers=admin.headers)
    assert missing.status_code == 404
    # Idempotent: sending what the user already has changes nothing, the token still works.
    assert patch_user(client, admin, engineer, role="engineer", is_active=True)["role"] == (
        "engineer"
    )
    assert client.get("/api/me", headers=engineer.headers).status_code == 200


def test_a_new_password_revokes_every_token_by_default(
    client: TestClient, admin: Account, engineer: Account
) -> None:
    worker = new_token(client, engineer, "worker")

    response = client.post(
        f"/api/users/{engineer.user.id}/password", json={}, headers=admin.headers
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tokens_revoked"] == 2
    assert body["user"]["username"] == engineer.user.username
    assert client.get("/api/me", headers=engineer.headers).status_code == 401
    lease = {"worker": "w1", "kinds": ["train_predict"], "device": "cpu"}
    assert client.post("/api/worker/lease", json=lease, headers=worker).status_code == 401
    browser_login(client, engineer.user.username, body["password"])
    assert client.get("/api/me").status_code == 200


def test_a_new_password_keeps_tokens_when_asked(
    client: TestClient, admin: Account, engineer: Account
) -> None:
    worker = new_token(client, engineer, "worker")
    browser_login(client, engineer.user.username)
    path = f"/api/users/{engineer.user.id}/password"

    kept = client.post(
        path,
        json={"password": "a brand new password", "revoke_tokens": "none"},
        headers=admin.headers,
    )

    assert kept.status_code == 200, kept.text
    assert (kept.json()["password"], kept.json()["tokens_revoked"]) == (None, 0)
    assert client.get("/api/me", headers=engineer.headers).status_code == 200
    lease = {"worker": "w1", "kinds": ["train_predict"], "device": "cpu"}
    assert client.post("/api/worker/lease", json=lease, headers=worker).status_code == 204
    assert client.get("/api/me").status_code == 401  # sessions end in every case

    api_only = client.post(path, json={"revoke_tokens": "api"}, headers=admin.headers)

    assert api_only.json()["tokens_revoked"] == 1
    assert client.get("/api/me", headers=engineer.headers).status_code == 401
    assert client.post("/api/worker/lease", json=lease, headers=worker).status_code == 204


def test_setting_a_password_needs_an_admin_and_a_long_enough_password(
    client: TestClient, admin: Account, engineer: Account
) -> None:
    path = f"/api/users/{engineer.user.id}/password"
    assert client.post(path, json={}, headers=engineer.headers).status_code == 403
    assert client.post(path, json={"password": "short"}, headers=admin.headers).status_code == 422
    wrong = client.post(path, json={"revoke_tokens": "some"}, headers=admin.headers)
    assert wrong.status_code == 422
    assert client.get("/api/me", headers=engineer.headers).status_code == 200


def test_two_admins_deactivating_each_other_at_once_leave_one_active(
    app: FastAPI, client: TestClient, make_account: MakeAccount
) -> None:
    first = make_account(Role.ADMIN)
    second = make_account(Role.ADMIN)
    factory = app.state.session_factory
    outcome: list[str] = []

    def deactivate_first() -> None:
        try:
            with transaction(factory) as session:
                user = auth_service.user_or_404(session, first.user.id)
                auth_service.update_user(session, user=user, by=None, is_active=False)
            outcome.append("deactivated")
        except LastAdmin:
            outcome.append("last_admin")

    with transaction(factory) as session:
        user = auth_service.user_or_404(session, second.user.id)
        auth_service.update_user(session, user=user, by=None, is_active=False)
        racer = threading.Thread(target=deactivate_first)
        racer.start()
        racer.join(timeout=0.5)
        assert racer.is_alive(), outcome  # it waits for this transaction to end
    racer.join(timeout=30)

    assert outcome == ["last_admin"]
    assert client.get("/api/me", headers=first.headers).json()["is_active"] is True


def test_each_change_is_logged_with_who_made_it_and_to_whom(
    client: TestClient, admin: Account, engineer: Account
) -> None:
    (token_id,) = [t["id"] for t in client.get("/api/tokens", headers=engineer.headers).json()]
    path = f"/api/users/{engineer.user.id}"

    with capture_logs() as logs:
        client.delete(f"/api/tokens/{token_id}", headers=admin.headers)
        client.post(f"{path}/password", json={"revoke_tokens": "none"}, headers=admin.headers)
        client.patch(path, json={"role": "annotator", "is_active": False}, headers=admin.headers)

    events = {entry["event"]: entry for entry in logs if entry["event"].startswith("auth.")}
    by, to = admin.user.username, engineer.user.username
    assert (events["auth.token.revoked"]["by"], events["auth.token.revoked"]["owner"]) == (by, to)
    for name in ("auth.password.changed", "auth.user.role_changed", "auth.user.deactivated"):
        assert (events[name]["by"], events[name]["user"]) == (by, to), name
    assert events["auth.user.role_changed"]["previous"] == "engineer"
