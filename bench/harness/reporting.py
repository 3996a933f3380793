"""The start and the end of every benchmark run: threads that share the machine's cores politely,
wall-clock timing, the machine facts kept next to the numbers, plain text tables, and the
results file ``bench/results/<name>.json``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parents[1] / "results"


def share_cores() -> None:
    """Call before torch loads OpenMP: threads that spin while waiting for each other are many
    times slower when the machine's few cores are shared with other work."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class Timer:
    """Wall-clock seconds since construction."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.started


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages, rounded to two decimals."""
    return [round(x, 2) for x in os.getloadavg()]


def environment() -> dict[str, Any]:
    """Machine facts worth keeping next to the numbers of a torch benchmark."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": load,
        "machine": platform.machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_results(name: str, payload: dict[str, Any], *, out: Path | None = None) -> Path:
    """Writes ``payload`` as JSON (numpy values and paths as plain ones) to ``out``, by default
    ``bench/results/<name>.json``; returns the path written."""
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain fixed-width text table; floats with four decimals, None as ``-``."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, rule, *body])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
