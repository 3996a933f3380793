"""Jobs benchmark: result ingestion through the real upload endpoint, and protocol overhead.

For each engine (SQLite, then PostgreSQL), against a real ``uvicorn`` server on 127.0.0.1:

1. **Ingest.** A job whose result set is 1,000,000 samples is leased over HTTP; its results
   (top-5 class ids and probabilities, and the given label's probability, per sample) are
   uploaded in chunks of 65,536 samples through ``PUT /api/worker/jobs/{id}/results/{n}``, one
   after the other as one worker does, then the job is completed (which checks the chunk ledger
   and the row count). Timed: from the first upload to the completion's answer. Goal: under
   60 s on PostgreSQL and 120 s on SQLite. Also timed: encoding on the worker's side, and
   reading the stored results back as arrays (what the cleaning pipeline does).
2. **Protocol overhead.** A real ``thresher worker`` process (already polling) runs a tiny job
   (train 1 epoch on 32 images of 32 px, predict them), three times: lease → first training
   step (fetching the manifest, reading and decoding the images, building the model) and last
   step → results stored (predicting, uploading results and model, completing).

Prints a table and writes bench/results/jobs.json. Run with ``make bench`` or
``.venv/bin/python bench/jobs_ingest.py``. Environment: THRESHER_BENCH_PG_DSN (default
postgresql://postgres@127.0.0.1:5432/postgres); THRESHER_BENCH_ROWS (default 1,000,000).
"""

from __future__ import annotations

import hashlib
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.auth import service as auth_service  # noqa: E402
from app.db import create_db_engine, create_session_factory, transaction  # noqa: E402
from app.jobs import ingest, manifests  # noqa: E402
from app.logging import configure_logging  # noqa: E402
from app.models import Role, TokenScope  # noqa: E402
from bench.harness.databases import (  # noqa: E402
    PG_ADMIN_DSN,
    migrated_database,
    postgres_reachable,
)
from bench.harness.processes import ServerProcess, start_worker  # noqa: E402
from bench.harness.reporting import load_average, write_results  # noqa: E402
from ml.core.protocol.bundles import (  # noqa: E402
    RESULT_CHUNK_ROWS,
    JobManifest,
    ResultChunk,
    encode_results,
)
from ml.core.protocol.messages import FENCE_HEADER  # noqa: E402

ROWS = int(os.environ.get("THRESHER_BENCH_ROWS", "1000000"))
CLASSES = 1000
TOP_K = 5
GOALS = {"sqlite": 120.0, "postgresql": 60.0}
TINY_JOBS = 3


def tokens(url: str) -> tuple[str, str]:
    engine = create_db_engine(url)
    try:
        with transaction(create_session_factory(engine)) as session:
            user, _ = auth_service.create_user(
                session,
                username="bench",
                role=Role.ENGINEER,
                password="bench password 123",  # noqa: S106
            )
            _, api = auth_service.create_token(session, user=user, name="bench")
            _, worker = auth_service.create_token(
                session, user=user, name="bench worker", scope=TokenScope.WORKER
            )
        return api, worker
    finally:
        engine.dispose()


def synthetic_results(n: int) -> ResultChunk:
    rng = np.random.default_rng(0)
    probs = np.sort(rng.dirichlet(np.ones(TOP_K + 1), size=n)[:, :TOP_K], axis=1)[:, ::-1]
    return ResultChunk(
        sample_id=np.arange(1, n + 1, dtype=np.int64),
        topk_class_id=rng.integers(0, CLASSES, size=(n, TOP_K)).astype(np.int32),
        topk_prob=np.ascontiguousarray(probs, dtype=np.float32),
        label_prob=rng.random(n).astype(np.float32),
    )


def big_manifest(n: int) -> JobManifest:
    ids = np.arange(1, n + 1, dtype=np.int64)
    return JobManifest(
        root="/bench",
        sample_ids=ids,
        labels=(ids % CLASSES).astype(np.int32),
        folds=np.full(n, -1, dtype=np.int8),
        sha256=np.zeros((n, 32), dtype=np.uint8),
        paths=[f"{i}.jpg" for i in range(n)],
        class_ids=np.arange(CLASSES, dtype=np.int64),
        class_names=[f"c{i}" for i in range(CLASSES)],
    )


def upload(client: httpx.Client, job_id: int, fence: int, bodies: list[bytes]) -> list[float]:
    """Uploads the encoded result chunks one after the other, as one worker does, then
    completes the job; returns each chunk's seconds."""
    chunk_seconds = []
    for index, data in enumerate(bodies):
        begun = time.perf_counter()
        client.put(
            f"/api/worker/jobs/{job_id}/results/{index}",
            content=data,
            headers={FENCE_HEADER: str(fence), "Content-Type": "application/octet-stream"},
        ).raise_for_status()
        chunk_seconds.append(time.perf_counter() - begun)
    complete = {"fence": fence, "chunks": len(bodies), "rows": ROWS}
    client.post(f"/api/worker/jobs/{job_id}/complete", json=complete).raise_for_status()
    return chunk_seconds


