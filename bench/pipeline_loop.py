"""One run of the cleaning loop for the pipeline benchmark: a fresh stack (server, worker,
simulated annotators) on a SQLite database, the dataset imported, auto mode until the loop is
done or has left the junk stage, and the export; with timestamped progress lines.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness.databases import migrated_database
from bench.harness.labelled_sets import RealSet
from bench.harness.reporting import Timer
from bench.harness.stack import Stack, running_stack
from bench.ml_common import WORK


class Log:
    """Timestamped progress lines, and the rounds of a pipeline as they change."""

    def __init__(self) -> None:
        self.clock = Timer()
        self.seen: dict[str, str] = {}

    def __call__(self, message: str) -> None:
        print(f"[{self.clock():5.0f} s] {message}", flush=True)

    def rounds(self, status: dict[str, Any]) -> None:
        for summary in status["rounds"]:
            source, state = summary["source"], summary["state"]
            if self.seen.get(source) == state:
                continue
            self.seen[source] = state
            stats = summary.get("stats") or {}
            brief = {k: stats[k] for k in _ROUND_NUMBERS if isinstance(stats.get(k), int | float)}
            self(f"  {source}: {state} {brief if brief else ''}")


_ROUND_NUMBERS = (
    "samples",
    "kept",
    "rejected",
    "train",
    "predict",
    "pulled_back",
    "sampled",
    "queued",
    "decided",
    "accepted",
    "relabelled",
    "flagged",
    "junk",
    "eval",
)


@dataclass
class LoopRun:
    """What a pipeline run leaves for the numbers: its last status, the exported manifest rows,
    the decisions of the simulated annotators, the export folder."""

    status: dict[str, Any]
    rows: list[dict[str, str]]
    verdicts: Counter[str]
    export: Path
    seconds: float


def _post(stack: Stack, path: str, body: dict[str, Any], method: str = "POST") -> None:
    response = stack.http.request(method, path, json=body)
    if response.status_code >= 400:
        raise SystemExit(f"{method} {path} failed: {response.status_code} {response.text}")


def run_loop(
    log: Log,
    work: Path,
    real: RealSet,
    *,
    name: str,
    config: dict[str, Any],
    label_stage: bool,
    humans: bool,
    error_rate: float,
    timeout: float,
    stop_after_junk: bool = False,
) -> LoopRun:
    """Imports ``real`` into a fresh stack under ``work``, runs the pipeline in auto mode
    (from the label stage when ``label_stage``) with simulated annotators when ``humans``,
    until it is done (or, ``stop_after_junk``, has left the junk stage), and exports it."""
    clock = Timer()
    log.seen.clear()
    work.mkdir(parents=True, exist_ok=True)
    from app.db import create_db_engine, create_session_factory
    from ml.embeddings import default_embeddings_dir

    with (
        migrated_database("sqlite", work) as url,
        running_stack(
            url,
            create_session_factory(create_db_engine(url)),
            work,
            embeddings=default_embeddings_dir(),
            import_roots=(work, real.manifest.parent, WORK),
        ) as stack,
    ):
        dataset_id = stack.import_dataset(name, real.manifest, root=real.root, timeout=900)
        log(f"{name}: imported in {clock():.0f} s")
        _post(stack, f"/api/pipelines/{dataset_id}", {"config": config, "auto": not label_stage})
        if label_stage:
            _post(stack, f"/api/pipelines/{dataset_id}", {"stage": "label", "auto": True}, "PATCH")
        # Per-image answers are wrong at the error rate; a whole class's keep/drop is taken as
        # double-checked (one wrong drop would remove a tenth of CIFAR and swamp the comparison).
        join = (
            stack.simulate(name, real.truth, error_rate=error_rate, class_error_rate=0.0)
            if humans
            else None
        )
        try:
            _wait(log, stack, dataset_id, timeout=timeout, stop_after_junk=stop_after_junk)
        finally:
            if join is not None:
                join()
        status = stack.status(dataset_id)
        seconds = clock()
        out = work / "export"
        rows = stack.export(dataset_id, out, require_model=not stop_after_junk)
        verdicts: Counter[str] = Counter()
        for stats in stack.simulations:
            verdicts.update(stats.decisions)
    return LoopRun(status, rows, verdicts, out, seconds)


def _wait(
    log: Log, stack: Stack, dataset_id: int, *, timeout: float, stop_after_junk: bool
) -> None:
    """Until the loop is done or, ``stop_after_junk``, has left the junk stage: then auto
    mode is switched off and the workers stopped (the label stage's jobs are not part of that
    measurement)."""
    if not stop_after_junk:
        stack.wait_done(dataset_id, timeout=timeout, on_poll=log.rounds)
        return
    stack.wait_until(
        dataset_id, lambda s: s["stage"] != "junk", timeout=timeout, on_poll=log.rounds
    )
    _post(stack, f"/api/pipelines/{dataset_id}", {"auto": False}, "PATCH")
    for worker in stack.workers:
        worker.stop()


def decisions_by_kind(status: dict[str, Any]) -> dict[str, int]:
    """Tasks decided, by kind of task, from the pipeline's queues."""
    return {q["kind"]: int(q["done"]) for q in status["queues"] if q["done"]}
