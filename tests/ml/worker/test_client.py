"""The worker's HTTP client against a scripted transport: retries, give-ups, errors, downloads."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from ml.core.protocol.messages import Complete, LeaseRequest
from ml.worker.client import LeaseLost, Rejected, ServerClient, Unavailable

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, *, retry_for: float = 60.0) -> tuple[ServerClient, list[float]]:
    waits: list[float] = []
    made = ServerClient(
        "http://server",
        "thr_token",
        transport=httpx.MockTransport(handler),
        retry_for=retry_for,
        backoff_base=0.01,
        backoff_max=0.02,
        sleep=waits.append,
    )
    return made, waits


def scripted(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return handle, seen


def error(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": f"{code}!"}})


REQUEST = LeaseRequest(worker="w", kinds=["predict"], device="cpu")  # type: ignore[list-item]


def test_no_job_is_none_and_the_token_is_sent() -> None:
    handle, seen = scripted(httpx.Response(204))
    made, _ = client(handle)
    assert made.lease(REQUEST) is None
    assert seen[0].headers["authorization"] == "Bearer thr_token"


def test_writes_are_retried_through_a_server_restart() -> None:
    handle, seen = scripted(
        httpx.ConnectError("refused"),
        httpx.Response(503),
        httpx.ReadTimeout("slow"),
        httpx.Response(200, json={"state": "succeeded"}),
    )
    made, waits = client(handle)
    made.complete(7, Complete(fence=2))
    assert len(seen) == 4
    assert len(waits) == 3
    assert json.loads(seen[-1].content) == {"fence": 2, "chunks": 0, "rows": 0, "summary": {}}


def test_the_client_gives_up_when_the_budget_is_spent() -> None:
    handle, _ = scripted(*[httpx.ConnectError("refused")] * 100)
    made, _ = client(handle, retry_for=0.0)
    with pytest.raises(Unavailable, match="ConnectError"):
        made.complete(7, Complete(fence=2))


def test_a_lost_lease_is_not_retried() -> None:
    handle, seen = scripted(error(409, "lease_lost"))
    made, _ = client(handle)
    with pytest.raises(LeaseLost):
        made.upload_results(7, 1, 0, b"data")
    assert len(seen) == 1
    assert seen[0].headers["x-thresher-fence"] == "1"


def test_a_refused_request_is_not_retried() -> None:
    handle, seen = scripted(error(400, "malformed_upload"))
    made, _ = client(handle)
    with pytest.raises(Rejected) as caught:
        made.upload_results(7, 1, 0, b"data")
    assert (caught.value.status, caught.value.code) == (400, "malformed_upload")
    assert len(seen) == 1


def test_a_persistent_server_error_is_retried_only_a_few_times() -> None:
    handle, seen = scripted(*[httpx.Response(500)] * 10)
    made, _ = client(handle)
    with pytest.raises(Rejected):
        made.complete(7, Complete(fence=2))
    assert len(seen) == 4


def test_a_download_is_checked_against_its_hash(tmp_path: Path) -> None:
    body = b"manifest bytes"
    handle, _ = scripted(httpx.Response(200, content=body), httpx.Response(200, content=body))
    made, _ = client(handle)
    target = tmp_path / "m.thrb"
    with pytest.raises(Rejected, match="SHA-256"):
        made.download_manifest("0" * 64, target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    made.download_manifest(hashlib.sha256(body).hexdigest(), target)
    assert target.read_bytes() == body


def test_an_artifact_is_streamed_with_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"w" * 3_000_000)
    handle, seen = scripted(httpx.Response(201, json={}))
    made, _ = client(handle)
    digest = made.upload_artifact(3, 1, "model.safetensors", path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert seen[0].headers["x-thresher-sha256"] == digest
    assert seen[0].headers["content-length"] == "3000000"
