"""Who may own a worker token: engineers and admins, checked at creation and at every use."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.auth import service as auth_service
from app.db import transaction
from app.errors import Forbidden
from app.jobs.local_workers import LOCAL_WORKER_USER, create_local_worker_token
from app.models import Role, TokenScope, User
from tests.conftest import MakeAccount, browser_login, new_api_token

LEASE = {"worker": "w1", "kinds": ["train_predict"], "device": "cpu"}


def lease(client: TestClient, secret: str) -> int:
    response = client.post(
        "/api/worker/lease", json=LEASE, headers={"Authorization": f"Bearer {secret}"}
    )
    return response.status_code


def worker_token(client: TestClient, headers: dict[str, str]) -> str:
    return str(new_api_token(client, headers, name="gpu", scope="worker")["token"])


def set_role_behind_the_apps_back(app: FastAPI, user_id: int, role: Role) -> None:
    """As an older version's data would have it: no token revoked along with the change."""
    with transaction(app.state.session_factory) as session:
        session.execute(update(User).where(User.id == user_id).values(role=role))


def test_an_annotator_cannot_own_a_worker_token(
    app: FastAPI, client: TestClient, make_account: MakeAccount
) -> None:
    annotator = make_account(Role.ANNOTATOR, token=False)
    csrf = browser_login(client, annotator.user.username)
    refused = client.post(
        "/api/tokens", json={"name": "gpu", "scope": "worker"}, headers={"X-CSRF-Token": csrf}
    )
    assert refused.status_code == 403
    with transaction(app.state.session_factory) as session:
        user = session.merge(annotator.user)
        with pytest.raises(Forbidden, match="worker tokens are for engineers and admins"):
            auth_service.create_token(session, user=user, name="gpu", scope=TokenScope.WORKER)


def test_a_worker_token_of_a_demoted_owner_is_refused(
    app: FastAPI, client: TestClient, make_account: MakeAccount
) -> None:
    admin = make_account(Role.ADMIN)
    engineer = make_account(Role.ENGINEER)
    secret = worker_token(client, engineer.headers)
    assert lease(client, secret) == 204

    demoted = client.patch(
        f"/api/users/{engineer.user.id}", json={"role": "annotator"}, headers=admin.headers
    )

    assert demoted.status_code == 200, demoted.text
    assert lease(client, secret) == 401
    # Promoted again, the old token stays dead.
    client.patch(f"/api/users/{engineer.user.id}", json={"role": "engineer"}, headers=admin.headers)
    assert lease(client, secret) == 401


def test_a_token_whose_owner_is_no_longer_an_engineer_is_refused_at_use(
    app: FastAPI, client: TestClient, make_account: MakeAccount
) -> None:
    engineer = make_account(Role.ENGINEER)
    secret = worker_token(client, engineer.headers)

    set_role_behind_the_apps_back(app, engineer.user.id, Role.ANNOTATOR)

    assert lease(client, secret) == 401
    refused = client.get("/api/me", headers=engineer.headers)
    assert refused.status_code == 401
    assert "no longer an engineer or admin" in refused.json()["error"]["message"]
    set_role_behind_the_apps_back(app, engineer.user.id, Role.ENGINEER)
    assert lease(client, secret) == 204


def test_local_workers_run_as_an_engineer_and_an_old_annotator_account_is_promoted(
    app: FastAPI, client: TestClient
) -> None:
    with transaction(app.state.session_factory) as session:
        old, stale = create_local_worker_token(session)
    # An older version made the account an annotator (and gave it worker tokens).
    set_role_behind_the_apps_back(app, old.user_id, Role.ANNOTATOR)
    assert lease(client, stale) == 401

    with transaction(app.state.session_factory) as session:
        token, secret = create_local_worker_token(session)
        assert token.scope is TokenScope.WORKER

    assert lease(client, secret) == 204
    refused = client.post(
        "/api/worker/lease", json=LEASE, headers={"Authorization": f"Bearer {stale}"}
    )
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]  # by the new start
    with transaction(app.state.session_factory) as session:
        user = auth_service.user_by_username(session, LOCAL_WORKER_USER)
        assert (user.role, user.is_active) == (Role.ENGINEER, True)


def test_a_new_local_workers_account_is_an_engineer(app: FastAPI, client: TestClient) -> None:
    with transaction(app.state.session_factory) as session:
        _, secret = create_local_worker_token(session)
        assert auth_service.user_by_username(session, LOCAL_WORKER_USER).role is Role.ENGINEER
    assert lease(client, secret) == 204
