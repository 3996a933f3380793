"""Request bodies are bounded (size, time), an anonymous body is never read, and no slow client
holds the database: against a real server where the behaviour lives in the socket."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from app.db import ReadOnlyTransaction, create_db_engine, create_session_factory, transaction
from app.models import ApiToken, User
from tests.app.jobs.processes import Server, make_tokens
from tests.conftest import TEST_PASSWORD, MakeAccount, post_login

MAX_BODY = 64 * 1024


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[Server]:
    server = Server(
        db_url=db_url,
        data_dir=tmp_path / "data",
        extra_env={
            "THRESHER_MAX_BODY_BYTES": str(MAX_BODY),
            "THRESHER_BODY_IDLE_SECONDS": "1",
            "THRESHER_BODY_SECONDS": "4",
        },
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api_token(db_url: str) -> str:
    engine = create_db_engine(db_url)
    try:
        api, _ = make_tokens(create_session_factory(engine))
    finally:
        engine.dispose()
    return api


def raw_request(port: int, head: list[str], body: bytes = b"") -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(("\r\n".join([*head, "Host: 127.0.0.1"]) + "\r\n\r\n").encode() + body)
    return conn


def status_of(conn: socket.socket) -> int:
    reply = conn.recv(65536)
    return int(reply.split(b" ", 2)[1])


def test_an_anonymous_body_is_answered_401_without_being_read(server: Server) -> None:
    # 50 kB declared (under the limit), 1 KiB sent: a server that read the body first would
    # wait for the rest.
    head = ["POST /api/review/decisions HTTP/1.1", "Content-Type: application/json"]
    with raw_request(server.port, [*head, "Content-Length: 50000"], b"[" * 1024) as conn:
        assert status_of(conn) == 401


def test_a_declared_body_over_the_limit_is_413_before_it_is_read(server: Server) -> None:
    head = ["POST /api/review/decisions HTTP/1.1", f"Content-Length: {512 << 20}"]
    with raw_request(server.port, head) as conn:
        assert status_of(conn) == 413


def test_a_body_that_grows_over_the_limit_is_413(server: Server, api_token: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "' + b"x" * MAX_BODY
        yield b'"}'

    headers = {"Authorization": f"Bearer {api_token}", "Content-Type": "application/json"}
    response = httpx.post(f"{server.url}/api/tokens", content=chunks(), headers=headers)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_body_that_pauses_too_long_is_408(server: Server, api_token: str) -> None:
    head = [
        "POST /api/tokens HTTP/1.1",
        f"Authorization: Bearer {api_token}",
        "Content-Type: application/json",
        "Content-Length: 100",
    ]
    with raw_request(server.port, head, b'{"name": ') as conn:
        assert status_of(conn) == 408


def test_a_trickled_body_holds_up_no_one_and_times_out(server: Server, api_token: str) -> None:
    """The finding: a logout whose form body trickled in over 8 s held every other request for
    8 s. Now the body is read before any transaction, and a body slower than the limit ends."""
    with httpx.Client(base_url=server.url, timeout=10) as browser:
        post_login(browser, "eng", TEST_PASSWORD)
        cookie = browser.cookies["thresher_session"]
    head = [
        "POST /logout HTTP/1.1",
        f"Cookie: thresher_session={cookie}",
        "Content-Type: application/x-www-form-urlencoded",
        "Content-Length: 1000",
    ]
    trickle_done = threading.Event()
    trickle_status: list[int] = []

    def trickle() -> None:
        with raw_request(server.port, head, b"csrf_token=") as conn:
            try:
                for _ in range(40):  # a byte every 0.25 s: never idle, but too slow in all
                    conn.sendall(b"a")
                    time.sleep(0.25)
            except OSError:
                pass  # the server gave up on us: what we want
            trickle_status.append(status_of(conn))
        trickle_done.set()

    thread = threading.Thread(target=trickle)
    thread.start()
    time.sleep(0.5)
    headers = {"Authorization": f"Bearer {api_token}"}
    with httpx.Client(base_url=server.url, timeout=10, headers=headers) as api:
        assert api.get("/api/me").status_code == 200
        assert api.post("/api/tokens", json={"name": "while-trickling"}).status_code == 201
        assert not trickle_done.is_set(), "the other requests waited for the trickling body"
    thread.join(timeout=30)
    assert trickle_status == [408]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_reads_and_wrong_passwords_take_no_write_lock(
    client: TestClient, app: FastAPI, make_account: MakeAccount, db_url: str
) -> None:
    engineer = make_account()
    path = make_url(db_url).database
    assert path is not None
    writer = sqlite3.connect(path, isolation_level=None, timeout=0)
    writer.execute("BEGIN IMMEDIATE")  # someone else holds the write lock throughout
    try:
        assert client.get("/api/me", headers=engineer.headers).status_code == 200
        wrong = post_login(client, engineer.user.username, "not the password")
        assert wrong.status_code == 401
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_read_only_transaction_cannot_write(app: FastAPI, client: TestClient) -> None:
    factory = app.state.session_factory  # the client's lifespan closes the engine after
    with pytest.raises(ReadOnlyTransaction), transaction(factory, read_only=True) as session:
        session.add(User(username="sneaky", password_hash="x", role="annotator"))
        session.flush()
    with transaction(factory, read_only=True) as session:
        assert session.query(User).filter_by(username="sneaky").count() == 0


def test_a_read_records_the_tokens_last_use(
    client: TestClient, app: FastAPI, make_account: MakeAccount
) -> None:
    engineer = make_account()
    assert client.get("/api/me", headers=engineer.headers).status_code == 200
    with transaction(app.state.session_factory, read_only=True) as session:
        token = session.query(ApiToken).filter_by(user_id=engineer.user.id).one()
        assert token.last_used_at is not None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_crowd_of_writers_on_sqlite_does_not_jam_the_server(
    server: Server, api_token: str
) -> None:
    """The finding of the hostile-neighbours benchmark: with more writes in flight than the
    server has threads, each waited for SQLite's write lock on a thread, the writer holding it
    found none to finish on, and everything stopped until the 30 s busy timeout. Writers now
    wait their turn on the event loop. 120 at once must all get through, well inside that."""

    async def crowd() -> list[int]:
        headers = {"Authorization": f"Bearer {api_token}"}
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(
            base_url=server.url, headers=headers, timeout=20, limits=limits
        ) as http:
            replies = await asyncio.gather(
                *(http.post("/api/tokens", json={"name": f"crowd-{i}"}) for i in range(120))
            )
        return [reply.status_code for reply in replies]

    assert asyncio.run(crowd()) == [201] * 120
