"""The datasets API on both engines: 202 and polling, reports, and every refusal."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.datasets import service
from app.db import transaction
from app.models import Role
from tests.app.datasets.files import image_bytes, write, write_csv
from tests.conftest import Account, MakeAccount, browser_login

#: How long a small import may take before the test gives up waiting (not a performance bound).
WAIT_SECONDS = 120


@pytest.fixture
def engineer(make_account: MakeAccount) -> Account:
    return make_account(Role.ENGINEER)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for index, rel in enumerate(["cat/a.jpg", "cat/b.jpg", "dog/c.jpg"]):
        write(root / rel, image_bytes("JPEG", seed=index))
    write(root / "dog" / "a-again.jpg", (root / "cat" / "a.jpg").read_bytes())
    write(root / "dog" / "empty.jpg", b"")
    return root


def wait_until_done(client: TestClient, account: Account, import_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        response = client.get(f"/api/imports/{import_id}", headers=account.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["processed"] <= body["total"] or body["total"] == 0
        if body["status"] != "running":
            return body
        time.sleep(0.05)
    raise AssertionError(f"import {import_id} still running after {WAIT_SECONDS} s")


def create(client: TestClient, account: Account, **body: Any) -> dict[str, Any]:
    response = client.post("/api/datasets", json=body, headers=account.headers)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def test_import_is_accepted_then_followed_to_its_report(
    client: TestClient, engineer: Account, folder: Path
) -> None:
    accepted = create(client, engineer, name="pets", path=str(folder))
    assert accepted["dataset"]["name"] == "pets"
    assert accepted["dataset"]["source_format"] == "imagefolder"
    assert accepted["import_run"]["status"] == "running"
    run = wait_until_done(client, engineer, accepted["import_run"]["id"])
    assert run["status"] == "succeeded"
    assert (run["total"], run["processed"], run["added"], run["issues"]) == (5, 5, 5, 1)
    report = client.get(f"/api/imports/{run['id']}/report", headers=engineer.headers).json()
    assert report["by_reason"] == [{"reason": "empty_file", "count": 1}]
    assert [(i["path"], i["reason"]) for i in report["issues"]] == [("dog/empty.jpg", "empty_file")]
    [conflict] = report["conflicts"]
    assert [(m["path"], m["class_name"]) for m in conflict["samples"]] == [
        ("cat/a.jpg", "cat"),
        ("dog/a-again.jpg", "dog"),
    ]


def test_dataset_overview_classes_and_samples(
    client: TestClient, engineer: Account, folder: Path
) -> None:
    accepted = create(client, engineer, name="pets", path=str(folder))
    wait_until_done(client, engineer, accepted["import_run"]["id"])
    dataset_id = accepted["dataset"]["id"]

    overview = client.get(f"/api/datasets/{dataset_id}", headers=engineer.headers).json()
    assert (overview["total_samples"], overview["usable_samples"]) == (5, 4)
    assert (overview["duplicate_samples"], overview["conflict_groups"]) == (1, 1)
    assert overview["modes"] == [{"mode": "RGB", "channels": 3, "count": 4}]
    assert [(c["name"], c["count"]) for c in overview["classes"]] == [("cat", 2), ("dog", 2)]

    classes = client.get(f"/api/datasets/{dataset_id}/classes", headers=engineer.headers).json()
    dog = next(c for c in classes if c["name"] == "dog")
    page = client.get(
        f"/api/datasets/{dataset_id}/samples",
        params={"class_id": dog["id"], "limit": 2},
        headers=engineer.headers,
    ).json()
    assert [s["path"] for s in page["samples"]] == ["dog/a-again.jpg", "dog/c.jpg"]
    more = client.get(
        f"/api/datasets/{dataset_id}/samples",
        params={"class_id": dog["id"], "after_id": page["next_after_id"]},
        headers=engineer.headers,
    ).json()
    assert [(s["path"], s["error"]) for s in more["samples"]] == [("dog/empty.jpg", "empty_file")]
    assert more["next_after_id"] is None

    listed = client.get("/api/datasets", headers=engineer.headers).json()
    assert [(d["dataset"]["name"], d["usable_samples"], d["class_count"]) for d in listed] == [
        ("pets", 4, 2)
    ]


def test_reimport_is_accepted_and_counts_what_changed(
    client: TestClient, engineer: Account, folder: Path
) -> None:
    accepted = create(client, engineer, name="pets", path=str(folder))
    wait_until_done(client, engineer, accepted["import_run"]["id"])
    write(folder / "dog" / "new.jpg", image_bytes("JPEG", seed=77))
    response = client.post(
        f"/api/datasets/{accepted['dataset']['id']}/imports", headers=engineer.headers
    )
    assert response.status_code == 202, response.text
    run = wait_until_done(client, engineer, response.json()["import_run"]["id"])
    assert (run["added"], run["changed"], run["unchanged"], run["missing"]) == (1, 0, 5, 0)


def test_report_filters_by_reason_and_pages(
    client: TestClient, engineer: Account, tmp_path: Path
) -> None:
    for index in range(3):
        write(tmp_path / "src" / "cat" / f"empty{index}.jpg", b"")
    write(tmp_path / "src" / "loose.jpg", b"")
    accepted = create(client, engineer, name="bad", path=str(tmp_path / "src"))
    run = wait_until_done(client, engineer, accepted["import_run"]["id"])
    report = client.get(
        f"/api/imports/{run['id']}/report",
        params={"reason": "empty_file", "limit": 2, "offset": 1},
        headers=engineer.headers,
    ).json()
    assert report["total_issues"] == 3
    assert [i["path"] for i in report["issues"]] == ["cat/empty1.jpg", "cat/empty2.jpg"]
    bad_reason = client.get(
        f"/api/imports/{run['id']}/report", params={"reason": "nope"}, headers=engineer.headers
    )
    assert bad_reason.status_code == 422


def test_cookie_session_import_needs_the_csrf_token(
    client: TestClient, make_account: MakeAccount, folder: Path
) -> None:
    engineer = make_account(Role.ENGINEER, token=False)
    csrf = browser_login(client, engineer.user.username)
    body = {"name": "pets", "path": str(folder)}
    assert client.post("/api/datasets", json=body).status_code == 403
    response = client.post("/api/datasets", json=body, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 202


# --- refusals ---------------------------------------------------------------------------------


def test_anonymous_calls_get_401(client: TestClient, folder: Path) -> None:
    assert client.get("/api/datasets").status_code == 401
    assert client.post("/api/datasets", json={"name": "x", "path": str(folder)}).status_code == 401
    assert client.get("/api/imports/1").status_code == 401


def test_annotators_get_403(client: TestClient, make_account: MakeAccount, folder: Path) -> None:
    annotator = make_account(Role.ANNOTATOR, token=False)
    csrf = browser_login(client, annotator.user.username)
    assert client.get("/api/datasets").status_code == 403
    response = client.post(
        "/api/datasets", json={"name": "x", "path": str(folder)}, headers={"X-CSRF-Token": csrf}
    )
    assert response.status_code == 403


UNKNOWN_IDS = (
    ("GET", "/api/datasets/999"),
    ("GET", "/api/datasets/999/classes"),
    ("GET", "/api/datasets/999/samples"),
    ("POST", "/api/datasets/999/imports"),
    ("GET", "/api/imports/999"),
    ("GET", "/api/imports/999/report"),
)


def test_unknown_ids_get_404(client: TestClient, engineer: Account) -> None:
    for method, url in UNKNOWN_IDS:
        response = client.request(method, url, headers=engineer.headers)
        assert response.status_code == 404, (method, url)
        assert response.json()["error"]["code"] == "not_found"


def test_import_while_one_is_running_gets_409(
    client: TestClient, app: FastAPI, engineer: Account, folder: Path
) -> None:
    with transaction(app.state.session_factory) as session:
        started = service.start_import(session, name="pets", path=str(folder))
    response = client.post(f"/api/datasets/{started.dataset.id}/imports", headers=engineer.headers)
    assert response.status_code == 409
    assert response.json()["error"]["details"] == {"import_id": started.run.id}
    again = client.post(
        "/api/datasets", json={"name": "pets", "path": str(folder)}, headers=engineer.headers
    )
    assert again.status_code == 409


def test_same_name_with_another_source_gets_409(
    client: TestClient, engineer: Account, folder: Path, tmp_path: Path
) -> None:
    accepted = create(client, engineer, name="pets", path=str(folder))
    wait_until_done(client, engineer, accepted["import_run"]["id"])
    (tmp_path / "other").mkdir()
    response = client.post(
        "/api/datasets",
        json={"name": "pets", "path": str(tmp_path / "other")},
        headers=engineer.headers,
    )
    assert response.status_code == 409
    assert "another name" in response.json()["error"]["message"]


#: Sources the server must refuse, and the field its 422 names ({folder} is a real ImageFolder).
BAD_SOURCES = (
    ({"path": "/no/such/folder"}, "path"),
    ({"path": "{folder}/cat/a.jpg", "format": "imagefolder"}, "path"),
    ({"path": "{folder}", "format": "csv"}, "path"),
    ({"path": "{folder}/cat/a.jpg"}, "format"),
    ({"path": "{folder}/labels.csv", "root": "/no/such/root"}, "root"),
    ({"path": "{folder}", "root": "{folder}"}, "root"),
    ({"path": "{folder}", "classes": "/no/such/classes.txt"}, "classes"),
)


def test_bad_source_gets_422_naming_the_field(
    client: TestClient, engineer: Account, folder: Path
) -> None:
    write_csv(folder / "labels.csv", [["cat/a.jpg", "cat"]])
    for body, field in BAD_SOURCES:
        filled = {key: value.replace("{folder}", str(folder)) for key, value in body.items()}
        response = client.post(
            "/api/datasets", json={"name": "x", **filled}, headers=engineer.headers
        )
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["details"] == {"field": field}, body
    assert client.get("/api/datasets", headers=engineer.headers).json() == []


MALFORMED_BODIES = (
    ({"name": "x", "path": "/tmp", "format": "parquet"}, "body.format"),
    ({"name": "", "path": "/tmp"}, "body.name"),
    ({"name": "x"}, "body.path"),
)


def test_malformed_body_gets_422_naming_the_field(client: TestClient, engineer: Account) -> None:
    for body, field in MALFORMED_BODIES:
        response = client.post("/api/datasets", json=body, headers=engineer.headers)
        assert response.status_code == 422, body
        assert response.json()["error"]["details"][0]["field"] == field, body
