"""The pipeline API: who may use it, creating and configuring, steps and their keys, the reads
behind the dashboard, sample histories, downloads, and the server's own reconciler."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.models import Role
from app.pipeline.config import PipelineEnv
from tests.app.pipeline.factories import WHOLE_NETWORK_RECIPES, FakeAnnotator, Toy
from tests.app.pipeline.fake_worker import FakeWorker
from tests.conftest import MakeAccount, browser_login


@pytest.fixture
def headers(make_account: MakeAccount) -> dict[str, str]:
    return make_account(Role.ENGINEER).headers


def _create(client: TestClient, toy: Toy, headers: dict[str, str], **config: object) -> dict:  # type: ignore[type-arg]
    response = client.post(
        f"/api/pipelines/{toy.dataset_id}",
        json={"config": {**WHOLE_NETWORK_RECIPES, **config}},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    body: dict = response.json()  # type: ignore[type-arg]
    return body


def test_engineers_create_a_pipeline_and_read_where_it_is(
    client: TestClient, toy: Toy, headers: dict[str, str]
) -> None:
    body = _create(client, toy, headers, audit_size=50)
    assert body["stage"] == "junk" and body["auto"] is False
    assert body["config"]["audit_size"] == 50 and body["config"]["junk_threshold"] == 0.6
    funnel = {step["key"]: step["count"] for step in body["funnel"]["steps"]}
    assert funnel["imported"] == len(toy.given) + len(toy.duplicates) + 1
    assert funnel["usable"] == len(toy.given) + len(toy.duplicates)
    assert funnel["duplicates"] == 2 and funnel["final"] == len(toy.given)
    assert body["next_step"]["kind"] == "junk_seed"
    again = client.post(f"/api/pipelines/{toy.dataset_id}", json={}, headers=headers)
    assert again.status_code == 200


def test_annotators_cannot_drive_the_pipeline(
    client: TestClient, toy: Toy, make_account: MakeAccount
) -> None:
    annotator = make_account(Role.ANNOTATOR, token=False)
    csrf = browser_login(client, annotator.user.username)
    response = client.post(
        f"/api/pipelines/{toy.dataset_id}", json={}, headers={"X-CSRF-Token": csrf}
    )
    assert response.status_code == 403


def test_a_bad_config_key_is_refused_naming_it(
    client: TestClient, toy: Toy, headers: dict[str, str]
) -> None:
    _create(client, toy, headers)
    response = client.patch(
        f"/api/pipelines/{toy.dataset_id}", json={"config": {"folds": 1}}, headers=headers
    )
    assert response.status_code == 422
    assert "folds" in response.json()["error"]["message"]


def test_a_step_sent_twice_with_its_key_starts_once(
    client: TestClient, toy: Toy, headers: dict[str, str]
) -> None:
    _create(client, toy, headers, seed_random_samples=5)
    body = {"kind": "junk_seed", "request_key": "seed-please"}
    first = client.post(f"/api/pipelines/{toy.dataset_id}/steps", json=body, headers=headers)
    again = client.post(f"/api/pipelines/{toy.dataset_id}/steps", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert first.json()["tasks"]["pending"] == len(toy.non_rgb) + 5
    other = client.post(
        f"/api/pipelines/{toy.dataset_id}/steps", json={"kind": "junk_audit"}, headers=headers
    )
    assert other.status_code == 409 and other.json()["error"]["code"] == "round_open"


def test_every_funnel_number_lists_its_samples(
    client: TestClient,
    toy: Toy,
    headers: dict[str, str],
    annotator: FakeAnnotator,
) -> None:
    _create(client, toy, headers, seed_random_samples=10)
    client.post(
        f"/api/pipelines/{toy.dataset_id}/steps", json={"kind": "junk_seed"}, headers=headers
    )
    annotator.review_all()
    client.post(f"/api/pipelines/{toy.dataset_id}/reconcile", headers=headers)
    funnel = client.get(f"/api/pipelines/{toy.dataset_id}/funnel", headers=headers).json()
    for step in funnel["steps"]:
        if step["filter"] is None:
            continue
        params = {**step["filter"], "limit": 1000}
        page = client.get(
            f"/api/pipelines/{toy.dataset_id}/samples", params=params, headers=headers
        ).json()
        assert len(page["samples"]) == step["count"], step["key"]
    # A round's per-kind event counts list their samples too.
    [seed] = client.get(f"/api/pipelines/{toy.dataset_id}/rounds", headers=headers).json()
    queued = client.get(
        f"/api/pipelines/{toy.dataset_id}/samples",
        params={"round_id": seed["id"], "event": "queued", "limit": 1000},
        headers=headers,
    ).json()
    assert len(queued["samples"]) == seed["events"]["queued"] == seed["stats"]["queued"]


def test_a_samples_history_shows_its_events_decisions_training_and_predictions(
    client: TestClient,
    app: FastAPI,
    toy: Toy,
    headers: dict[str, str],
    env: PipelineEnv,
    annotator: FakeAnnotator,
) -> None:
    worker = FakeWorker(app.state.session_factory, env, toy)
    _create(client, toy, headers, folds=3, human_fraction=1.0)
    client.patch(f"/api/pipelines/{toy.dataset_id}", json={"stage": "label"}, headers=headers)
    client.post(
        f"/api/pipelines/{toy.dataset_id}/steps", json={"kind": "cross_validation"}, headers=headers
    )
    for _ in range(2):
        worker.run_all()
        client.post(f"/api/pipelines/{toy.dataset_id}/reconcile", headers=headers)
    client.post(
        f"/api/pipelines/{toy.dataset_id}/steps", json={"kind": "human_sample"}, headers=headers
    )
    annotator.review_all()
    client.post(f"/api/pipelines/{toy.dataset_id}/reconcile", headers=headers)
    noisy = min(toy.noisy)
    history = client.get(f"/api/pipelines/{toy.dataset_id}/samples/{noisy}", headers=headers).json()
    assert history["status"] == "relabelled" and history["label_class_id"] == toy.true[noisy]
    assert [e["kind"] for e in history["events"]] == ["rejected", "queued", "verdict"]
    assert history["events"][0]["source"] == "cross validation 1"
    assert history["events"][2]["decision_id"] == history["decisions"][0]["decision_id"]
    assert history["decisions"][0]["username"] == "ann"
    assert len(history["training"]) == 2  # the folds that did not hold it out
    [prediction] = history["predictions"]
    assert prediction["topk_class_ids"][0] == toy.true[noisy]
    missing = client.get(f"/api/pipelines/{toy.dataset_id}/samples/999999", headers=headers)
    assert missing.status_code == 404


def test_the_dashboard_reads_answer(client: TestClient, toy: Toy, headers: dict[str, str]) -> None:
    _create(client, toy, headers)
    base = f"/api/pipelines/{toy.dataset_id}"
    classes = client.get(f"{base}/classes", headers=headers).json()
    assert [c["name"] for c in classes] == ["ant", "bee", "cat"]
    assert sum(c["before"] for c in classes) == len(toy.given)
    assert all(c["sampled"] >= c["after"] for c in classes)
    assert client.get(f"{base}/estimates", headers=headers).json() == []
    assert client.get(f"{base}/training", headers=headers).json() == []
    assert client.get(f"{base}/final", headers=headers).json() is None
    assert client.get(f"{base}/next", headers=headers).json()["kind"] == "junk_seed"


def test_the_manifest_downloads_list_every_sample(
    client: TestClient, toy: Toy, headers: dict[str, str]
) -> None:
    _create(client, toy, headers)
    base = f"/api/pipelines/{toy.dataset_id}/export"
    rows = list(
        csv.DictReader(io.StringIO(client.get(f"{base}/manifest.csv", headers=headers).text))
    )
    assert len(rows) == len(toy.given) + len(toy.duplicates) + 1
    assert {row["status"] for row in rows} == {"candidate", "duplicate", "unusable"}
    lines = client.get(f"{base}/manifest.jsonl", headers=headers).text.splitlines()
    assert [json.loads(line)["path"] for line in lines] == [row["path"] for row in rows]
    report = client.get(f"{base}/report.json", headers=headers).json()
    assert report["dataset"]["name"] == "toy" and report["stage"] == "junk"


# --- the reconciler in the server -------------------------------------------------------------


@pytest.fixture
def live_client(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A client of the app, started with its reconciler running every 0.1 s."""
    monkeypatch.setenv("THRESHER_PIPELINE_RECONCILE_SECONDS", "0.1")
    with TestClient(app) as client:
        yield client


