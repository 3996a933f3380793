"""Runs the benchmarks one after another: ``python bench/run.py [NAME ...]``.

Each benchmark is a script in this folder that prints its own table and writes
``bench/results/<name>.json``. With no names, all of them run, in the order below.

Where things live: a script's own modules share its prefix (``review_load.py`` runs the
``review_*`` modules, ``pipeline.py`` the ``pipeline_*`` ones, ``import_bench.py``
``import_measure.py``, ``ml_label_cleaning.py`` ``ml_label_cleaning_loop.py``, ``gpu_check.py``
the ``gpu_*`` ones); ``ml_common.py`` holds the CIFAR data and embeddings of the ML benchmarks;
``harness/`` what every benchmark and the real-process tests share (servers, workers,
throwaway databases, the loop's stack, results files). ``gpu_check.py`` needs a GPU and is
run on its own, not from here.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name → script, in the order `make bench` runs them (fast ones first).
BENCHMARKS = {
    "import": "import_bench.py",
    "jobs": "jobs_ingest.py",
    "review": "review_load.py",
    "label-cleaning": "ml_label_cleaning.py",
    "long-tail": "ml_long_tail.py",
    "pipeline": "pipeline.py",
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
        return 2
    failed = []
    for name in names:
        script = HERE / BENCHMARKS[name]
        print(f"\n=== {name} ({script.name}) ===", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        elapsed = time.perf_counter() - started
        print(f"=== {name}: exit {code} after {elapsed:.0f} s ===", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
