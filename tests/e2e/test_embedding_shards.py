"""The embedding pass with real processes: a round on the default (pretrained, head on
embeddings) recipes has its dataset embedded in shards by several workers at once, and a worker
killed in the middle of a shard costs that shard only: the shards already stored are not
embedded again, and the killed one is finished by another worker once its lease runs out.
(Within a shard, a restarted embedding resumes from its stored chunks: tests/ml/test_embed.py.)"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from bench.harness.processes import wait_for
from bench.harness.stack import running_stack
from tests.e2e.conftest import RealSet, Stack

pytestmark = pytest.mark.slow

SHARD = 200


@pytest.fixture
def stack(db_url: str, session_factory: Any, tmp_path: Path) -> Any:
    # Short leases, so that the killed worker's shard comes back within the test.
    with running_stack(db_url, session_factory, tmp_path, worker=False, lease_seconds=6) as s:
        yield s


def _embed_jobs(stack: Stack, dataset_id: int) -> list[dict[str, Any]]:
    status = stack.status(dataset_id)
    ids = [job["job_id"] for r in status["rounds"] for job in r["jobs"] if job["kind"] == "embed"]
    return [stack.http.get(f"/api/jobs/{job_id}").json() for job_id in sorted(ids)]


def _kill_mid_shard(
    stack: Stack, dataset_id: int, name: str, embeddings: Path
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Starts worker ``name``, kills it once it holds a shard while another is stored, and
    returns the shard it died holding (None if it finished that shard before the signal landed)
    with the jobs as they stood after its death."""
    worker = stack.start_worker(name, threads=1, embeddings=embeddings)

    def is_mid_shard() -> bool:
        jobs = _embed_jobs(stack, dataset_id)
        busy = [j for j in jobs if j["worker"] == name and j["state"] == "running"]
        return bool(busy) and any(j["state"] == "succeeded" for j in jobs)

    try:
        wait_for(is_mid_shard, timeout=300, what="a shard stored, another being embedded")
    except AssertionError as error:
        jobs = [
            {k: j[k] for k in ("id", "state", "worker", "step", "steps", "phase", "attempts")}
            for j in _embed_jobs(stack, dataset_id)
        ]
        raise AssertionError(f"{error}: {jobs}\n{stack.worker_logs()}") from None
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()
    # Read after the death: a dead worker finishes nothing more, so what it still holds here is
    # what it was killed in the middle of.
    after = _embed_jobs(stack, dataset_id)
    held = [j for j in after if j["worker"] == name and j["state"] == "running"]
    return (held[0] if held else None), after


def _all_embedded(stack: Stack, dataset_id: int) -> list[dict[str, Any]] | None:
    jobs = _embed_jobs(stack, dataset_id)
    if any(j["state"] in ("failed", "cancelled") for j in jobs):
        raise AssertionError(f"an embed job failed: {jobs}\n{stack.worker_logs()}")
    return jobs if all(j["state"] == "succeeded" for j in jobs) else None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_workers_embed_shards_in_parallel_and_a_killed_shard_is_the_only_one_redone(
    stack: Stack, cifar_noisy: RealSet, tmp_path: Path
) -> None:
    dataset_id = stack.import_dataset("cifar10n", cifar_noisy.manifest)
    images = len(cifar_noisy.given())
    config = {"folds": 3, "embed_shard_size": SHARD, "human_fraction": 0.0, "min_class_size": 0}
    created = stack.http.post(f"/api/pipelines/{dataset_id}", json={"config": config})
    assert created.status_code == 201, created.text
    second = stack.start_worker("second", threads=1, embeddings=tmp_path / "emb-second")
    stack.http.patch(f"/api/pipelines/{dataset_id}", json={"stage": "label", "auto": True})

    # The shard can end between the poll that saw it running and the signal; then another worker
    # is killed in the middle of a later one.
    for name in ("first", "first-again", "first-once-more"):
        killed, before = _kill_mid_shard(stack, dataset_id, name, tmp_path / f"emb-{name}")
        if killed is not None:
            break
    assert killed is not None, "every worker finished its shard before the signal landed"
    stored_before = {j["id"] for j in before if j["state"] == "succeeded"}
    third = stack.start_worker("third", threads=1, embeddings=tmp_path / "emb-third")

    jobs = wait_for(lambda: _all_embedded(stack, dataset_id), timeout=300, what="every shard")

    # One job per shard, each run once, except the killed one, run again by another worker.
    assert len(jobs) == -(-images // SHARD)
    by_id = {j["id"]: j for j in jobs}
    assert by_id[killed["id"]]["attempts"] == 2
    assert by_id[killed["id"]]["worker"] in ("second", "third")
    assert all(by_id[i]["attempts"] == 1 for i in stored_before)
    assert all(j["attempts"] == 1 for j in jobs if j["id"] != killed["id"])
    assert sum(j["summary"]["samples"] for j in jobs) == images
    # Embedded in parallel: when the first worker was killed, the second had a shard too.
    busy_before = {j["worker"] for j in before if j["state"] in ("running", "succeeded")}
    assert {name, "second"} <= busy_before, before

    # Overlapping in time: a shard of each worker ran at the same time as one of the other's.
    def overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
        end = "9999"  # a shard still running has no end yet
        return a["started_at"] < (b["finished_at"] or end) and b["started_at"] < (
            a["finished_at"] or end
        )

    shards = [j for j in before if j["started_at"] is not None]
    assert any(
        overlap(a, b)
        for a in shards
        if a["worker"] == name
        for b in shards
        if b["worker"] == "second"
    ), before
    # The round goes on from the stored embeddings: its fold jobs run without embedding again.
    status = stack.wait_until(
        dataset_id,
        lambda s: any(
            j["kind"] == "train_fold" and j["state"] == "succeeded"
            for r in s["rounds"]
            for j in r["jobs"]
        ),
        timeout=300,
    )
    assert len(_embed_jobs(stack, dataset_id)) == len(jobs)
    assert third.process.poll() is None and second.process.poll() is None
    assert status["rounds"][0]["stats"]["embedding"]["shards"] == len(jobs)
