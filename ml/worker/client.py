"""The worker's HTTP client: the only module of ``ml`` that talks to the network.

Every call has explicit timeouts. Transient failures (connection refused or reset, timeouts,
502/503/504/429, a few 500s) are retried with exponential backoff and jitter until the call's
``retry_for`` budget is spent, so a worker rides out a server restart; every worker write is
idempotent on the server, so a retried write cannot count twice. A 409 ``lease_lost`` becomes
:class:`LeaseLost`; other 4xx answers become :class:`Rejected` at once (retrying cannot help).

Tests pass an ``httpx.MockTransport`` (or any transport) to run without a network.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from ml.core.protocol.jobs import ArtifactRef
from ml.core.protocol.messages import (
    FENCE_HEADER,
    PROTOCOL_VERSION,
    SHA256_HEADER,
    Complete,
    Fail,
    Heartbeat,
    HeartbeatReply,
    LeaseGrant,
    LeaseRequest,
    Release,
    ResultsStored,
)
from ml.logging import get_logger

__all__ = [
    "DEFAULT_TIMEOUT",
    "LeaseLost",
    "Rejected",
    "ServerClient",
    "ServerError",
    "Unavailable",
]

log = get_logger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=60.0, write=120.0, pool=10.0)
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_MAX_500_RETRIES = 3
_DOWNLOAD_BLOCK = 1 << 20


class ServerError(Exception):
    """A call to the server did not succeed."""


class Unavailable(ServerError):
    """The server could not be reached (or kept failing) for the whole retry budget."""


class Rejected(ServerError):
    """The server refused the call (4xx); ``status`` and ``code`` say why."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class LeaseLost(Rejected):
    """409: this worker's lease on the job is gone (expired and given to another worker, or the
    job ended); it must stop and write nothing more."""


