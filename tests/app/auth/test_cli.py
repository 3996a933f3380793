"""``thresher users`` and ``thresher tokens`` for offboarding, checked against the running app."""

from __future__ import annotations

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import cli
from app.models import Role
from tests.conftest import Account, MakeAccount, bearer, browser_login

LEASE = {"worker": "w1", "kinds": ["train_predict"], "device": "cpu"}


def run(runner: CliRunner, *args: str, code: int = 0) -> str:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == code, result.output
    return result.output


def new_token(runner: CliRunner, user: str, scope: str = "api") -> str:
    output = run(runner, "tokens", "create", "--user", user, "--name", scope, "--scope", scope)
    return output.strip().splitlines()[-1]


def test_deactivate_signs_out_and_refuses_tokens_then_reactivate_allows_sign_in(
    runner: CliRunner, client: TestClient, make_account: MakeAccount
) -> None:
    engineer = make_account(Role.ENGINEER)
    worker = new_token(runner, engineer.user.username, "worker")
    browser_login(client, engineer.user.username)

    output = run(runner, "users", "deactivate", engineer.user.username)

    assert "deactivated" in output
    assert client.get("/api/me").status_code == 401
    assert client.get("/api/me", headers=engineer.headers).status_code == 401
    assert client.post("/api/worker/lease", json=LEASE, headers=bearer(worker)).status_code == 401
    assert "(deactivated)" in run(runner, "users", "list")
    refused = run(
        runner, "tokens", "create", "--user", engineer.user.username, "--name", "x", code=1
    )
    assert "deactivated" in refused

    run(runner, "users", "reactivate", engineer.user.username)

    browser_login(client, engineer.user.username)
    assert client.get("/api/me").status_code == 200
    assert "(deactivated)" not in run(runner, "users", "list")


def test_set_role_takes_effect_on_the_next_request(
    runner: CliRunner, client: TestClient, make_account: MakeAccount
) -> None:
    engineer = make_account(Role.ENGINEER)
    assert client.get("/api/users", headers=engineer.headers).status_code == 403

    assert "is now admin" in run(runner, "users", "set-role", engineer.user.username, "admin")

    assert client.get("/api/users", headers=engineer.headers).status_code == 200
    make_account(Role.ADMIN)  # so that the new admin is not the last one
    run(runner, "users", "set-role", engineer.user.username, "annotator")
    assert client.get("/api/me", headers=engineer.headers).status_code == 401  # tokens revoked


def test_the_last_admin_cannot_be_deactivated_or_demoted_from_the_command_line(
    runner: CliRunner, client: TestClient, make_account: MakeAccount
) -> None:
    admin = make_account(Role.ADMIN)
    assert "last active admin" in run(runner, "users", "deactivate", admin.user.username, code=1)
    refused = run(runner, "users", "set-role", admin.user.username, "engineer", code=1)
    assert "last active admin" in refused
    assert client.get("/api/users", headers=admin.headers).status_code == 200
    assert "nobody" in run(runner, "users", "deactivate", "nobody", code=1)


def test_tokens_list_shows_everyones_and_revoke_stops_one(
    runner: CliRunner, client: TestClient, make_account: MakeAccount
) -> None:
    alice = make_account(Role.ENGINEER)
    bob = make_account(Role.ENGINEER)
    worker = new_token(runner, alice.user.username, "worker")

    rows = [line.split("\t") for line in run(runner, "tokens", "list").strip().splitlines()]

    assert {row[1] for row in rows} == {alice.user.username, bob.user.username}
    assert all(worker not in "\t".join(row) for row in rows)  # secrets are never shown
    (worker_row,) = [row for row in rows if row[2] == "worker"]
    assert worker_row[1] == alice.user.username and worker_row[6] == "active"

    output = run(runner, "tokens", "revoke", worker_row[0])

    assert f"token {worker_row[0]} (worker) of {alice.user.username} is revoked" in output
    assert client.post("/api/worker/lease", json=LEASE, headers=bearer(worker)).status_code == 401
    assert client.get("/api/me", headers=alice.headers).status_code == 200
    mine = run(runner, "tokens", "list", "--user", alice.user.username, "--active")
    assert [line.split("\t")[2] for line in mine.strip().splitlines()] == ["api"]
    run(runner, "tokens", "revoke", worker_row[0])  # again: nothing changes
    assert "no token 999999" in run(runner, "tokens", "revoke", "999999", code=1)


def test_set_password_revokes_every_token_unless_kept(
    runner: CliRunner, client: TestClient, make_account: MakeAccount
) -> None:
    engineer = make_account(Role.ENGINEER)
    worker = new_token(runner, engineer.user.username, "worker")

    kept = run(runner, "users", "set-password", engineer.user.username, "--keep-tokens")

    assert "0 token(s) revoked" in kept
    assert client.get("/api/me", headers=engineer.headers).status_code == 200
    assert client.post("/api/worker/lease", json=LEASE, headers=bearer(worker)).status_code == 204

    revoked = run(runner, "users", "set-password", engineer.user.username)

    assert "2 token(s) revoked" in revoked
    assert client.get("/api/me", headers=engineer.headers).status_code == 401
    assert client.post("/api/worker/lease", json=LEASE, headers=bearer(worker)).status_code == 401
    password = revoked.split("password (shown once):")[1].split()[0]
    browser_login(client, engineer.user.username, password)


def test_an_annotator_cannot_own_a_worker_token_from_the_command_line(
    runner: CliRunner, client: TestClient, make_account: MakeAccount
) -> None:
    annotator: Account = make_account(Role.ANNOTATOR, token=False)
    refused = run(
        runner,
        "tokens",
        "create",
        "--user",
        annotator.user.username,
        "--name",
        "gpu",
        "--scope",
        "worker",
        code=1,
    )
    assert "worker tokens are for engineers and admins" in refused
    assert "no tokens" in run(runner, "tokens", "list", "--user", annotator.user.username)
