"""Running one job on several GPUs (or CPU processes) with ``torchrun``.

The worker process keeps the lease, the heartbeats and all HTTP; it writes the task (spec,
recipe, the local paths of manifests, decoded caches and models) to ``task.json`` and starts
``python -m torch.distributed.run --standalone --nproc-per-node N -m ml.worker.ddp task.json``.
Each rank runs the same :func:`ml.worker.compute.run_task` with a :class:`RankRuntime`:

* backend ``nccl`` on CUDA (rank ``r`` on ``cuda:r`` of the ``--gpus`` list, through
  ``CUDA_VISIBLE_DEVICES``), ``gloo`` on CPU: the only differences between the two;
* rank 0 appends progress, epoch metrics and log lines to ``events.jsonl``, which the worker
  forwards to the server;
* to stop (cancel, SIGTERM), the worker creates the file ``STOP``; rank 0 sees it at its next
  step and the decision is all-reduced, so every rank stops at the same step boundary;
* rank 0 writes the outcome (``outcome.json``, ``results.thrb``, the model checkpoint) to the
  task's output directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray

from ml.core.protocol.bundles import ResultChunk, decode_manifest, decode_results, encode_results
from ml.core.protocol.jobs import parse_spec, spec_json
from ml.core.protocol.messages import Progress
from ml.logging import configure_logging, get_logger
from ml.recipes import recipe_from_dict
from ml.runtime import JobStopped
from ml.training.interface import TrainingProgress
from ml.worker.compute import run_task
from ml.worker.context import JobContext
from ml.worker.execution import training_progress
from ml.worker.task import Outcome, SampleSet, Task

__all__ = ["RankRuntime", "launch", "main"]

log = get_logger(__name__)

TASK_FILE = "task.json"
EVENTS_FILE = "events.jsonl"
STOP_FILE = "STOP"
STOPPED_FILE = "stopped.json"
OUTCOME_FILE = "outcome.json"
RESULTS_FILE = "results.thrb"
LOG_FILE = "torchrun.log"


class DistributedRunFailed(RuntimeError):
    """``torchrun`` or one of its ranks failed."""


# --- the worker's side ------------------------------------------------------------------------


def _set_paths(data: SampleSet | None) -> dict[str, str | None] | None:
    if data is None:
        return None
    if data.manifest_path is None:
        raise DistributedRunFailed("a multi-process run needs its manifests as files")
    images = None if data.images_path is None else str(data.images_path)
    return {"manifest": str(data.manifest_path), "images": images}


def write_task(task: Task, directory: Path) -> Path:
    payload = {
        "spec": spec_json(task.spec),
        "out_dir": str(task.out_dir),
        "recipe": None if task.recipe is None else task.recipe.model_dump(mode="json"),
        "train": _set_paths(task.train),
        "predict": _set_paths(task.predict),
        "eval": _set_paths(task.eval),
        "model_dir": None if task.model_dir is None else str(task.model_dir),
        "teacher_dirs": [str(path) for path in task.teacher_dirs],
    }
    path = directory / TASK_FILE
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def torchrun_command(procs: int, task_file: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc-per-node={procs}",
        "-m",
        "ml.worker.ddp",
        str(task_file),
    ]


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the worker dies (Linux), so a killed worker
    leaves no training processes behind."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def launch(context: JobContext, task: Task) -> Outcome:
    """Runs ``task`` on ``context.procs`` processes; forwards their progress to ``context``."""
    run_dir = context.work_dir / "ddp"
    if run_dir.exists():
        for stale in (STOP_FILE, STOPPED_FILE, EVENTS_FILE, OUTCOME_FILE):
            (run_dir / stale).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    task_file = write_task(task, run_dir)
    env = dict(os.environ)
    cuda = context.device.startswith("cuda")
    if cuda:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in context.gpus)
    env["THRESHER_DDP_DEVICE"] = "cuda" if cuda else "cpu"
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // context.procs)))
    command = torchrun_command(context.procs, task_file)
    log.info("worker.ddp.launch", procs=context.procs, device=env["THRESHER_DDP_DEVICE"])
    with (run_dir / LOG_FILE).open("w", encoding="utf-8") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            # Its own session: a Ctrl+C or SIGTERM meant for the worker does not kill the ranks
            # mid-step; the worker stops them at a step boundary through the STOP file.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        events = _EventReader(run_dir / EVENTS_FILE)
        stop_written = False
        try:
            while process.poll() is None:
                events.forward(context)
                if context.stop_reason is not None and not stop_written:
                    (run_dir / STOP_FILE).touch()
                    stop_written = True
                time.sleep(0.2)
        except BaseException:
            process.terminate()
            process.wait(timeout=60)
            raise
        events.forward(context)
    if (run_dir / STOPPED_FILE).is_file():
        raise JobStopped(context.stop_reason or "stopped")
    if process.returncode != 0:
        tail = (run_dir / LOG_FILE).read_text(encoding="utf-8", errors="replace")[-4000:]
        raise DistributedRunFailed(f"torchrun exited with status {process.returncode}:\n{tail}")
    return read_outcome(task.out_dir)


class _EventReader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def forward(self, context: JobContext) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data.rfind(b"\n") + 1
        self.offset += complete
        for line in data[:complete].splitlines():
            event = json.loads(line)
            kind = event.pop("type")
            if kind == "progress":
                with contextlib.suppress(JobStopped):  # the STOP file tells the ranks
                    context.report(Progress(**event))
            elif kind == "epoch":
                context.epoch_metrics(int(event["epoch"]), event["values"])
            elif kind == "log":
                context.log_line(str(event["line"]))


def write_outcome(outcome: Outcome, out_dir: Path) -> None:
    if outcome.results is not None:
        (out_dir / RESULTS_FILE).write_bytes(encode_results(outcome.results))
    payload = {
        "model_dir": None if outcome.model_dir is None else str(outcome.model_dir),
        "files": {name: str(path) for name, path in outcome.files.items()},
        "summary": outcome.summary,
        "results": outcome.results is not None,
    }
    (out_dir / OUTCOME_FILE).write_text(json.dumps(payload, default=float), encoding="utf-8")


def read_outcome(out_dir: Path) -> Outcome:
    payload = json.loads((out_dir / OUTCOME_FILE).read_text(encoding="utf-8"))
    results: ResultChunk | None = None
    if payload["results"]:
        results = decode_results((out_dir / RESULTS_FILE).read_bytes())
    return Outcome(
        results=results,
        model_dir=None if payload["model_dir"] is None else Path(payload["model_dir"]),
        files={name: Path(path) for name, path in payload["files"].items()},
        summary=payload["summary"],
    )


# --- each rank's side -------------------------------------------------------------------------


class RankRuntime:
    """One rank of a ``torchrun`` launch (see the module docstring)."""

    def __init__(self, run_dir: Path, out_dir: Path) -> None:
        import torch
        import torch.distributed as dist

        self.rank = int(os.environ["RANK"])
        self.world = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = os.environ.get("THRESHER_DDP_DEVICE") == "cuda"
        if cuda:
            torch.cuda.set_device(local_rank)
            self.device = f"cuda:{local_rank}"
        else:
            self.device = "cpu"
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        self.run_dir = run_dir
        self.out_dir = out_dir
        self._events: TextIO | None = (
            (run_dir / EVENTS_FILE).open("a", encoding="utf-8") if self.rank == 0 else None
        )

    def close(self) -> None:
        import torch.distributed as dist

        if self._events is not None:
            self._events.close()
        dist.destroy_process_group()

    def emit(self, kind: str, **fields: Any) -> None:
        if self._events is not None:
            self._events.write(json.dumps({"type": kind, **fields}) + "\n")
            self._events.flush()

    def training(self, progress: TrainingProgress) -> bool:
        self.emit("progress", **training_progress(progress, world=self.world).model_dump())
        return self._stop_requested()

    def predicting(self, done: int, total: int) -> bool:
        self.emit("progress", phase="predict", step=done, steps=total)
        return self._stop_requested()

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.emit("epoch", epoch=epoch + 1, values=values)

    def stop_reason(self) -> str:
        return "stopped"

    def _stop_requested(self) -> bool:
        return self.rank == 0 and (self.run_dir / STOP_FILE).exists()

    def any_rank(self, flag: bool) -> bool:
        import torch
        import torch.distributed as dist

        value = torch.tensor([1 if flag else 0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def gather(self, parts: Sequence[NDArray[Any]], name: str) -> list[NDArray[Any]] | None:
        import torch.distributed as dist

        mine = self.out_dir / f".gather-{name}-{self.rank}.npz"
        np.savez(mine, *parts)
        dist.barrier()
        gathered: list[NDArray[Any]] | None = None
        if self.rank == 0:
            loaded = []
            for rank in range(self.world):
                with np.load(self.out_dir / f".gather-{name}-{rank}.npz") as data:
                    loaded.append([data[f"arr_{i}"] for i in range(len(parts))])
            gathered = [np.concatenate([ranks[i] for ranks in loaded]) for i in range(len(parts))]
        dist.barrier()
        mine.unlink(missing_ok=True)
        return gathered


class _EventLogHandler(logging.Handler):
    def __init__(self, runtime: RankRuntime) -> None:
        super().__init__(level=logging.INFO)
        self.runtime = runtime
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [rank 0] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.runtime.emit("log", line=self.format(record))


def _load_set(paths: dict[str, str | None] | None) -> SampleSet | None:
    if paths is None:
        return None
    manifest_path = Path(str(paths["manifest"]))
    images_path = None if paths["images"] is None else Path(paths["images"])
    images = (
        np.empty((0, 1, 1, 3), np.uint8)
        if images_path is None
        else np.load(images_path, mmap_mode="r")
    )
    return SampleSet(
        manifest=decode_manifest(manifest_path.read_bytes()),
        images=images,
        manifest_path=manifest_path,
        images_path=images_path,
    )


def load_task(path: Path) -> Task:
    payload = json.loads(path.read_text(encoding="utf-8"))
    recipe = None if payload["recipe"] is None else recipe_from_dict(payload["recipe"])
    return Task(
        spec=parse_spec(payload["spec"]),
        out_dir=Path(payload["out_dir"]),
        recipe=recipe,
        train=_load_set(payload["train"]),
        predict=_load_set(payload["predict"]),
        eval=_load_set(payload["eval"]),
        model_dir=None if payload["model_dir"] is None else Path(payload["model_dir"]),
        teacher_dirs=[Path(p) for p in payload["teacher_dirs"]],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """A rank's entry point (``python -m ml.worker.ddp TASK_FILE`` under torchrun)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    task_file = Path(arguments[0])
    configure_logging(os.environ.get("THRESHER_LOG_FORMAT", "console"))
    task = load_task(task_file)
    runtime = RankRuntime(task_file.parent, task.out_dir)
    handler = _EventLogHandler(runtime)
    if runtime.rank == 0:
        logging.getLogger("ml").addHandler(handler)
    try:
        outcome = run_task(task, runtime)
        if runtime.rank == 0:
            write_outcome(outcome, task.out_dir)
    except JobStopped:
        if runtime.rank == 0:
            (task_file.parent / STOPPED_FILE).write_text("{}", encoding="utf-8")
    finally:
        logging.getLogger("ml").removeHandler(handler)
        runtime.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
