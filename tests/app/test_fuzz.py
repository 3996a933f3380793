"""Property-based fuzzing of the whole HTTP API from its OpenAPI spec: whatever a caller sends,
the answer is never a 5xx, it carries the security headers, and an error has the app's one shape
(``{"error": {"code": …, "message": …}}``).

Every operation in ``/openapi.json`` is called in-process (ASGI) against a real database seeded
with a small imported dataset, a job leased to a worker and the dataset's pipeline, so ids can
exist. Three callers: an admin with an API token (requests get past authentication), a worker
token (the worker protocol) and an anonymous caller. Three sweeps:

* generated requests (schemathesis strategies under Hypothesis), both ones that fit the spec and
  ones that do not (wrong types, missing and extra fields, out-of-range values);
* hostile values, one at a time among the seeded ids: numbers no database column holds (2**63,
  2**64, negative), NUL bytes, unicode, overlong strings and wrong types in every parameter and
  top-level body field; bodies that are missing, empty, not JSON, the wrong JSON type or sent as
  another content type;
* random bytes to the routes that stream their body (manifests, results, artifacts), which the
  spec declares without one.

Bounded and reproducible: ``MAX_EXAMPLES`` per operation and mode, derandomized, no example
database and no shrinking (a failure names its request as a curl command); about a minute and a
half on two cores. Pages (HTML forms) are not in the spec. No operation is left out: imports
read only inside the import roots (here the test's own folder), so fuzzing them is quick.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import strategies as st
from schemathesis.python import asgi

from app.models import Role
from app.security_headers import SECURITY_HEADERS
from ml.core.protocol.messages import FENCE_HEADER, SHA256_HEADER
from tests.app.datasets.files import image_bytes, write
from tests.app.jobs.factories import create_predict_job, synthetic_manifest, upload_manifest
from tests.conftest import MakeAccount, worker_headers

Operation: TypeAlias = schemathesis.APIOperation[Any, Any, Any, Any]
Case: TypeAlias = schemathesis.Case[Any]

#: Examples per operation and mode; THRESHER_FUZZ_EXAMPLES raises it for a deeper local run.
MAX_EXAMPLES = int(os.environ.get("THRESHER_FUZZ_EXAMPLES", "20"))
#: Examples for a caller the operation refuses (401/403 before anything is parsed).
REFUSED_EXAMPLES = 5
WAIT_SECONDS = 120
SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    suppress_health_check=list(hypothesis.HealthCheck),
    verbosity=hypothesis.Verbosity.quiet,
)
HOSTILE_NUMBERS = [2**63, 2**64, -(2**63) - 1, -1, 0]
HOSTILE_STRINGS = ["\x00", "a\x00b", "ü\U0001f600\u202e", "x" * 20_000, "1e999", "-0", " "]
HOSTILE_VALUES: list[Any] = [*HOSTILE_NUMBERS, *HOSTILE_STRINGS, None, [], {}, True, 1.5]
HOSTILE_BODIES: list[tuple[bytes | None, str | None]] = [
    (None, None),  # no body at all
    (b"", "application/json"),
    (b"{", "application/json"),
    (b"null", "application/json"),
    (b"[]", "application/json"),
    (b'"x"', "application/json"),
    (b"1e999", "application/json"),
    (b'{"a": "\\u0000"}', "application/json"),
    (b"\xff\xfe\x00", "application/json"),
    (b"name=x", "application/x-www-form-urlencoded"),
    (b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=b"),
    (b"{}", "text/plain"),
]
#: Routes that read their body as a stream of bytes, and the caller each is for.
STREAMED = {
    ("POST", "/api/jobs/manifests"): "admin",
    ("PUT", "/api/worker/jobs/{job_id}/results/{chunk}"): "worker",
    ("PUT", "/api/worker/jobs/{job_id}/artifacts/{name}"): "worker",
}


@dataclass
class Seed:
    """What the seed created: each caller's headers, and ids that exist. The admin's fuzzing can
    revoke credentials (its own included), so :meth:`restore` makes new ones when they fail."""

    app: FastAPI
    make_account: MakeAccount
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    ids: dict[str, Any] = field(default_factory=dict)

    def new_admin(self) -> None:
        self.headers["admin"] = self.make_account(Role.ADMIN).headers

    def new_worker(self) -> None:
        owner = self.make_account(Role.ENGINEER, token=False)
        self.headers["worker"] = worker_headers(self.app, owner.user)

    def restore(self, api: schemathesis.BaseSchema) -> None:
        me = api["/api/me"]["GET"].Case().call(headers=self.headers["admin"])
        if me.status_code != 200:
            self.new_admin()
        manifest = api["/api/worker/manifests/{sha256}"]["GET"]
        fetched = manifest.Case(path_parameters={"sha256": self.ids["sha256"]}).call(
            headers=self.headers["worker"]
        )
        if fetched.status_code != 200:
            self.new_worker()


def seed(app: FastAPI, make_account: MakeAccount, root: Path) -> Seed:
    """A dataset imported from a folder of four images (one empty, so the import report has an
    issue), a manifest, a job leased to the worker, the dataset's pipeline, and a user with a
    token for the admin's writes to aim at."""
    made = Seed(app=app, make_account=make_account, headers={"anonymous": {}})
    made.new_admin()
    made.new_worker()
    admin, worker = made.headers["admin"], made.headers["worker"]
    other = make_account(Role.ENGINEER)
    for index, rel in enumerate(["cat/a.jpg", "cat/b.jpg", "dog/c.jpg"]):
        write(root / rel, image_bytes("JPEG", seed=index))
    write(root / "dog" / "empty.jpg", b"")

    client = TestClient(app)  # no `with`: the app's lifespan is run once, by the fuzzer's client
    created = client.post("/api/datasets", json={"name": "pets", "path": str(root)}, headers=admin)
    assert created.status_code == 202, created.text
    dataset_id = created.json()["dataset"]["id"]
    import_id = created.json()["import_run"]["id"]
    deadline = time.monotonic() + WAIT_SECONDS
    while client.get(f"/api/imports/{import_id}", headers=admin).json()["status"] == "running":
        assert time.monotonic() < deadline, "the seed import did not finish"
        time.sleep(0.05)
    samples = client.get(f"/api/datasets/{dataset_id}/samples", headers=admin).json()
    classes = client.get(f"/api/datasets/{dataset_id}/classes", headers=admin).json()

    sha = upload_manifest(client, admin, synthetic_manifest(4))
    create_predict_job(client, admin, sha=sha)
    lease = {"worker": "w1", "kinds": ["train_predict"], "device": "cpu"}
    grant = client.post("/api/worker/lease", json=lease, headers=worker)
    assert grant.status_code == 200, grant.text
    pipeline = client.post(f"/api/pipelines/{dataset_id}", json={}, headers=admin)
    assert pipeline.status_code in (200, 201), pipeline.text
    tokens = client.get("/api/tokens", headers=other.headers).json()
    made.ids.update(
        dataset_id=dataset_id,
        import_id=import_id,
        sample_id=_first_id(samples),
        class_id=_first_id(classes),
        job_id=grant.json()["job_id"],
        fence=grant.json()["fence"],
        user_id=other.user.id,
        username=other.user.username,
        token_id=_first_id(tokens),
        sha256=sha,
        chunk=0,
        size=128,
        name="model.safetensors",
        **{FENCE_HEADER: grant.json()["fence"], SHA256_HEADER: "0" * 64},
    )
    return made


