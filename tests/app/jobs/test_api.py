"""The engineer API and the worker protocol over HTTP (in-process), on both engines."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.db import transaction
from app.jobs import service as job_service
from app.jobs.config import JobSettings
from app.models import Role
from ml.core.protocol.bundles import decode_manifest, decode_results
from ml.core.protocol.jobs import ArtifactRef, ManifestRef, ModelRef, PredictSpec
from ml.core.protocol.messages import (
    FENCE_HEADER,
    MAX_HEARTBEAT_EPOCHS,
    MAX_HEARTBEAT_LOG_LINES,
    MAX_LOG_LINE_CHARS,
    MAX_SUMMARY_BYTES,
    SHA256_HEADER,
)
from tests.app.jobs.factories import (
    chunk_bytes,
    create_predict_job,
    tiny_dataset,
)
from tests.conftest import MakeAccount, worker_headers

# The rules behind these routes run on both engines in test_service.py; here, the HTTP layer.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def app(app: FastAPI) -> FastAPI:
    app.state.job_settings = JobSettings(lease_seconds=30, retry_backoff_seconds=0)
    return app


@pytest.fixture
def engineer(make_account: MakeAccount) -> dict[str, str]:
    return make_account(Role.ENGINEER).headers


@pytest.fixture
def worker(app: FastAPI, make_account: MakeAccount) -> dict[str, str]:
    account = make_account(Role.ENGINEER, username="gpu-box", token=False)
    return worker_headers(app, account.user)


def lease(client: TestClient, headers: dict[str, str]) -> dict[str, object]:
    body = {"worker": "w1", "kinds": ["train_predict"], "device": "cpu"}
    response = client.post("/api/worker/lease", json=body, headers=headers)
    assert response.status_code == 200, response.text
    grant: dict[str, object] = response.json()
    return grant


def put_results(
    client: TestClient, headers: dict[str, str], job_id: int, fence: object, index: int, data: bytes
) -> object:
    return client.put(
        f"/api/worker/jobs/{job_id}/results/{index}",
        content=data,
        headers={**headers, FENCE_HEADER: str(fence), "Content-Type": "application/octet-stream"},
    )


def test_lease_is_204_when_there_is_no_job(client: TestClient, worker: dict[str, str]) -> None:
    body = {"worker": "w1", "kinds": ["predict"], "device": "cuda:0"}
    assert client.post("/api/worker/lease", json=body, headers=worker).status_code == 204


def test_worker_protocol_wants_a_worker_token(
    client: TestClient, make_account: MakeAccount, engineer: dict[str, str]
) -> None:
    body = {"worker": "w1", "kinds": ["predict"], "device": "cpu"}
    assert client.post("/api/worker/lease", json=body).status_code == 401
    refused = client.post("/api/worker/lease", json=body, headers=engineer)
    assert refused.status_code == 403
    assert "--scope worker" in refused.json()["error"]["message"]
    annotator = make_account(Role.ANNOTATOR)
    from tests.conftest import browser_login

    csrf = browser_login(client, annotator.user.username)
    response = client.post("/api/worker/lease", json=body, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 403


def test_worker_tokens_cannot_use_the_engineer_api(
    client: TestClient, worker: dict[str, str]
) -> None:
    assert client.get("/api/jobs", headers=worker).status_code == 403


def test_a_job_runs_through_the_protocol(
    client: TestClient, engineer: dict[str, str], worker: dict[str, str]
) -> None:
    job_id = create_predict_job(client, engineer)
    grant = lease(client, worker)
    assert grant["job_id"] == job_id
    fence = grant["fence"]
    beat = {
        "fence": fence,
        "progress": {"phase": "train", "epoch": 1, "epochs": 2, "step": 3, "steps": 4},
        "metrics": [{"epoch": 1, "values": {"train_loss": 1.2, "train_accuracy": 0.4}}],
        "log": ["hello from the worker"],
    }
    response = client.post(f"/api/worker/jobs/{job_id}/heartbeat", json=beat, headers=worker)
    assert response.status_code == 200 and response.json()["cancel"] is False
    stored = put_results(client, worker, job_id, fence, 0, chunk_bytes([1, 2, 3, 4, 5, 6]))
    assert stored.status_code == 200  # type: ignore[attr-defined]
    weights = b"\x00weights" * 1000
    response = client.put(
        f"/api/worker/jobs/{job_id}/artifacts/model.safetensors",
        content=weights,
        headers={
            **worker,
            FENCE_HEADER: str(fence),
            SHA256_HEADER: hashlib.sha256(weights).hexdigest(),
        },
    )
    assert response.status_code == 201, response.text
    complete = {"fence": fence, "chunks": 1, "rows": 6, "summary": {"heldout_accuracy": 0.5}}
    response = client.post(f"/api/worker/jobs/{job_id}/complete", json=complete, headers=worker)
    assert response.status_code == 200, response.text

    detail = client.get(f"/api/jobs/{job_id}", headers=engineer).json()
    assert detail["state"] == "succeeded"
    assert detail["result_rows"] == 6
    assert detail["metrics"][0]["values"]["train_loss"] == 1.2
    assert "hello from the worker" in detail["log_tail"]
    assert detail["summary"] == {"heldout_accuracy": 0.5}
    artifact = client.get(f"/api/jobs/{job_id}/artifacts/model.safetensors", headers=engineer)
    assert artifact.content == weights
    results = decode_results(client.get(f"/api/jobs/{job_id}/results", headers=engineer).content)
    assert results.sample_id.tolist() == [1, 2, 3, 4, 5, 6]


def test_oversized_heartbeats_and_summaries_are_refused_and_store_nothing(
    client: TestClient, engineer: dict[str, str], worker: dict[str, str]
) -> None:
    job_id = create_predict_job(client, engineer)
    fence = lease(client, worker)["fence"]
    url = f"/api/worker/jobs/{job_id}"
    too_many = [{"epoch": e, "values": {"loss": 1.0}} for e in range(MAX_HEARTBEAT_EPOCHS + 1)]
    too_long = ["x" * (MAX_LOG_LINE_CHARS + 1)]
    bodies = [
        {"fence": fence, "metrics": too_many},
        {"fence": fence, "log": too_long},
        {"fence": fence, "log": ["line"] * (MAX_HEARTBEAT_LOG_LINES + 1)},
        {"fence": fence, "log_from": 10**30},
    ]
    for body in bodies:
        response = client.post(f"{url}/heartbeat", json=body, headers=worker)
        assert response.status_code == 422, response.text
    huge = {"fence": fence, "summary": {"blob": "x" * (MAX_SUMMARY_BYTES + 1)}}
    assert client.post(f"{url}/complete", json=huge, headers=worker).status_code == 422

    detail = client.get(f"/api/jobs/{job_id}", headers=engineer).json()
    assert detail["metrics"] == []
    assert all(line.startswith("-- lease") for line in detail["log_tail"])  # the server's own
    assert detail["state"] == "leased" and detail["summary"] is None


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: data[:20] + b"\xff" + data[21:], "header|checksum"),
        (lambda data: b"not a bundle at all", "magic|truncated"),
    ],
)
def test_a_malformed_upload_is_400_and_leaves_the_results_unchanged(
    client: TestClient,
    engineer: dict[str, str],
    worker: dict[str, str],
    mangle: object,
    reason: str,
) -> None:
    job_id = create_predict_job(client, engineer)
    fence = lease(client, worker)["fence"]
    assert put_results(client, worker, job_id, fence, 0, chunk_bytes([1, 2])).status_code == 200  # type: ignore[attr-defined]
    response = put_results(client, worker, job_id, fence, 1, mangle(chunk_bytes([3, 4])))  # type: ignore[operator]
    assert response.status_code == 400  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert error["code"] == "malformed_upload"
    assert __import__("re").search(reason, error["message"])
    detail = client.get(f"/api/jobs/{job_id}", headers=engineer).json()
    assert (detail["result_rows"], detail["result_chunks"]) == (2, 1)


def test_a_stale_fence_gets_409(
    client: TestClient, engineer: dict[str, str], worker: dict[str, str]
) -> None:
    job_id = create_predict_job(client, engineer)
    fence = int(lease(client, worker)["fence"])  # type: ignore[call-overload]
    response = put_results(client, worker, job_id, fence + 5, 0, chunk_bytes([1]))
    assert response.status_code == 409  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert error["code"] == "lease_lost"
    assert f"lease {fence + 5}" in error["message"]
    # Nothing in the reply tells the caller the fence that holds the job now.
    assert "fence" not in (error.get("details") or {})
    assert f"lease {fence}" not in error["message"].replace(f"lease {fence + 5}", "")


def test_an_artifact_that_does_not_match_its_hash_is_refused(
    client: TestClient, engineer: dict[str, str], worker: dict[str, str]
) -> None:
    job_id = create_predict_job(client, engineer)
    fence = lease(client, worker)["fence"]
    response = client.put(
        f"/api/worker/jobs/{job_id}/artifacts/model.safetensors",
        content=b"truncated",
        headers={**worker, FENCE_HEADER: str(fence), SHA256_HEADER: "0" * 64},
    )
    assert response.status_code == 400
    assert client.get(f"/api/jobs/{job_id}", headers=engineer).json()["artifacts"] == []


def test_cancel_reaches_the_worker_through_its_heartbeat(
    client: TestClient, engineer: dict[str, str], worker: dict[str, str]
) -> None:
    job_id = create_predict_job(client, engineer)
    fence = lease(client, worker)["fence"]
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=engineer).status_code == 200
    reply = client.post(
        f"/api/worker/jobs/{job_id}/heartbeat", json={"fence": fence}, headers=worker
    )
    assert reply.json()["cancel"] is True
    client.post(f"/api/worker/jobs/{job_id}/release", json={"fence": fence}, headers=worker)
    assert client.get(f"/api/jobs/{job_id}", headers=engineer).json()["state"] == "cancelled"
    retried = client.post(f"/api/jobs/{job_id}/retry", headers=engineer)
    assert retried.json()["state"] == "queued"


def _dataset(app: FastAPI, root: Path) -> tuple[int, list[int]]:
    with transaction(app.state.session_factory) as session:
        dataset, samples = tiny_dataset(session, root=str(root))
        return dataset.id, [sample.id for sample in samples]


def test_a_job_on_a_dataset_gets_a_manifest_of_its_usable_samples(
    app: FastAPI,
    client: TestClient,
    engineer: dict[str, str],
    worker: dict[str, str],
    tmp_path: Path,
) -> None:
    dataset_id, sample_ids = _dataset(app, tmp_path)
    body = {
        "kind": "train_fold",
        "dataset_id": dataset_id,
        "recipe": "cifar-small",
        "train": {"folds": [0, 1, 0, 1, 0, 1]},
        "fold": 1,
    }
    response = client.post("/api/jobs", json=body, headers=engineer)
    assert response.status_code == 201, response.text
    spec = response.json()["spec"]
    assert spec["train"]["count"] == 6
    body = {"worker": "w1", "kinds": ["train_fold"], "device": "cpu"}
    assert client.post("/api/worker/lease", json=body, headers=worker).status_code == 200
    manifest_file = client.get(f"/api/worker/manifests/{spec['train']['sha256']}", headers=worker)
    manifest = decode_manifest(manifest_file.content)
    assert manifest.sample_ids.tolist() == sample_ids[:6]
    assert manifest.class_names == ["cat", "dog"]
    assert manifest.root == str(tmp_path)
    assert manifest.folds.tolist() == [0, 1, 0, 1, 0, 1]
    assert np.array_equal(manifest.labels, [0, 1, 0, 1, 0, 1])


def test_a_job_missing_a_part_of_its_spec_is_refused(
    client: TestClient, engineer: dict[str, str]
) -> None:
    response = client.post(
        "/api/jobs", json={"kind": "train_fold", "recipe": "x"}, headers=engineer
    )
    assert response.status_code == 422
    assert "needs 'fold'" in response.json()["error"]["message"]


@pytest.mark.parametrize("kind", ["embed", "knn", "confident_learning"])
def test_kinds_only_the_pipeline_builds_are_refused_with_the_ones_to_use(
    client: TestClient, engineer: dict[str, str], kind: str
) -> None:
    response = client.post("/api/jobs", json={"kind": kind, "recipe": "x"}, headers=engineer)

    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert f"{kind} jobs are queued by the pipeline" in message
    assert "train_predict" in message and "embed," not in message


def test_the_jobs_pages_render(
    client: TestClient, engineer: dict[str, str], worker: dict[str, str], make_account: MakeAccount
) -> None:
    job_id = create_predict_job(client, engineer)
    fence = lease(client, worker)["fence"]
    beat = {
        "fence": fence,
        "metrics": [
            {"epoch": e, "values": {"train_loss": 2.0 / e, "val_accuracy": 0.2 * e}}
            for e in (1, 2, 3)
        ],
        "log": ["<script>alert(1)</script>"],
    }
    client.post(f"/api/worker/jobs/{job_id}/heartbeat", json=beat, headers=worker)
    from tests.conftest import browser_login

    browser_login(client, make_account(Role.ENGINEER, token=False).user.username)
    listing = client.get("/jobs")
    assert listing.status_code == 200 and f"#{job_id}" in listing.text
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    assert "<polyline" in page.text and "val_accuracy" in page.text
    assert "<script>alert" not in page.text
    assert 'hx-trigger="every 2s"' in page.text
    assert client.get(f"/jobs/{job_id}/live").status_code == 200


def test_a_worker_reads_only_the_manifests_and_artifacts_its_jobs_name(
    app: FastAPI,
    client: TestClient,
    engineer: dict[str, str],
    worker: dict[str, str],
    make_account: MakeAccount,
) -> None:
    """A model trained by one job is read by the worker of a job that predicts with it, not by
    another worker token, nor once that job is over; likewise the sample list."""
    trained = create_predict_job(client, engineer, 6)
    grant = lease(client, worker)
    weights = b"\x00weights" * 100
    upload = client.put(
        f"/api/worker/jobs/{trained}/artifacts/model.safetensors",
        content=weights,
        headers={
            **worker,
            FENCE_HEADER: str(grant["fence"]),
            SHA256_HEADER: hashlib.sha256(weights).hexdigest(),
        },
    )
    assert upload.status_code == 201, upload.text
    release = {"fence": grant["fence"], "reason": "done here"}
    released = client.post(f"/api/worker/jobs/{trained}/release", json=release, headers=worker)
    assert released.status_code == 200, released.text
    [artifact] = client.get(f"/api/jobs/{trained}", headers=engineer).json()["artifacts"]
    predict_sha = client.get(f"/api/jobs/{trained}", headers=engineer).json()["spec"]["predict"]
    with transaction(app.state.session_factory) as session:
        spec = PredictSpec(
            model=ModelRef(
                job_id=trained,
                files=[
                    ArtifactRef(
                        id=artifact["id"],
                        job_id=trained,
                        name=artifact["name"],
                        sha256=artifact["sha256"],
                        byte_size=artifact["byte_size"],
                    )
                ],
            ),
            predict=ManifestRef.model_validate(predict_sha),
        )
        predicting = job_service.create_job(session, spec=spec, config=JobSettings()).id
    other = worker_headers(app, make_account(Role.ENGINEER, token=False).user)
    artifact_url = f"/api/worker/artifacts/{artifact['id']}"
    manifest_url = f"/api/worker/manifests/{predict_sha['sha256']}"
    assert client.get(artifact_url, headers=worker).status_code == 404  # holds nothing now

    body = {"worker": "w1", "kinds": ["predict"], "device": "cpu"}
    held = client.post("/api/worker/lease", json=body, headers=worker).json()
    assert held["job_id"] == predicting

    assert client.get(artifact_url, headers=worker).content == weights
    assert client.get(manifest_url, headers=worker).status_code == 200
    for url in (artifact_url, manifest_url):
        assert client.get(url, headers=other).status_code == 404, url
    release = {"fence": held["fence"], "reason": "done"}
    client.post(f"/api/worker/jobs/{predicting}/release", json=release, headers=worker)
    assert client.get(artifact_url, headers=worker).status_code == 404
