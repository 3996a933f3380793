"""Running a benchmark script the way ``make bench`` does, for the smoke tests of its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_bench(script: str, *args: str, out: Path, timeout: float) -> tuple[dict[str, Any], str]:
    """Runs ``bench/<script>`` from the repository root with ``args`` and ``--out out``, and
    checks that it succeeded; the JSON report it wrote, and its stdout."""
    done = subprocess.run(
        [sys.executable, f"bench/{script}", *args, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())
    return report, done.stdout
