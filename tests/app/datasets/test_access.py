"""The finding: any annotator, or any worker token, could fetch every dataset's originals by id.
Now admins grant annotators and engineers datasets; queues, classes, media and the engineer API
answer 404 for the rest; a worker token sees only the images of datasets whose jobs it holds."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.auth import service as auth_service
from app.cli import cli
from app.datasets import grants
from app.db import transaction
from app.jobs.config import JobSettings
from app.models import Role, TaskKind
from tests.app.datasets.files import image_bytes, write
from tests.app.jobs.factories import create_predict_job
from tests.app.review.factories import Pets, make_pets, queue
from tests.conftest import Account, MakeAccount, browser_login, worker_headers


@pytest.fixture
def two_sets(app: FastAPI, tmp_path: Path) -> tuple[Pets, Pets]:
    with transaction(app.state.session_factory) as session:
        a = make_pets(session, tmp_path / "a", name="set-a")
        b = make_pets(session, tmp_path / "b", name="set-b")
        for pets in (a, b):
            queue(session, pets, TaskKind.JUNK_CHECK, pets.all_samples[:4])
    return a, b


@pytest.fixture
def admin(make_account: MakeAccount) -> Account:
    return make_account(Role.ADMIN)


def grant(client: TestClient, admin: Account, username: str, dataset_id: int | None) -> int:
    response = client.post(
        "/api/grants", json={"username": username, "dataset_id": dataset_id}, headers=admin.headers
    )
    assert response.status_code in (200, 201), response.text
    grant_id: int = response.json()["id"]
    return grant_id


def annotator_sees(client: TestClient, csrf: str, pets: Pets) -> dict[str, int]:
    """Status codes of what an annotator reaches for in a dataset."""
    sample = pets.all_samples[0]
    lease = client.post(
        "/api/review/leases",
        json={"kind": "junk_check", "dataset_id": pets.dataset_id, "n": 1},
        headers={"X-CSRF-Token": csrf},
    )
    return {
        "lease": lease.status_code,
        "classes": client.get(f"/api/review/datasets/{pets.dataset_id}/classes").status_code,
        "thumbnail": client.get(f"/media/samples/{sample}/thumb/96").status_code,
        "original": client.get(f"/media/samples/{sample}/original").status_code,
        "page": client.get(f"/review/{pets.dataset_id}/junk_check").status_code,
        "progress": client.get(f"/review/{pets.dataset_id}/junk_check/progress").status_code,
    }


def test_an_annotator_sees_only_the_datasets_granted(
    client: TestClient, make_account: MakeAccount, admin: Account, two_sets: tuple[Pets, Pets]
) -> None:
    a, b = two_sets
    alice = make_account(Role.ANNOTATOR, every_dataset=False)
    csrf = browser_login(client, alice.user.username)
    assert client.get("/api/review/queues").json() == []
    assert set(annotator_sees(client, csrf, a).values()) == {404}

    grant_id = grant(client, admin, alice.user.username, a.dataset_id)
    assert grant(client, admin, alice.user.username, a.dataset_id) == grant_id  # idempotent
    assert set(annotator_sees(client, csrf, a).values()) == {200}
    assert set(annotator_sees(client, csrf, b).values()) == {404}
    queues = client.get("/api/review/queues").json()
    assert {q["dataset_id"] for q in queues} == {a.dataset_id}
    # Leasing without naming a dataset takes only from the granted one.
    leased = client.post(
        "/api/review/leases", json={"kind": "junk_check", "n": 50}, headers={"X-CSRF-Token": csrf}
    ).json()["tasks"]
    assert leased and {t["dataset_id"] for t in leased} == {a.dataset_id}

    revoked = client.delete(f"/api/grants/{grant_id}", headers=admin.headers)
    assert revoked.status_code == 200
    assert set(annotator_sees(client, csrf, a).values()) == {404}


def test_a_grant_of_every_dataset_covers_new_ones_and_admins_need_none(
    app: FastAPI,
    client: TestClient,
    make_account: MakeAccount,
    admin: Account,
    two_sets: tuple[Pets, Pets],
    tmp_path: Path,
) -> None:
    a, b = two_sets
    bob = make_account(Role.ANNOTATOR, every_dataset=False)
    grant(client, admin, bob.user.username, None)
    with transaction(app.state.session_factory) as session:
        later = make_pets(session, tmp_path / "c", name="set-c")
    csrf = browser_login(client, bob.user.username)
    for pets in (a, b, later):
        assert annotator_sees(client, csrf, pets)["original"] == 200
    refused = client.post(
        "/api/grants", json={"username": admin.user.username}, headers=admin.headers
    )
    assert refused.status_code == 422
    names = {
        d["dataset"]["name"] for d in client.get("/api/datasets", headers=admin.headers).json()
    }
    assert names == {"set-a", "set-b", "set-c"}


def test_only_admins_manage_grants(
    client: TestClient, make_account: MakeAccount, two_sets: tuple[Pets, Pets]
) -> None:
    engineer = make_account(Role.ENGINEER)
    body = {"username": engineer.user.username, "dataset_id": two_sets[0].dataset_id}
    assert client.post("/api/grants", json=body, headers=engineer.headers).status_code == 403
    assert client.get("/api/grants", headers=engineer.headers).status_code == 403


def test_an_engineer_sees_only_granted_datasets_and_those_they_register(
    client: TestClient, make_account: MakeAccount, two_sets: tuple[Pets, Pets], tmp_path: Path
) -> None:
    a, _ = two_sets
    carol = make_account(Role.ENGINEER, every_dataset=False)
    headers = carol.headers
    assert client.get("/api/datasets", headers=headers).json() == []
    for path in (
        f"/api/datasets/{a.dataset_id}",
        f"/api/datasets/{a.dataset_id}/classes",
        f"/api/pipelines/{a.dataset_id}",
        f"/api/review/samples/{a.all_samples[0]}",
    ):
        assert client.get(path, headers=headers).status_code == 404, path
    assert client.get("/api/review/stats", headers=headers).status_code == 422
    # Registering a dataset under another's name does not reveal or re-import it.
    taken = client.post(
        "/api/datasets", json={"name": "set-a", "path": str(tmp_path / "a")}, headers=headers
    )
    assert taken.status_code == 409
    mine = tmp_path / "mine"
    write(mine / "cat" / "x.png", image_bytes("PNG", seed=1))
    created = client.post(
        "/api/datasets", json={"name": "mine", "path": str(mine)}, headers=headers
    )
    assert created.status_code == 202, created.text
    listed = [d["dataset"]["name"] for d in client.get("/api/datasets", headers=headers).json()]
    assert listed == ["mine"]


def test_an_engineer_sees_only_the_jobs_of_datasets_granted_and_those_on_none(
    client: TestClient, make_account: MakeAccount, admin: Account, two_sets: tuple[Pets, Pets]
) -> None:
    a, b = two_sets
    body = {"kind": "train_fold", "recipe": "cifar-small", "train": {"folds": [0, 1] * 8}}
    on_a, on_b = (
        client.post(
            "/api/jobs",
            json={**body, "dataset_id": pets.dataset_id, "fold": 1},
            headers=admin.headers,
        ).json()["id"]
        for pets in (a, b)
    )
    on_none = create_predict_job(client, admin.headers)
    carol = make_account(Role.ENGINEER, every_dataset=False)
    grant(client, admin, carol.user.username, a.dataset_id)
    headers = carol.headers

    listed = {job["id"] for job in client.get("/api/jobs", headers=headers).json()}
    assert listed == {on_a, on_none}
    assert client.get(f"/api/jobs?dataset_id={b.dataset_id}", headers=headers).status_code == 404
    for path in (f"/api/jobs/{on_b}", f"/api/jobs/{on_b}/results", f"/jobs/{on_b}"):
        assert client.get(path, headers=headers).status_code == 404, path
    assert client.get(f"/api/jobs/{on_b}/artifacts/model.pt", headers=headers).status_code == 404
    assert client.post(f"/api/jobs/{on_b}/cancel", headers=headers).status_code == 404
    assert client.post(f"/api/jobs/{on_b}/retry", headers=headers).status_code == 404
    assert client.get(f"/api/jobs/{on_a}", headers=headers).status_code == 200
    assert client.get(f"/api/jobs/{on_none}", headers=headers).status_code == 200
    page = client.get("/jobs", headers=headers).text
    assert f"/jobs/{on_a}" in page and f"/jobs/{on_b}" not in page
    assert 'all <span class="muted">2</span>' in page  # the counts leave it out too
    # The job stays the admin's to cancel.
    assert client.post(f"/api/jobs/{on_b}/cancel", headers=admin.headers).status_code == 200


@pytest.fixture
def worker_job(
    app: FastAPI, client: TestClient, admin: Account, two_sets: tuple[Pets, Pets]
) -> tuple[dict[str, str], dict[str, object]]:
    """A worker token (owned by the admin) and its lease of a job on set A."""
    app.state.job_settings = JobSettings(lease_seconds=30, retry_backoff_seconds=0)
    a, _ = two_sets
    worker = worker_headers(app, admin.user, "box")
    body = {
        "kind": "train_fold",
        "recipe": "cifar-small",
        "dataset_id": a.dataset_id,
        "train": {"folds": [0, 1] * 8},
        "fold": 1,
    }
    created = client.post("/api/jobs", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    grant = client.post(
        "/api/worker/lease",
        json={"worker": "w", "kinds": ["train_fold"], "device": "cpu"},
        headers=worker,
    )
    assert grant.status_code == 200, grant.text
    return worker, grant.json()


def test_a_worker_token_reads_only_images_of_the_datasets_whose_jobs_it_holds(
    client: TestClient,
    two_sets: tuple[Pets, Pets],
    worker_job: tuple[dict[str, str], dict[str, object]],
) -> None:
    a, b = two_sets
    worker, grant = worker_job
    url = "/api/worker/samples/{}/original"
    assert client.get(url.format(a.all_samples[0]), headers=worker).status_code == 200
    assert client.get(url.format(b.all_samples[0]), headers=worker).status_code == 404
    job_id = grant["job_id"]
    released = client.post(
        f"/api/worker/jobs/{job_id}/release", json={"fence": grant["fence"]}, headers=worker
    )
    assert released.status_code == 200
    assert client.get(url.format(a.all_samples[0]), headers=worker).status_code == 404


def test_the_grants_command_adds_lists_and_removes_grants(
    app: FastAPI,
    client: TestClient,  # its lifespan closes the app's engine after the test
    make_account: MakeAccount,
    two_sets: tuple[Pets, Pets],
    runner: CliRunner,
) -> None:
    dave = make_account(Role.ANNOTATOR, every_dataset=False).user.username
    added = runner.invoke(cli, ["grants", "add", dave, "--dataset", "set-b"])
    assert added.exit_code == 0, added.output
    assert runner.invoke(cli, ["grants", "add", dave, "--all"]).exit_code == 0
    listed = runner.invoke(cli, ["grants", "list", dave])
    assert listed.output.split("\n")[:2] == [f"{dave}\tset-b", f"{dave}\tevery dataset"]
    both = runner.invoke(cli, ["grants", "add", dave, "--all", "--dataset", "set-a"])
    assert both.exit_code == 1 and "--dataset NAME or --all" in both.output
    removed = runner.invoke(cli, ["grants", "remove", dave, "--all"])
    assert removed.exit_code == 0, removed.output
    with transaction(app.state.session_factory, read_only=True) as session:
        user = auth_service.user_by_username(session, dave)
        assert grants.granted_dataset_ids(session, user.id) == {two_sets[1].dataset_id}
