"""The review API over HTTP: roles, CSRF, leases and decisions, errors the UI shows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.db import transaction
from app.models import ReviewDecision, ReviewTask, Role, TaskKind, utcnow
from app.review.service import decisions as decision_service
from app.review.service import leases as lease_service
from app.review.service import tasks as task_service
from tests.app.review.factories import Pets, make_pets
from tests.conftest import Account, MakeAccount, browser_login


@pytest.fixture
def pets(app: FastAPI, tmp_path: Path) -> Pets:
    with transaction(app.state.session_factory) as session:
        return make_pets(session, tmp_path / "pets", files=False)


@pytest.fixture
def engineer(make_account: MakeAccount) -> Account:
    return make_account(Role.ENGINEER, username="eve")


Login = Callable[[str], TestClient]


@pytest.fixture
def login(app: FastAPI, make_account: MakeAccount) -> Iterator[Login]:
    """Signs in a new annotator in a browser of their own: session cookie, CSRF header."""
    with ExitStack() as stack:

        def sign_in(name: str) -> TestClient:
            make_account(Role.ANNOTATOR, username=name, token=False)
            browser = stack.enter_context(TestClient(app))
            browser.headers["X-CSRF-Token"] = browser_login(browser, name)
            return browser

        yield sign_in


def queue_tasks(
    client: TestClient, engineer: Account, pets: Pets, kind: str, **body: Any
) -> dict[str, Any]:
    items = body.pop("items", None) or [{"sample_id": s} for s in pets.samples["cat"]]
    response = client.post(
        "/api/review/tasks",
        json={"dataset_id": pets.dataset_id, "kind": kind, "items": items, **body},
        headers=engineer.headers,
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def lease(client: TestClient, kind: str, n: int = 1, **body: Any) -> list[dict[str, Any]]:
    response = client.post("/api/review/leases", json={"kind": kind, "n": n, **body})
    assert response.status_code == 200, response.text
    return response.json()["tasks"]  # type: ignore[no-any-return]


def decision(task: dict[str, Any], verdict: str, key: str, **extra: Any) -> dict[str, Any]:
    return {
        "task_id": task["id"],
        "lease_version": task["lease_version"],
        "verdict": verdict,
        "idempotency_key": key,
        "seconds": 1.25,
        **extra,
    }


def count(app: FastAPI, model: type[ReviewTask] | type[ReviewDecision]) -> int:
    with transaction(app.state.session_factory) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_anonymous_calls_get_401(client: TestClient) -> None:
    assert client.post("/api/review/leases", json={"kind": "junk_check"}).status_code == 401


def test_only_engineers_create_tasks_and_read_stats(
    client: TestClient, login: Login, pets: Pets, engineer: Account
) -> None:
    ann = login("ann")
    body = {"dataset_id": pets.dataset_id, "kind": "junk_check", "items": [{"sample_id": 1}]}
    refused = ann.post("/api/review/tasks", json=body)
    assert refused.status_code == 403
    assert "engineer" in refused.json()["error"]["message"]
    assert ann.get("/api/review/stats").status_code == 403
    assert ann.post("/api/review/tasks/audit", json={"dataset_id": 1, "n": 1}).status_code == 403
    assert client.get("/api/review/stats", headers=engineer.headers).status_code == 200
    assert queue_tasks(client, engineer, pets, "junk_check")["created"] == 6


def test_annotator_leases_decides_and_undoes_with_the_session_cookie(
    app: FastAPI, client: TestClient, login: Login, pets: Pets, engineer: Account
) -> None:
    queue_tasks(client, engineer, pets, "label_check")
    ann = login("ann")
    [task] = lease(ann, "label_check", dataset_id=pets.dataset_id)
    assert task["given_class_id"] == pets.classes["cat"]
    relabel = decision(task, "relabel", "k1", class_id=pets.classes["dog"])
    decided = ann.post("/api/review/decisions", json={"decisions": [relabel]})
    assert decided.status_code == 200, decided.text
    [record] = decided.json()["decisions"]
    assert (record["verdict"], record["class_id"], record["seconds"]) == (
        "relabel",
        pets.classes["dog"],
        1.25,
    )
    undone = ann.post(
        "/api/review/undo", json={"decision_id": record["id"], "idempotency_key": "u1"}
    )
    assert undone.status_code == 200, undone.text
    assert undone.json()["decision"]["supersedes_id"] == record["id"]
    assert undone.json()["task"]["lease_version"] == task["lease_version"] + 1
    assert count(app, ReviewDecision) == 2


def test_an_api_client_gives_back_its_leases_and_a_browser_gets_a_short_one(
    app: FastAPI, client: TestClient, login: Login, pets: Pets, engineer: Account
) -> None:
    queue_tasks(client, engineer, pets, "junk_check")
    leased = client.post(
        "/api/review/leases", json={"kind": "junk_check", "n": 6}, headers=engineer.headers
    ).json()["tasks"]
    ids = [task["id"] for task in leased]
    released = client.post(
        "/api/review/leases/release", json={"task_ids": ids}, headers=engineer.headers
    )
    assert released.status_code == 200, released.text
    assert released.json() == {"released": sorted(ids)}
    ann = login("ann")
    taken = lease(ann, "junk_check", n=6)
    assert sorted(task["id"] for task in taken) == sorted(ids)
    seconds = app.state.settings.review_browser_lease_seconds
    with transaction(app.state.session_factory) as session:
        ends = session.scalars(select(ReviewTask.lease_expires_at)).all()
    assert all(seconds - 30 < (end - utcnow()).total_seconds() <= seconds for end in ends)
    too_many = ann.post("/api/review/leases/renew", json={"task_ids": list(range(1001))})
    assert too_many.status_code == 422


def test_cookie_writes_without_the_csrf_header_are_refused(
    app: FastAPI, client: TestClient, login: Login, pets: Pets, engineer: Account
) -> None:
    queue_tasks(client, engineer, pets, "junk_check")
    ann = login("ann")
    del ann.headers["X-CSRF-Token"]
    response = ann.post("/api/review/leases", json={"kind": "junk_check"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"


def test_a_retried_decision_gets_the_same_answer_and_is_recorded_once(
    app: FastAPI, client: TestClient, login: Login, pets: Pets, engineer: Account
) -> None:
    queue_tasks(client, engineer, pets, "junk_check")
    ann = login("ann")
    page = lease(ann, "junk_check", n=6)
    body = {"decisions": [decision(t, "not_junk", f"page-{t['id']}") for t in page]}
    first = ann.post("/api/review/decisions", json=body)
    again = ann.post("/api/review/decisions", json=body)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert count(app, ReviewDecision) == 6


def test_decision_on_a_lost_lease_answers_409_with_a_message_for_the_ui(
    app: FastAPI,
    client: TestClient,
    login: Login,
    make_account: MakeAccount,
    pets: Pets,
    engineer: Account,
) -> None:
    queue_tasks(client, engineer, pets, "junk_check", items=[{"sample_id": pets.all_samples[0]}])
    ann = login("ann")
    [task] = lease(ann, "junk_check")
    bob = make_account(Role.ANNOTATOR, username="bob", token=False)
    with transaction(app.state.session_factory) as session:  # ann's lease runs out; bob takes it
        lease_service.lease_tasks(
            session, user=bob.user, kind=TaskKind.JUNK_CHECK, now=utcnow() + timedelta(hours=1)
        )
    response = ann.post("/api/review/decisions", json={"decisions": [decision(task, "junk", "k")]})
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "lease_lost"
    assert "another annotator" in error["message"]
    assert error["details"]["task_ids"] == [task["id"]]
    assert count(app, ReviewDecision) == 0


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"verdict": "keep"}, 422, "invalid"),
        ({"verdict": "maybe"}, 422, "invalid"),
        ({"task_id": 999_999}, 404, "not_found"),
        ({"lease_version": "x"}, 422, "invalid"),
        ({"seconds": -3}, 422, "invalid"),
    ],
)
def test_bad_decisions_get_a_clear_4xx_and_nothing_is_written(
    app: FastAPI,
    client: TestClient,
    login: Login,
    pets: Pets,
    engineer: Account,
    change: dict[str, Any],
    status: int,
    code: str,
) -> None:
    queue_tasks(client, engineer, pets, "junk_check")
    ann = login("ann")
    [task] = lease(ann, "junk_check")
    body = {"decisions": [{**decision(task, "junk", "k"), **change}]}
    response = ann.post("/api/review/decisions", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert count(app, ReviewDecision) == 0


def test_empty_and_oversized_batches_are_refused(login: Login) -> None:
    ann = login("ann")
    assert ann.post("/api/review/decisions", json={"decisions": []}).status_code == 422
    many = [
        {"task_id": i, "lease_version": 1, "verdict": "junk", "idempotency_key": f"k{i}"}
        for i in range(decision_service.MAX_DECISIONS + 1)
    ]
    response = ann.post("/api/review/decisions", json={"decisions": many})
    assert response.status_code == 422
    assert f"at most {decision_service.MAX_DECISIONS}" in response.json()["error"]["message"]
    assert ann.post("/api/review/leases", json={"kind": "junk_check", "n": 0}).status_code == 422


def test_task_creation_refuses_bad_batches_and_writes_nothing(
    app: FastAPI, client: TestClient, pets: Pets, engineer: Account
) -> None:
    def post(body: dict[str, Any]) -> Any:
        return client.post(
            "/api/review/tasks",
            json={"dataset_id": pets.dataset_id, "kind": "junk_check", **body},
            headers=engineer.headers,
        )

    assert post({"items": []}).status_code == 422
    oversized = [{"sample_id": 1}] * (task_service.MAX_API_ITEMS + 1)
    assert "at most" in post({"items": oversized}).json()["error"]["message"]
    assert post({"items": [{"sample_id": 10**9}]}).status_code == 422
    assert post({"kind": "spam", "items": [{"sample_id": 1}]}).status_code == 422
    assert post({"dataset_id": 10**6, "items": [{"sample_id": 1}]}).status_code == 404
    assert count(app, ReviewTask) == 0


def test_audit_queues_a_seeded_random_sample(
    app: FastAPI, client: TestClient, pets: Pets, engineer: Account
) -> None:
    body = {"dataset_id": pets.dataset_id, "n": 5, "seed": 7}
    first = client.post("/api/review/tasks/audit", json=body, headers=engineer.headers).json()
    again = client.post("/api/review/tasks/audit", json=body, headers=engineer.headers).json()
    assert (first["created"], first["seed"], first["source"]) == (5, 7, "audit seed 7")
    assert (again["created"], again["skipped"]) == (0, 5)
    with transaction(app.state.session_factory) as session:
        kinds = session.scalars(select(ReviewTask.kind).distinct()).all()
    assert kinds == [TaskKind.JUNK_AUDIT]


def test_class_list_is_served_to_annotators_for_the_search(login: Login, pets: Pets) -> None:
    ann = login("ann")
    response = ann.get(f"/api/review/datasets/{pets.dataset_id}/classes")
    assert response.status_code == 200
    assert response.json()["classes"] == [
        [pets.classes["bird"], "bird"],
        [pets.classes["cat"], "cat"],
        [pets.classes["dog"], "dog"],
    ]
    assert "max-age" in response.headers["cache-control"]


def test_stats_second_opinions_and_sample_history_over_the_api(
    app: FastAPI, client: TestClient, login: Login, pets: Pets, engineer: Account
) -> None:
    queue_tasks(client, engineer, pets, "junk_check")
    ann = login("ann")
    bob = login("bob")
    page = lease(ann, "junk_check", n=6)
    body = {"decisions": [decision(t, "junk", f"a{t['id']}") for t in page]}
    assert ann.post("/api/review/decisions", json=body).status_code == 200
    asked = client.post(
        "/api/review/tasks/second-opinion",
        json={"dataset_id": pets.dataset_id, "kind": "junk_check", "fraction": 0.5, "seed": 1},
        headers=engineer.headers,
    )
    assert asked.json() == {"created": 3, "skipped": 0}
    assert lease(ann, "junk_check", n=6) == []  # never your own second opinion
    second = lease(bob, "junk_check", n=6)
    verdicts = ["junk", "junk", "not_junk"]
    body = {
        "decisions": [decision(t, v, f"b{t['id']}") for t, v in zip(second, verdicts, strict=True)]
    }
    assert bob.post("/api/review/decisions", json=body).status_code == 200

    stats = client.get(f"/api/review/stats?dataset_id={pets.dataset_id}", headers=engineer.headers)
    data = stats.json()
    assert data["queues"] == [
        {
            "dataset_id": pets.dataset_id,
            "dataset_name": "pets",
            "kind": "junk_check",
            "pending": 0,
            "leased": 0,
            "done": 9,
            "cancelled": 0,
        }
    ]
    assert data["agreement"] == [{"kind": "junk_check", "pairs": 3, "agreed": 2, "rate": 2 / 3}]
    assert {a["username"]: a["decisions"] for a in data["annotators"]} == {"ann": 6, "bob": 3}
    assert data["median_seconds"] == 1.25

    sample = client.get(f"/api/review/samples/{pets.samples['cat'][0]}", headers=engineer.headers)
    assert sample.json()["current"]["verdict"] in {"junk", "not_junk"}
    assert len(sample.json()["history"]) >= 1
