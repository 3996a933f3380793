"""Runs the benchmarks one after another: ``python bench/run.py [NAME ...]``.

Each benchmark is a script in this folder that prints its own table and writes
``bench/results/<name>.json``. With no names, all of them run, in the order below.
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