class ServerClient:
    """Calls the worker endpoints of one server with one worker token.

    Args:
        base_url: e.g. ``http://server:8000``.
        token: a worker-scoped API token (``thresher tokens create --scope worker``).
        retry_for: default retry budget in seconds for calls that must get through
            (uploads, completion); heartbeats use a short one.
        backoff_base, backoff_max: the first retry's wait and the cap, in seconds.
        transport: an httpx transport, for tests.
        sleep: how to wait between retries (tests pass a fake).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retry_for: float = 900.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry_for = retry_for
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": f"thresher-worker/{PROTOCOL_VERSION}",
            },
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- the protocol ---------------------------------------------------------------------------

    def lease(self, request: LeaseRequest, *, retry_for: float = 0.0) -> LeaseGrant | None:
        """A job, or ``None`` (204: nothing to do now)."""
        response = self._call("POST", "/api/worker/lease", json=_json(request), retry_for=retry_for)
        if response.status_code == 204:
            return None
        return LeaseGrant.model_validate_json(response.content)

    def heartbeat(
        self, job_id: int, message: Heartbeat, *, retry_for: float = 0.0
    ) -> HeartbeatReply:
        response = self._call(
            "POST", f"/api/worker/jobs/{job_id}/heartbeat", json=_json(message), retry_for=retry_for
        )
        return HeartbeatReply.model_validate_json(response.content)

    def upload_results(self, job_id: int, fence: int, index: int, data: bytes) -> ResultsStored:
        response = self._call(
            "PUT",
            f"/api/worker/jobs/{job_id}/results/{index}",
            content=data,
            headers={FENCE_HEADER: str(fence), "Content-Type": "application/octet-stream"},
        )
        return ResultsStored.model_validate_json(response.content)

    def upload_artifact(self, job_id: int, fence: int, name: str, path: Path) -> str:
        """Streams a file to the job's artifacts; returns its SHA-256 (checked by the server)."""
        digest = _sha256_of(path)
        size = path.stat().st_size

        def send() -> httpx.Response:
            with path.open("rb") as handle:
                return self._http.put(
                    f"/api/worker/jobs/{job_id}/artifacts/{name}",
                    content=_file_chunks(handle),
                    headers={
                        FENCE_HEADER: str(fence),
                        SHA256_HEADER: digest,
                        "Content-Length": str(size),
                        "Content-Type": "application/octet-stream",
                    },
                )

        self._retrying(f"PUT artifact {name}", send, self.retry_for)
        return digest

    def complete(self, job_id: int, message: Complete) -> None:
        self._call("POST", f"/api/worker/jobs/{job_id}/complete", json=_json(message))

    def fail(self, job_id: int, message: Fail) -> None:
        self._call("POST", f"/api/worker/jobs/{job_id}/fail", json=_json(message))

    def release(self, job_id: int, message: Release, *, retry_for: float | None = None) -> None:
        self._call(
            "POST", f"/api/worker/jobs/{job_id}/release", json=_json(message), retry_for=retry_for
        )

    def download_manifest(self, sha256: str, dest: Path) -> Path:
        return self._download(f"/api/worker/manifests/{sha256}", dest, sha256)

    def download_artifact(self, artifact: ArtifactRef, dest: Path) -> Path:
        return self._download(f"/api/worker/artifacts/{artifact.id}", dest, artifact.sha256)

    def download_sample(self, sample_id: int, sha256: str, dest: Path) -> Path:
        """A sample's image file, for a worker that cannot see the dataset's directory."""
        return self._download(f"/api/worker/samples/{sample_id}/original", dest, sha256)

    # --- plumbing -------------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, *, retry_for: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        budget = self.retry_for if retry_for is None else retry_for
        return self._retrying(
            f"{method} {path}", lambda: self._http.request(method, path, **kwargs), budget
        )

    def _retrying(
        self, what: str, send: Callable[[], httpx.Response], budget: float
    ) -> httpx.Response:
        deadline = time.monotonic() + budget
        attempt = 0
        server_errors = 0
        while True:
            try:
                response = send()
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if response.status_code < 400:
                    return response
                retriable = response.status_code in _RETRY_STATUSES
                if response.status_code == 500:
                    server_errors += 1
                    retriable = server_errors <= _MAX_500_RETRIES
                if not retriable:
                    raise _rejection(response)
                problem = f"HTTP {response.status_code}"
            wait = min(self.backoff_max, self.backoff_base * 2**attempt) * random.uniform(0.5, 1.0)
            if time.monotonic() + wait > deadline:
                raise Unavailable(f"{what}: {problem} (gave up after {attempt + 1} tries)")
            log.warning(
                "worker.http.retry",
                call=what,
                problem=problem,
                attempt=attempt + 1,
                wait=round(wait, 1),
            )
            self._sleep(wait)
            attempt += 1

    def _download(self, path: str, dest: Path, sha256: str) -> Path:
        """Streams ``path`` to ``dest`` (atomically), checking its SHA-256."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        temporary = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")

        def fetch() -> httpx.Response:
            with self._http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    return response
                digest = hashlib.sha256()
                with temporary.open("wb") as handle:
                    for block in response.iter_bytes(_DOWNLOAD_BLOCK):
                        digest.update(block)
                        handle.write(block)
                if digest.hexdigest() != sha256:
                    temporary.unlink(missing_ok=True)
                    raise Rejected(
                        response.status_code,
                        "checksum_mismatch",
                        f"{path} has SHA-256 {digest.hexdigest()}, expected {sha256}",
                    )
                return response

        try:
            self._retrying(f"GET {path}", fetch, self.retry_for)
            temporary.replace(dest)
        finally:
            temporary.unlink(missing_ok=True)
        return dest


def _json(message: Any) -> Any:
    return message.model_dump(mode="json")


def _rejection(response: httpx.Response) -> Rejected:
    code, message = "http_error", response.text[:500]
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        code = str(body["error"].get("code", code))
        message = str(body["error"].get("message", message))
    if response.status_code == 409 and code == "lease_lost":
        return LeaseLost(response.status_code, code, message)
    return Rejected(response.status_code, code, message)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_DOWNLOAD_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_chunks(handle: Any) -> Any:
    while block := handle.read(_DOWNLOAD_BLOCK):
        yield block
