"""The ``thresher`` command: database, users and tokens, against both engines."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from app.auth import service as auth_service
from app.cli import cli
from app.db import create_session_factory, transaction
from app.errors import NotAuthenticated


def test_users_create_prints_a_generated_password_that_works(
    runner: CliRunner, engine: Engine
) -> None:
    result = runner.invoke(cli, ["users", "create", "alice", "--role", "engineer"])
    assert result.exit_code == 0, result.output
    password = result.output.split("password (shown once):")[1].split()[0]
    factory = create_session_factory(engine)
    user = auth_service.authenticate(factory, username="alice", password=password)
    assert user.role.value == "engineer"


def test_users_create_reads_password_from_stdin(runner: CliRunner, engine: Engine) -> None:
    result = runner.invoke(
        cli, ["users", "create", "bob", "--password-stdin"], input="a fine password\n"
    )
    assert result.exit_code == 0, result.output
    assert "shown once" not in result.output
    factory = create_session_factory(engine)
    auth_service.authenticate(factory, username="bob", password="a fine password")


def test_duplicate_user_is_a_clear_error(runner: CliRunner) -> None:
    assert runner.invoke(cli, ["users", "create", "carol"]).exit_code == 0
    result = runner.invoke(cli, ["users", "create", "carol"])
    assert result.exit_code == 1
    assert "already exists" in result.output


def test_tokens_create_prints_a_bearer_token_once(runner: CliRunner, engine: Engine) -> None:
    runner.invoke(cli, ["users", "create", "eve", "--role", "engineer"])
    result = runner.invoke(cli, ["tokens", "create", "--user", "eve", "--name", "gpu-box"])
    assert result.exit_code == 0, result.output
    secret = result.output.strip().splitlines()[-1]
    assert secret.startswith("thr_")
    with transaction(create_session_factory(engine)) as session:
        principal = auth_service.principal_from_bearer(session, secret)
        assert principal.user.username == "eve"


def test_annotators_cannot_get_api_tokens(runner: CliRunner) -> None:
    runner.invoke(cli, ["users", "create", "ann"])
    result = runner.invoke(cli, ["tokens", "create", "--user", "ann", "--name", "x"])
    assert result.exit_code == 1
    assert "engineers and admins" in result.output


def test_a_new_password_keeping_worker_tokens_revokes_only_api_tokens(
    runner: CliRunner, engine: Engine
) -> None:
    runner.invoke(cli, ["users", "create", "frank", "--role", "engineer"])
    tokens = {
        scope: runner.invoke(
            cli, ["tokens", "create", "--user", "frank", "--name", scope, "--scope", scope]
        )
        .output.strip()
        .splitlines()[-1]
        for scope in ("api", "worker")
    }

    result = runner.invoke(cli, ["users", "set-password", "frank", "--keep-worker-tokens"])

    assert result.exit_code == 0, result.output
    assert "1 token(s) revoked" in result.output
    with transaction(create_session_factory(engine)) as session:
        with pytest.raises(NotAuthenticated):
            auth_service.principal_from_bearer(session, tokens["api"])
        worker = auth_service.principal_from_bearer(session, tokens["worker"])
        assert worker.user.username == "frank"
