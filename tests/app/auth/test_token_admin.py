"""Tokens across users through HTTP: admins list and revoke anyone's, others only their own."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.models import Role
from tests.conftest import Account, MakeAccount, bearer, new_api_token


def token_ids(client: TestClient, caller: Account, query: str = "") -> set[int]:
    response = client.get(f"/api/tokens{query}", headers=caller.headers)
    assert response.status_code == 200, response.text
    return {token["id"] for token in response.json()}


def worker_token(client: TestClient, owner: Account) -> tuple[int, dict[str, str]]:
    created = new_api_token(client, owner.headers, name="gpu", scope="worker")
    return created["id"], bearer(created["token"])


def test_an_admin_lists_another_users_tokens_and_everyones(
    client: TestClient, make_account: MakeAccount
) -> None:
    admin = make_account(Role.ADMIN)
    alice = make_account(Role.ENGINEER)
    bob = make_account(Role.ENGINEER)
    alices_worker, _ = worker_token(client, alice)

    alices = client.get(f"/api/tokens?user_id={alice.user.id}", headers=admin.headers).json()

    assert {token["user_id"] for token in alices} == {alice.user.id}
    assert alices_worker in {token["id"] for token in alices}
    assert {"api", "worker"} == {token["scope"] for token in alices}
    assert all("token" not in token for token in alices)
    everyone = client.get("/api/tokens?all=true", headers=admin.headers).json()
    assert {token["user_id"] for token in everyone} == {admin.user.id, alice.user.id, bob.user.id}
    assert token_ids(client, admin) == token_ids(client, admin, f"?user_id={admin.user.id}")
    assert {t["user_id"] for t in client.get("/api/tokens", headers=admin.headers).json()} == {
        admin.user.id
    }


def test_an_admin_revokes_another_users_token_and_it_stops_working(
    client: TestClient, make_account: MakeAccount
) -> None:
    admin = make_account(Role.ADMIN)
    engineer = make_account(Role.ENGINEER)
    worker_id, worker = worker_token(client, engineer)
    api_id = next(iter(token_ids(client, engineer) - {worker_id}))

    for token_id in (api_id, worker_id):
        revoked = client.delete(f"/api/tokens/{token_id}", headers=admin.headers)
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["revoked_at"] is not None

    refused = client.get("/api/me", headers=engineer.headers)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]
    lease = {"worker": "w1", "kinds": ["train_predict"], "device": "cpu"}
    assert client.post("/api/worker/lease", json=lease, headers=worker).status_code == 401
    again = client.delete(f"/api/tokens/{worker_id}", headers=admin.headers)
    assert again.status_code == 200  # revoking again is a no-op


def test_a_non_admin_sees_only_their_own_tokens(
    client: TestClient, make_account: MakeAccount
) -> None:
    alice = make_account(Role.ENGINEER)
    bob = make_account(Role.ENGINEER)
    bobs = token_ids(client, bob)

    assert token_ids(client, alice) & bobs == set()
    assert token_ids(client, alice, f"?user_id={alice.user.id}") == token_ids(client, alice)
    for query in (f"?user_id={bob.user.id}", "?all=true", "?user_id=999999"):
        refused = client.get(f"/api/tokens{query}", headers=alice.headers)
        assert refused.status_code == 403, query
        assert refused.json()["error"]["code"] == "forbidden"


def test_a_non_admin_revoking_someone_elses_token_gets_404_as_for_a_missing_one(
    client: TestClient, make_account: MakeAccount
) -> None:
    alice = make_account(Role.ENGINEER)
    bob = make_account(Role.ENGINEER)
    (bobs_token,) = token_ids(client, bob)

    refused = client.delete(f"/api/tokens/{bobs_token}", headers=alice.headers)
    missing = client.delete("/api/tokens/999999", headers=alice.headers)

    assert refused.status_code == missing.status_code == 404
    assert refused.json()["error"]["message"] == f"no token {bobs_token}"
    assert client.get("/api/me", headers=bob.headers).status_code == 200


def test_listing_tokens_refuses_bad_queries(client: TestClient, make_account: MakeAccount) -> None:
    admin = make_account(Role.ADMIN)
    both = client.get(f"/api/tokens?all=true&user_id={admin.user.id}", headers=admin.headers)
    assert both.status_code == 422
    assert client.get("/api/tokens?user_id=0", headers=admin.headers).status_code == 422
    assert client.get("/api/tokens?user_id=999999", headers=admin.headers).status_code == 404