def read_back(url: str, job_id: int, sent: ResultChunk) -> float:
    """Seconds to read the stored results back as arrays, which must be what was sent."""
    engine = create_db_engine(url)
    try:
        with create_session_factory(engine)() as session:
            started = time.perf_counter()
            back = ingest.read_results(session, job_id)
            seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    assert back.topk_class_id is not None
    assert np.array_equal(back.topk_class_id, sent.topk_class_id)
    return seconds


def measure_ingest(base: str, url: str, data_dir: Path, api: str, worker: str) -> dict[str, Any]:
    ref = manifests.store_manifest(data_dir, big_manifest(ROWS))
    engineer = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {api}"}, timeout=600)
    body = {
        "kind": "train_predict",
        "recipe": "cifar-small",
        "train": {"manifest": ref.sha256},
        "predict": {"manifest": ref.sha256},
        "top_k": TOP_K,
    }
    job_id = engineer.post("/api/jobs", json=body).raise_for_status().json()["id"]
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {worker}"}, timeout=600)
    grant = (
        client.post(
            "/api/worker/lease",
            json={"worker": "bench", "kinds": ["train_predict"], "device": "cpu"},
        )
        .raise_for_status()
        .json()
    )
    fence = grant["fence"]

    results = synthetic_results(ROWS)
    started = time.perf_counter()
    bodies = [encode_results(chunk) for chunk in results.chunks(RESULT_CHUNK_ROWS)]
    encode_seconds = time.perf_counter() - started

    started = time.perf_counter()
    chunk_seconds = upload(client, job_id, fence, bodies)
    ingest_seconds = time.perf_counter() - started
    detail = engineer.get(f"/api/jobs/{job_id}").raise_for_status().json()
    assert detail["state"] == "succeeded" and detail["result_rows"] == ROWS, detail

    read_seconds = read_back(url, job_id, results)
    engineer.close()
    client.close()
    return {
        "rows": ROWS,
        "chunks": len(bodies),
        "bytes_uploaded": sum(len(b) for b in bodies),
        "encode_seconds": round(encode_seconds, 2),
        "ingest_seconds": round(ingest_seconds, 2),
        "rows_per_second": round(ROWS / ingest_seconds),
        "slowest_chunk_seconds": round(max(chunk_seconds), 3),
        "read_back_seconds": round(read_seconds, 2),
    }


def write_images(root: Path, n: int) -> tuple[list[str], bytes]:
    rng = np.random.default_rng(1)
    paths, digests = [], []
    for i in range(n):
        pixels = rng.integers(0, 255, size=(32, 32, 3), dtype=np.uint8)
        relative = f"c{i % 2}/{i}.png"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / relative)
        paths.append(relative)
        digests.append(hashlib.sha256((root / relative).read_bytes()).digest())
    return paths, b"".join(digests)


def tiny_manifest(images: Path) -> JobManifest:
    """32 small PNGs in two classes written under ``images``, as a job's manifest."""
    paths, digests = write_images(images, 32)
    n = len(paths)
    return JobManifest(
        root=str(images),
        sample_ids=np.arange(1, n + 1, dtype=np.int64),
        labels=(np.arange(n) % 2).astype(np.int32),
        folds=np.full(n, -1, dtype=np.int8),
        sha256=np.frombuffer(digests, dtype=np.uint8).reshape(n, 32),
        paths=paths,
        class_ids=np.array([1, 2], dtype=np.int64),
        class_names=["c0", "c1"],
    )


