"""What the import benchmark measures the importer against, and how: wall and CPU time of this
process, of its children, of the importer's probe workers and PostgreSQL backends, and of the
whole machine; the bare loop (read, hash, decode each file in one process) and the control (that
loop split over forked processes). See ``bench/import_bench.py``.
"""

from __future__ import annotations

import hashlib
import io
import os
import resource
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness.databases import PG_ADMIN_DSN

T = TypeVar("T")


def image_files(root: Path) -> list[str]:
    return sorted(str(path) for path in root.rglob("*") if path.is_file())


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _proc_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and of its children it has reaped, from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def importer_cpu_seconds(database_url: str) -> float:
    """CPU spent for the importer: this process, the probe workers and the database server.

    Probe workers are children of multiprocessing's fork server, which reaps them, so their time
    shows in its cumulative children's time. PostgreSQL backends of the benchmark's database
    are local processes too.
    """
    from multiprocessing import forkserver

    total = own_cpu_seconds()
    server = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if pid:
        total += _proc_cpu_seconds(pid)
    if database_url.startswith("postgresql"):
        name = database_url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            backends = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)
            ).fetchall()
        total += sum(_proc_cpu_seconds(backend) for (backend,) in backends)
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / ticks, sum(values) / ticks


def bare_loop(paths: list[str]) -> int:
    """What one core does without the importer: read, hash and fully decode each file."""
    decoded = 0
    for path in paths:
        with open(path, "rb") as handle:
            data = handle.read()
        hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
        decoded += 1
    return decoded


def throughput(images: int, seconds: float, cpu: float) -> dict[str, Any]:
    """Images, wall seconds, images/s, CPU seconds and CPU ms per image, rounded."""
    return {
        "images": images,
        "seconds": round(seconds, 2),
        "images_per_s": round(images / seconds, 1),
        "cpu_seconds": round(cpu, 2),
        "cpu_ms_per_image": round(1000 * cpu / images, 4),
    }


def split_bare_loop(paths: list[str], processes: int) -> int:
    """The control: the bare loop split over ``processes`` forked copies of this process.

    Trivially parallel, with no scan, no pool protocol and no database, so its speed-up over
    the one-process loop is the most any importer could reach on this machine right now.
    """
    children = []
    for part in range(processes):
        pid = os.fork()
        if pid == 0:  # the child: never return into the benchmark
            try:
                bare_loop(paths[part::processes])
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    return len(paths)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_bare_loop(
    roots: dict[str, Path], *, processes: int = 1, attempts: int = 2
) -> dict[str, Any]:
    """The bare loop over each dataset (split over ``processes`` when more than one),
    ``attempts`` times; the fastest attempt of each dataset counts."""
    per_dataset: dict[str, dict[str, Any]] = {}
    for name, root in roots.items():
        paths = image_files(root)
        best: dict[str, Any] | None = None
        for _ in range(attempts):
            cpu_before = own_cpu_seconds() + children_cpu_seconds()
            if processes == 1:
                decoded, seconds = timed(partial(bare_loop, paths))
            else:
                decoded, seconds = timed(partial(split_bare_loop, paths, processes))
            cpu = own_cpu_seconds() + children_cpu_seconds() - cpu_before
            rates = throughput(decoded, seconds, cpu)
            if best is None or rates["images_per_s"] > best["images_per_s"]:
                best = rates
        assert best is not None
        per_dataset[name] = best
    return {
        **throughput(
            sum(d["images"] for d in per_dataset.values()),
            sum(d["seconds"] for d in per_dataset.values()),
            sum(d["cpu_seconds"] for d in per_dataset.values()),
        ),
        "datasets": per_dataset,
    }