def _first_id(listing: Any) -> int:
    items = listing if isinstance(listing, list) else next(iter(listing.values()))
    return int(items[0]["id"])


@pytest.fixture
def seeded(app: FastAPI, make_account: MakeAccount, tmp_path: Path) -> Seed:
    return seed(app, make_account, tmp_path / "images")


@pytest.fixture
def api(app: FastAPI, seeded: Seed) -> Iterator[schemathesis.BaseSchema]:
    """The app's spec, loaded through schemathesis' ASGI client (which starts the lifespan)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    yield schema
    asgi.shutdown_lifespans()


def operations(schema: schemathesis.BaseSchema) -> list[Operation]:
    found = [schema[path][method] for path in schema for method in schema[path]]
    assert len(found) > 50, "the spec lost its operations"
    return found


def caller_for(operation: Operation) -> str:
    """The caller an operation is for; the others are refused before anything is parsed."""
    return "worker" if operation.path.startswith("/api/worker/") else "admin"


def check(case: Case, headers: dict[str, str]) -> None:
    """Sends ``case``: the answer must be under 500 and carry the security headers."""
    try:
        response = case.call(headers=headers)
    except Exception as exc:  # an app error escapes as itself: what a client sees as a 500
        raise AssertionError(f"{exc!r} from {case.as_curl_command()}") from exc
    assert response.status_code < 500, f"{response.status_code} from {case.as_curl_command()}"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name.lower()) == [value], f"no {name}: {case.as_curl_command()}"
    if response.status_code >= 400:
        error = response.json().get("error") if _is_json(response) else None
        assert isinstance(error, dict) and error.get("code") and error.get("message"), (
            f"{response.status_code} without the error shape: {response.content[:300]!r} "
            f"from {case.as_curl_command()}"
        )


def _is_json(response: schemathesis.Response) -> bool:
    return "application/json" in (response.headers.get("content-type") or [""])[0]


def collect(failures: list[str], label: str, run: Callable[[], None]) -> None:
    """Runs one operation's checks, recording a failure instead of stopping the sweep."""
    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        pass  # nothing to generate: a negative request for an operation without parameters
    except Exception as exc:
        failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:2000]}")