def test_the_server_applies_decisions_and_finishes_rounds_by_itself(
    live_client: TestClient, toy: Toy, make_account: MakeAccount, annotator: FakeAnnotator
) -> None:
    headers = make_account(Role.ENGINEER).headers
    base = f"/api/pipelines/{toy.dataset_id}"
    created = live_client.post(base, json={"config": {"seed_random_samples": 0}}, headers=headers)
    assert created.status_code == 201
    live_client.post(f"{base}/steps", json={"kind": "junk_seed"}, headers=headers)
    annotator.review_all()
    deadline = time.monotonic() + 30
    status = live_client.get(base, headers=headers).json()
    while status["rounds"][0]["state"] != "done" and time.monotonic() < deadline:
        time.sleep(0.1)
        status = live_client.get(base, headers=headers).json()
    assert status["rounds"][0]["state"] == "done"
    assert status["funnel"]["statuses"]["junk"] == len(toy.non_rgb & toy.junk)


def test_advance_starts_what_auto_mode_would_and_waits_for_open_rounds(
    client: TestClient, toy: Toy, headers: dict[str, str]
) -> None:
    _create(client, toy, headers, seed_random_samples=1)
    base = f"/api/pipelines/{toy.dataset_id}"
    first = client.post(f"{base}/advance", json={"request_key": "go"}, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["round"]["kind"] == "junk_seed"
    again = client.post(f"{base}/advance", json={"request_key": "go"}, headers=headers)
    assert again.json()["round"]["id"] == first.json()["round"]["id"]
    busy = client.post(f"{base}/advance", json={}, headers=headers)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "round_open"


def test_cancelling_a_round_cancels_its_jobs_and_waiting_tasks(
    client: TestClient, toy: Toy, headers: dict[str, str]
) -> None:
    _create(client, toy, headers, folds=3)
    base = f"/api/pipelines/{toy.dataset_id}"
    client.patch(base, json={"stage": "label"}, headers=headers)
    round_ = client.post(f"{base}/steps", json={"kind": "cross_validation"}, headers=headers)
    cancelled = client.post(f"{base}/rounds/{round_.json()['id']}/cancel", headers=headers).json()
    assert cancelled["state"] == "cancelled"
    assert {job["state"] for job in cancelled["jobs"]} == {"cancelled"}
    retried = client.post(f"{base}/rounds/{round_.json()['id']}/retry", headers=headers)
    assert retried.status_code == 409
    # Nothing is open any more: the next step may start.
    assert (
        client.post(f"{base}/steps", json={"kind": "cross_validation"}, headers=headers).status_code
        == 201
    )