def measure_overhead(
    server: ServerProcess, data_dir: Path, workdir: Path, api: str, worker: str
) -> dict[str, Any]:
    ref = manifests.store_manifest(data_dir, tiny_manifest(workdir / "images"))
    recipe = {
        "name": "tiny", "model": {"name": "cifar_convnet_s"}, "image_size": 32, "epochs": 1,
        "batch_size": 8, "optimizer": {"name": "sgd", "lr": 0.05}, "loader_workers": 0,
    }  # fmt: skip
    # Torch's own thread count, as a worker on its own machine would have.
    process = start_worker(server, worker, workdir, "bench", threads=None, poll_max=0.2)
    base = server.url
    engineer = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {api}"}, timeout=60)
    runs = []
    try:
        time.sleep(8)  # the worker is up and polling before the first job exists
        for _ in range(TINY_JOBS):
            body = {
                "kind": "train_predict", "recipe": recipe, "train": {"manifest": ref.sha256},
                "predict": {"manifest": ref.sha256}, "top_k": 2,
            }  # fmt: skip
            job_id = engineer.post("/api/jobs", json=body).raise_for_status().json()["id"]
            deadline = time.monotonic() + 120
            while True:
                job = engineer.get(f"/api/jobs/{job_id}").raise_for_status().json()
                if job["state"] in ("succeeded", "failed"):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"the tiny job did not finish; see {process.log_path}")
                time.sleep(0.1)
            assert job["state"] == "succeeded", job
            timings = job["summary"]["timings"]
            finished = datetime.fromisoformat(job["finished_at"]).timestamp()
            leased = datetime.fromisoformat(job["leased_at"]).timestamp()
            runs.append(
                {
                    "lease_to_first_step_seconds": timings["first_step_at"] - leased,
                    "last_step_to_stored_seconds": finished - timings["last_step_at"],
                    "upload_seconds": timings["upload_seconds"],
                }
            )
    finally:
        engineer.close()
        process.stop()
    return {
        "runs": runs,
        "lease_to_first_step_seconds": round(
            statistics.median(r["lease_to_first_step_seconds"] for r in runs), 3
        ),
        "last_step_to_stored_seconds": round(
            statistics.median(r["last_step_to_stored_seconds"] for r in runs), 3
        ),
    }


def measure_engine(engine_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both measurements on a fresh database of ``engine_name`` and a server of its own."""
    with tempfile.TemporaryDirectory(prefix=f"thresher-jobs-{engine_name}-") as tmp:
        workdir = Path(tmp)
        data_dir = workdir / "data"
        data_dir.mkdir()
        with migrated_database(engine_name, workdir) as url:
            api, worker = tokens(url)
            heartbeats = {"THRESHER_JOBS_HEARTBEAT_SECONDS": "1"}
            with ServerProcess(url, data_dir, extra_env=heartbeats) as server:
                print(f"{engine_name}: ingesting {ROWS:,} results…", flush=True)
                ingest_figures = measure_ingest(server.url, url, data_dir, api, worker)
                print(f"{engine_name}: tiny jobs for the protocol overhead…", flush=True)
                overhead = measure_overhead(server, data_dir, workdir, api, worker)
    return ingest_figures, overhead


def print_table(report: dict[str, Any]) -> None:
    """One row per engine: the ingest against its goal, and the protocol overhead."""
    print()
    print(f"{'engine':<11} {'rows':>9} {'ingest s':>9} {'goal s':>7} {'rows/s':>9} "
          f"{'encode s':>9} {'read s':>7} {'lease→step s':>13} {'step→stored s':>14}")  # fmt: skip
    for name, figures in report["engines"].items():
        i, o = figures["ingest"], figures["overhead"]
        verdict = "ok" if i["ingest_seconds"] < i["goal_seconds"] else "MISSED"
        cells = [
            f"{name:<11}",
            f"{i['rows']:>9,}",
            f"{i['ingest_seconds']:>9.1f}",
            f"{i['goal_seconds']:>7.0f}",
            f"{i['rows_per_second']:>9,}",
            f"{i['encode_seconds']:>9.1f}",
            f"{i['read_back_seconds']:>7.1f}",
            f"{o['lease_to_first_step_seconds']:>13.2f}",
            f"{o['last_step_to_stored_seconds']:>14.2f}",
            f" {verdict}",
        ]
        print(" ".join(cells))


def main() -> int:
    configure_logging("console", level=30)
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": load_average(),
            "python": platform.python_version(),
        },
        "engines": {},
    }
    engines = ["sqlite"] + (["postgresql"] if postgres_reachable() else [])
    if "postgresql" not in engines:
        print(f"PostgreSQL is not reachable at {PG_ADMIN_DSN}: measuring SQLite only")
    for engine_name in engines:
        ingest_figures, overhead = measure_engine(engine_name)
        report["engines"][engine_name] = {
            "ingest": {**ingest_figures, "goal_seconds": GOALS[engine_name]},
            "overhead": overhead,
        }
    report["machine"]["load_average_at_end"] = load_average()

    print_table(report)
    machine = report["machine"]
    print(
        f"load average at start {machine['load_average_at_start']}, "
        f"at end {machine['load_average_at_end']} ({machine['cpus']} CPUs)"
    )
    print(f"wrote {write_results('jobs', report)}")
    missed = [
        n
        for n, f in report["engines"].items()
        if f["ingest"]["ingest_seconds"] >= f["ingest"]["goal_seconds"]
    ]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
