"""Fixtures shared by every test: migrated databases on SQLite and PostgreSQL, the app, users.

Each test that asks for ``db_url`` runs twice, once per engine, on a fresh database copied from a
template migrated once per session (a file copy for SQLite, ``CREATE DATABASE … TEMPLATE`` for
PostgreSQL). Tests commit for real: the request commits, as in production.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.auth import service as auth_service
from app.datasets import grants
from app.db import create_db_engine, create_session_factory, transaction
from app.main import create_app
from app.migrate import upgrade
from app.models import Role, TokenScope, User
from app.settings import Settings, get_settings
from bench.harness.databases import (
    postgres_admin,
    postgres_reachable,
    postgres_url,
    throwaway_postgres,
)

PG_ADMIN_DSN = os.environ.get(
    "THRESHER_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"
TEST_PASSWORD = "correct horse battery"
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("THRESHER_LOG_FORMAT", "console")


# --- databases ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """The name of a migrated database that each test's PostgreSQL database is copied from."""
    if not postgres_reachable(PG_ADMIN_DSN):
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_DSN}")
    with throwaway_postgres("thresher_tpl", admin_dsn=PG_ADMIN_DSN) as url:
        yield url.rsplit("/", 1)[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated, empty database on each engine."""
    if request.param == "sqlite":
        path = tmp_path / "thresher.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("postgres_template")
    name = f"thresher_test_{uuid.uuid4().hex[:12]}"
    postgres_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"', PG_ADMIN_DSN)
    try:
        yield postgres_url(name, PG_ADMIN_DSN)
    finally:
        postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', PG_ADMIN_DSN)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return create_session_factory(engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for service tests; the test decides when to commit."""
    with session_factory() as session:
        yield session
        session.rollback()


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def runner(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """A CLI runner whose ``thresher`` commands use this test's database and a data folder in
    ``tmp_path`` (the environment they read, with the cached settings cleared around the test)."""
    monkeypatch.setenv("THRESHER_DATABASE_URL", db_url)
    monkeypatch.setenv("THRESHER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("THRESHER_SECRET_KEY", TEST_SECRET)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


# --- the app --------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        secret_key=TEST_SECRET,
        import_processes=2,
        import_roots=(tmp_path,),
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def add_user(session: Session, *, username: str, role: Role, every_dataset: bool = True) -> User:
    """A user signing in with :data:`TEST_PASSWORD`; annotators and engineers may see every
    dataset unless ``every_dataset`` is false."""
    user, _ = auth_service.create_user(
        session, username=username, role=role, password=TEST_PASSWORD
    )
    if every_dataset and role is not Role.ADMIN:
        grants.grant(session, user=user, dataset=None, by=None)
    return user


def worker_headers(app: FastAPI, owner: User, name: str = "gpu") -> dict[str, str]:
    """The headers of a new worker token owned by ``owner``, made directly in the database."""
    with transaction(app.state.session_factory) as session:
        user = session.merge(owner)
        _, secret = auth_service.create_token(
            session, user=user, name=name, scope=TokenScope.WORKER
        )
    return bearer(secret)


@dataclass
class Account:
    user: User
    password: str
    token: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        assert self.token, "this account has no API token"
        return bearer(self.token)


MakeAccount = Callable[..., Account]


@pytest.fixture
def make_account(app: FastAPI) -> MakeAccount:
    """Creates a user (and an API token for engineers and admins) directly in the database.
    Annotators and engineers may see every dataset unless ``every_dataset`` is false (the
    tests of dataset access make those)."""
    counter = iter(range(1_000_000))

    def make(
        role: Role = Role.ENGINEER,
        username: str | None = None,
        token: bool = True,
        every_dataset: bool = True,
    ) -> Account:
        username = username or f"{role.value}{next(counter)}"
        with transaction(app.state.session_factory) as session:
            user = add_user(session, username=username, role=role, every_dataset=every_dataset)
            secret = None
            if token and role.includes(Role.ENGINEER):
                _, secret = auth_service.create_token(
                    session, user=user, name="test", scope=TokenScope.API
                )
        return Account(user=user, password=TEST_PASSWORD, token=secret)

    return make


def post_login(client: TestClient | httpx.Client, username: str, password: str) -> httpx.Response:
    """Opens the login form and posts it, as a browser does; the answer, not followed."""
    page = client.get("/login")
    assert page.status_code == 200, page.text
    login_csrf = client.cookies.get("thresher_login_csrf")
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": login_csrf, "next": "/"},
        follow_redirects=False,
    )


def new_api_token(
    client: TestClient, headers: dict[str, str], *, name: str, scope: str = "api"
) -> dict[str, Any]:
    """Creates a token through ``POST /api/tokens`` as the caller of ``headers``; the answer's
    body (its ``id``, and the ``token`` shown this once)."""
    created = client.post("/api/tokens", json={"name": name, "scope": scope}, headers=headers)
    assert created.status_code == 201, created.text
    return dict(created.json())


def browser_login(client: TestClient, username: str, password: str = TEST_PASSWORD) -> str:
    """Signs in through the login form; returns the session's CSRF token for later writes."""
    response = post_login(client, username, password)
    assert response.status_code == 303, response.text
    with transaction(client.app.state.session_factory) as session:  # type: ignore[attr-defined]
        principal = auth_service.principal_from_session_cookie(
            session, client.cookies["thresher_session"]
        )
    assert principal is not None and principal.csrf_token
    return principal.csrf_token


@pytest.fixture
def shared_data() -> Path:
    """The real image data for tests; skips when it is not there."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"real test data not found at {DATA_DIR} (see the README's 'Test data')")
    return DATA_DIR
