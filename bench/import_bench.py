"""Import benchmark: the real importer against a bare single-process loop, and bulk inserts.

Measures, on the same files (all 9,145 Caltech-101 images and the 50,000 CIFAR-10 training
images, extracted once into a cache folder outside the repository):

1. a bare loop in this one process: read the bytes, SHA-256 them, Pillow open + full decode;
2. a control: the same loop split over one forked process per CPU (the best case for any
   parallel importer on this machine at this moment: it shows how busy the cores are);
3. the importer (scan, probe pool with one process per CPU, bulk writes) on SQLite and PostgreSQL;
4. 1,000,000 sample rows inserted into PostgreSQL through ``import_repository.insert_samples``.

Goals: importer ≥ 1.6× the bare loop's images/s; 1M rows in under 60 s. Prints the numbers and
writes them to bench/results/import.json. Run with ``make bench`` or
``.venv/bin/python bench/import_bench.py``.

Environment: THRESHER_DATA_DIR (the archives; default ../shared/data), THRESHER_BENCH_CACHE
(default: $TMPDIR/thresher-bench) and THRESHER_BENCH_PG_DSN (default:
postgresql://postgres@127.0.0.1:5432/postgres, as the tests use). The time and CPU accounting
and the bare loop are in ``bench/import_measure.py``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.datasets import import_repository, repository, service
from app.datasets.import_repository import NewSample
from app.datasets.importer import COMMIT_EVERY, default_processes
from app.datasets.probe import ProbeResult
from app.db import create_db_engine, create_session_factory, transaction
from app.logging import configure_logging
from app.models import Dataset, ImportFormat, ImportStatus, LabelClass, utcnow
from app.settings import Settings
from bench.harness.databases import (
    PG_ADMIN_DSN,
    migrated_database,
    postgres_reachable,
    throwaway_postgres,
)
from bench.harness.reporting import load_average, write_results
from bench.import_measure import importer_cpu_seconds, machine_busy, run_bare_loop, throughput
from bench.ml_common import DATA

REPO = Path(__file__).resolve().parent.parent
ARCHIVES = {
    "caltech101": (DATA / "caltech101" / "caltech101.tar", "101_ObjectCategories", 9145),
    "cifar10-train": (DATA / "cifar10" / "train.tar", "train", 50_000),
}
ROWS = 1_000_000


def cache_dir() -> Path:
    default = Path(tempfile.gettempdir()) / "thresher-bench"
    return Path(os.environ.get("THRESHER_BENCH_CACHE", default))


def extract(name: str) -> Path:
    """The archive's image folder, extracted once; a clear error when the data is missing."""
    tar_path, top, expected = ARCHIVES[name]
    target = cache_dir() / name
    done = target / ".complete"
    if done.exists():
        return target / top
    if not tar_path.is_file():
        raise SystemExit(
            f"benchmark data missing: {tar_path} (the repository's ../shared/data; see its README)"
        )
    print(f"extracting {tar_path.name} into {target} (once)…", flush=True)
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(f"{top}/")]
        archive.extractall(target, members=members, filter="data")
    count = sum(1 for path in (target / top).rglob("*") if path.is_file())
    if count != expected:
        raise SystemExit(f"{name}: expected {expected} images, extracted {count}")
    done.touch()
    return target / top


# --- databases ------------------------------------------------------------------------------


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """A fresh, migrated PostgreSQL database (dropped afterwards), or None when unreachable."""
    if not postgres_reachable():
        print(f"PostgreSQL not reachable at {PG_ADMIN_DSN}; skipping its measurements")
        yield None
        return
    with throwaway_postgres() as url:
        yield url


@contextmanager
def sqlite_database() -> Iterator[str]:
    with (
        tempfile.TemporaryDirectory(prefix="thresher-bench-") as folder,
        migrated_database("sqlite", Path(folder)) as url,
    ):
        yield url


def run_importer(url: str, roots: dict[str, Path], processes: int) -> dict[str, Any]:
    """Imports each root as its own dataset: wall time, CPU (all processes) per dataset."""
    engine = create_db_engine(url)
    factory = create_session_factory(engine)
    settings = Settings(database_url=url, import_processes=processes)
    per_dataset: dict[str, dict[str, Any]] = {}
    busy_before, total_before = machine_busy()
    try:
        for name, root in roots.items():
            start, cpu_before = time.perf_counter(), importer_cpu_seconds(url)
            with transaction(factory) as session:
                started = service.start_import(session, name=name, path=str(root))
            run = service.run_started_import(factory, started, settings=settings)
            elapsed = time.perf_counter() - start
            cpu = importer_cpu_seconds(url) - cpu_before
            if run.status is not ImportStatus.SUCCEEDED:
                raise SystemExit(f"import of {name} failed: {run.error}")
            per_dataset[name] = throughput(run.added, elapsed, cpu)
    finally:
        engine.dispose()
    busy_after, total_after = machine_busy()
    overall = throughput(
        sum(d["images"] for d in per_dataset.values()),
        sum(d["seconds"] for d in per_dataset.values()),
        sum(d["cpu_seconds"] for d in per_dataset.values()),
    )
    cores = os.cpu_count() or 1
    overall["machine_busy_cores"] = round(
        cores * (busy_after - busy_before) / (total_after - total_before), 2
    )
    return {**overall, "datasets": per_dataset}