# The generated sweep is the long one (about a minute): SQLite only. The other two, where the
# engines differ (what each refuses to store), run on both.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("caller", ["admin", "worker", "anonymous"])
def test_generated_requests_never_fail_the_server(
    api: schemathesis.BaseSchema, seeded: Seed, caller: str
) -> None:
    failures: list[str] = []
    for operation in operations(api):
        examples = MAX_EXAMPLES if caller == caller_for(operation) else REFUSED_EXAMPLES
        for mode in schemathesis.GenerationMode:

            @hypothesis.settings(SETTINGS, max_examples=examples)
            @hypothesis.given(case=operation.as_strategy(mode))
            def run(case: Case) -> None:
                check(case, seeded.headers[caller])

            collect(failures, f"{operation.label} ({mode})", run)
            seeded.restore(api)
    assert not failures, "\n".join(failures)


def test_hostile_values_never_fail_the_server(api: schemathesis.BaseSchema, seeded: Seed) -> None:
    failures: list[str] = []
    for operation in operations(api):
        caller = caller_for(operation)
        for case in hostile_cases(operation, seeded.ids):

            def run(case: Case = case, caller: str = caller) -> None:
                check(case, seeded.headers[caller])

            collect(failures, operation.label, run)
        seeded.restore(api)
    assert not failures, "\n".join(failures)


def hostile_cases(operation: Operation, ids: dict[str, Any]) -> Iterator[Case]:
    """Seeded ids everywhere but one hostile value at a time: in each parameter, in each
    top-level field of a simple valid body, or as the whole body."""
    path = {p.name: str(ids.get(p.name, 1)) for p in operation.path_parameters}
    query = {p.name: ids[p.name] for p in operation.query if p.name in ids}
    headers = {p.name: str(ids[p.name]) for p in operation.headers if p.name in ids}
    simple = _simple_body(operation)
    if isinstance(simple, dict):
        simple = {name: ids.get(name, value) for name, value in simple.items()}

    def case(body: Any = simple, media_type: str = "application/json", **changes: Any) -> Case:
        fields: dict[str, Any] = {"path_parameters": path, "query": query, "headers": headers}
        fields.update(changes)
        if body is not None:  # None: no body at all
            fields.update(body=body, media_type=media_type)
        return operation.Case(**fields)

    for value in HOSTILE_VALUES:
        yield from _one_place_at_a_time(value, operation, case, path, query, headers, simple)
    if operation.body or (operation.method.upper(), operation.path) in STREAMED:
        for raw, content_type in HOSTILE_BODIES:
            sent = {**headers, "Content-Type": content_type} if content_type else headers
            yield case(body=raw, media_type="application/octet-stream", headers=sent)


def _one_place_at_a_time(
    value: Any,
    operation: Operation,
    case: Callable[..., Case],
    path: dict[str, str],
    query: dict[str, Any],
    headers: dict[str, str],
    body: Any,
) -> Iterator[Case]:
    """``value`` in each parameter, then in each top-level field of ``body``, the rest valid."""
    for name in path:
        if (text := _as_text(value, "path")) is not None:
            yield case(path_parameters={**path, name: text})
    for p in operation.query:
        yield case(query={**query, p.name: value})
    for name in headers:
        if (text := _as_text(value, "header")) is not None:
            yield case(headers={**headers, name: text})
    if isinstance(body, dict):
        for name in body:
            yield case(body={**body, name: value})


def _as_text(value: Any, location: str) -> str | None:
    """``value`` as text in a path segment or a header, or None where it cannot travel (an
    empty segment; a header value no HTTP client sends: not ASCII, or with control characters)."""
    if value is None or value == [] or value == {}:
        return None
    text = str(value)
    if location == "header":
        printable = text.isascii() and text.isprintable() and text == text.strip()
        return text if printable else None
    return text.replace("/", "%2F")


def _simple_body(operation: Operation) -> Any:
    """A simple body the spec accepts (Hypothesis' first, simplest example), or None."""
    if not operation.body or "json" not in operation.body[0].media_type:
        return None
    bodies = []

    @hypothesis.settings(SETTINGS, max_examples=1)
    @hypothesis.given(case=operation.as_strategy(schemathesis.GenerationMode.POSITIVE))
    def first(case: Case) -> None:
        bodies.append(case.body)

    first()
    return bodies[0]


@pytest.mark.parametrize("route", sorted(STREAMED), ids=lambda route: _last_word(route[1]))
def test_random_bytes_to_streamed_routes_never_fail_the_server(
    api: schemathesis.BaseSchema, seeded: Seed, route: tuple[str, str]
) -> None:
    method, path = route
    operation = api[path][method]
    params = {p.name: seeded.ids[p.name] for p in operation.path_parameters}
    headers = {p.name: str(seeded.ids[p.name]) for p in operation.headers}

    @SETTINGS
    @hypothesis.given(data=st.binary(max_size=4096))
    def run(data: bytes) -> None:
        case = operation.Case(
            path_parameters=params,
            headers=headers,
            body=data,
            media_type="application/octet-stream",
        )
        check(case, seeded.headers[STREAMED[route]])

    run()


def _last_word(path: str) -> str:
    return [part for part in path.split("/") if not part.startswith("{")][-1]
