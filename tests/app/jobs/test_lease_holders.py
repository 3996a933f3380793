"""A job's lease belongs to the worker token that took it: another token, even one that knows
the fence, cannot write to the job; uploads are checked before their body is read, and a job's
artifacts are bounded by a quota."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.db import create_db_engine, create_session_factory
from app.jobs.config import JobSettings
from app.models import Role
from ml.core.protocol.messages import FENCE_HEADER, SHA256_HEADER
from tests.app.jobs.factories import chunk_bytes, create_predict_job
from tests.app.jobs.processes import Server, make_tokens
from tests.app.jobs.test_api import lease, put_results
from tests.conftest import Account, MakeAccount, worker_headers

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

QUOTA = 1000


@pytest.fixture
def app(app: FastAPI) -> FastAPI:
    app.state.job_settings = JobSettings(
        lease_seconds=30, retry_backoff_seconds=0, artifact_quota_bytes=QUOTA
    )
    return app


@pytest.fixture
def engineer(make_account: MakeAccount) -> Account:
    return make_account(Role.ENGINEER)


def put_artifact(
    client: TestClient, headers: dict[str, str], job_id: int, fence: object, data: bytes
) -> httpx.Response:
    return client.put(
        f"/api/worker/jobs/{job_id}/artifacts/model.safetensors",
        content=data,
        headers={
            **headers,
            FENCE_HEADER: str(fence),
            SHA256_HEADER: hashlib.sha256(data).hexdigest(),
        },
    )


def test_another_worker_token_cannot_write_to_a_leased_job_even_with_its_fence(
    app: FastAPI, client: TestClient, engineer: Account
) -> None:
    headers = engineer.headers
    holder = worker_headers(app, engineer.user, "holder")
    intruder = worker_headers(app, engineer.user, "intruder")
    job_id = create_predict_job(client, headers)
    fence = lease(client, holder)["fence"]
    base = f"/api/worker/jobs/{job_id}"

    writes = {
        "heartbeat": client.post(f"{base}/heartbeat", json={"fence": fence}, headers=intruder),
        "results": put_results(client, intruder, job_id, fence, 0, chunk_bytes([1, 2])),
        "artifact": put_artifact(client, intruder, job_id, fence, b"weights"),
        "complete": client.post(
            f"{base}/complete", json={"fence": fence, "chunks": 0, "rows": 0}, headers=intruder
        ),
        "fail": client.post(f"{base}/fail", json={"fence": fence, "error": "x"}, headers=intruder),
        "release": client.post(f"{base}/release", json={"fence": fence}, headers=intruder),
    }
    for what, response in writes.items():
        assert response.status_code == 409, (what, response.text)
    detail = client.get(f"/api/jobs/{job_id}", headers=headers).json()
    assert (detail["state"], detail["result_rows"], detail["artifacts"]) == ("leased", 0, [])
    # The holder's writes go on as before.
    assert (
        client.post(f"{base}/heartbeat", json={"fence": fence}, headers=holder).status_code == 200
    )
    stored = put_results(client, holder, job_id, fence, 0, chunk_bytes([1, 2, 3, 4, 5, 6]))
    assert stored.status_code == 200, stored.text


def test_artifacts_beyond_the_jobs_quota_are_refused(
    app: FastAPI, client: TestClient, engineer: Account
) -> None:
    headers = engineer.headers
    holder = worker_headers(app, engineer.user, "holder")
    job_id = create_predict_job(client, headers)
    fence = lease(client, holder)["fence"]

    first = put_artifact(client, holder, job_id, fence, b"a" * 600)
    assert first.status_code == 201, first.text
    # Replacing the same name counts only the new bytes.
    again = put_artifact(client, holder, job_id, fence, b"b" * 700)
    assert again.status_code == 201, again.text
    over = client.put(
        f"/api/worker/jobs/{job_id}/artifacts/config.json",
        content=b"c" * 400,
        headers={**holder, FENCE_HEADER: str(fence)},
    )
    assert over.status_code == 413, over.text
    assert over.json()["error"]["code"] == "quota_exceeded"
    names = [
        a["name"] for a in client.get(f"/api/jobs/{job_id}", headers=headers).json()["artifacts"]
    ]
    assert names == ["model.safetensors"]


def _raw_put_headers_only(port: int, path: str, headers: dict[str, str], length: int) -> bytes:
    """Sends a PUT's headers declaring ``length`` body bytes, and none of them; returns the
    reply. A server that read the body first would wait (and the socket would time out)."""
    lines = [f"PUT {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return conn.recv(65536)


def test_an_upload_on_a_lost_lease_is_refused_before_its_body_is_read(
    db_url: str, tmp_path: Path
) -> None:
    server = Server(db_url=db_url, data_dir=tmp_path / "data")
    engine = create_db_engine(db_url)
    api, worker = make_tokens(create_session_factory(engine))
    engine.dispose()
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            job_id = create_predict_job(http, {"Authorization": f"Bearer {api}"})
            grant = http.post(
                "/api/worker/lease",
                json={"worker": "w", "kinds": ["train_predict"], "device": "cpu"},
                headers={"Authorization": f"Bearer {worker}"},
            ).json()
        auth = {"Authorization": f"Bearer {worker}"}
        stale = {**auth, FENCE_HEADER: str(grant["fence"] + 1)}
        for path in (
            f"/api/worker/jobs/{job_id}/artifacts/model.safetensors",
            f"/api/worker/jobs/{job_id}/results/0",
        ):
            reply = _raw_put_headers_only(server.port, path, stale, 1 << 30)
            assert reply.startswith(b"HTTP/1.1 409"), reply[:200]
        # The held lease with a declared size over the quota: 413 before the body, too.
        held = {**auth, FENCE_HEADER: str(grant["fence"])}
        path = f"/api/worker/jobs/{job_id}/artifacts/model.safetensors"
        reply = _raw_put_headers_only(server.port, path, held, 1 << 40)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    finally:
        server.stop()