def compare(
    importer: dict[str, Any], bare: dict[str, Any], control: dict[str, Any], cores: int
) -> None:
    """Adds the measured ratio and the CPU-time projection for idle cores to ``importer``.

    The projection is the bare loop's CPU per image over the importer's (all its processes:
    the main one, the probe workers and the database server), times the cores: what the same
    work would give with every core to itself, if it spread perfectly. Not a measurement.
    """
    triples = [(importer, bare, control)] + [
        (importer["datasets"][name], bare["datasets"][name], control["datasets"][name])
        for name in importer["datasets"]
    ]
    for mine, theirs, best in triples:
        mine["ratio_to_bare_loop"] = round(mine["images_per_s"] / theirs["images_per_s"], 2)
        mine["ratio_to_control"] = round(mine["images_per_s"] / best["images_per_s"], 2)
        mine["projected_ratio_on_idle_cores"] = round(
            cores * theirs["cpu_ms_per_image"] / mine["cpu_ms_per_image"], 2
        )


def bulk_insert(url: str, rows: int) -> dict[str, Any]:
    """``rows`` new samples through the importer's write path: batches, a commit per batch."""
    engine = create_db_engine(url)
    factory = create_session_factory(engine)
    try:
        with transaction(factory) as session:
            dataset = Dataset(
                name="bulk", root="/bench", source="/bench", source_format=ImportFormat.IMAGEFOLDER
            )
            session.add(dataset)
            session.flush()
            session.add_all(
                LabelClass(dataset_id=dataset.id, name=f"class{index:04d}") for index in range(1000)
            )
            session.flush()
            class_ids = repository.class_ids(session, dataset.id)
            dataset_id = dataset.id
        ids = [class_ids[f"class{index % 1000:04d}"] for index in range(1000)]
        now = utcnow()
        samples = [
            NewSample(
                dataset_id,
                f"class{index % 1000:04d}/image_{index:07d}.jpg",
                ids[index % 1000],
                ProbeResult(
                    20_000 + index % 5000,
                    1_700_000_000_000_000_000 + index,
                    hashlib.sha256(index.to_bytes(8, "little")).hexdigest(),
                    256,
                    192,
                    "RGB",
                    3,
                    "JPEG",
                    None,
                    None,
                ),
                False,
                now,
                now,
            )
            for index in range(rows)
        ]
        start = time.perf_counter()
        with factory() as session:
            for offset in range(0, rows, COMMIT_EVERY):
                import_repository.insert_samples(session, samples[offset : offset + COMMIT_EVERY])
                session.commit()
        seconds = time.perf_counter() - start
    finally:
        engine.dispose()
    return {
        "rows": rows,
        "batch": COMMIT_EVERY,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
    }


# --- the run --------------------------------------------------------------------------------


def print_importer(
    engine_name: str, numbers: dict[str, Any], bare: dict[str, Any], processes: int
) -> None:
    """The importer's rates on one engine against the bare loop, overall and per dataset."""
    print(
        f"importer on {engine_name}: {numbers['images_per_s']:,.0f} images/s, "
        f"{numbers['ratio_to_bare_loop']:.2f}× the bare loop, "
        f"{numbers['ratio_to_control']:.2f}× the control (machine busy "
        f"{numbers['machine_busy_cores']:.2f} of {processes} cores); projected on idle "
        f"cores from CPU time: {numbers['projected_ratio_on_idle_cores']:.2f}×"
    )
    for name, part in numbers["datasets"].items():
        print(
            f"    {name}: {part['images_per_s']:,.0f} images/s vs "
            f"{bare['datasets'][name]['images_per_s']:,.0f} bare: "
            f"{part['ratio_to_bare_loop']:.2f}× (projected "
            f"{part['projected_ratio_on_idle_cores']:.2f}×)"
        )


def main() -> None:
    configure_logging("console", level=30)  # warnings only: the importer logs every run
    processes = default_processes()
    roots = {name: extract(name) for name in ARCHIVES}
    load_before = load_average()
    images = sum(expected for _, _, expected in ARCHIVES.values())
    print(f"{images:,} images; {processes} CPUs; load average {load_before[0]:.2f}", flush=True)

    bare = run_bare_loop(roots)
    print(f"bare loop (one process): {bare['images_per_s']:,.0f} images/s", flush=True)
    control = run_bare_loop(roots, processes=processes)
    control["ratio_to_bare_loop"] = round(control["images_per_s"] / bare["images_per_s"], 2)
    print(
        f"control, the bare loop split over {processes} processes: "
        f"{control['images_per_s']:,.0f} images/s, {control['ratio_to_bare_loop']:.2f}× "
        "(the most any importer could reach on this machine now)",
        flush=True,
    )
    importer: dict[str, Any] = {}
    with sqlite_database() as url:
        importer["sqlite"] = run_importer(url, roots, processes)
    bulk: dict[str, Any] | None = None
    with postgres_database() as pg_url:
        if pg_url is not None:
            importer["postgresql"] = run_importer(pg_url, roots, processes)
            bulk = bulk_insert(pg_url, ROWS)
    for engine_name, numbers in importer.items():
        compare(numbers, bare, control, processes)
        print_importer(engine_name, numbers, bare, processes)
    if bulk is not None:
        print(
            f"{bulk['rows']:,} sample rows into PostgreSQL: {bulk['seconds']:.1f} s "
            f"({bulk['rows_per_s']:,} rows/s)"
        )
    results = {
        "machine": {
            "cpus": processes,
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "goals": {"importer_ratio_to_bare_loop": 1.6, "bulk_insert_seconds": 60},
        "bare_loop": bare,
        "control_split_bare_loop": control,
        "importer": importer,
        "bulk_insert_postgresql": bulk,
    }
    path = write_results("import", results)
    print(f"written to {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
