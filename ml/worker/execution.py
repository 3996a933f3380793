"""Where a job's task runs: here on the job's device (:class:`JobRuntime`), or on several
processes through ``torchrun`` (:mod:`ml.worker.ddp`); :func:`execute` picks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from numpy.typing import NDArray

from ml.core.protocol.messages import Progress
from ml.runtime import JobStopped
from ml.training.interface import TrainingProgress
from ml.worker.compute import run_task
from ml.worker.context import JobContext
from ml.worker.task import Outcome, Task

__all__ = ["JobRuntime", "execute", "training_progress"]


def training_progress(progress: TrainingProgress, *, world: int = 1) -> Progress:
    """A training step as the server's progress message (1-based epoch; the throughput of all
    ``world`` ranks)."""
    return Progress(
        phase="train",
        epoch=progress.epoch + 1,
        epochs=-(-progress.total_steps // max(progress.steps_per_epoch, 1)),
        step=progress.step,
        steps=progress.steps_per_epoch,
        images_per_second=progress.images_per_second * world,
    )


class JobRuntime:
    """Runs a task in this process: progress goes straight to the job context, and a stop it
    asks for (cancel, shutdown, lost lease) stops the run at the next step boundary."""

    rank = 0
    world = 1

    def __init__(self, context: JobContext) -> None:
        self.context = context
        self.device = context.device

    def training(self, progress: TrainingProgress) -> bool:
        return self._report(training_progress(progress))

    def predicting(self, done: int, total: int) -> bool:
        return self._report(Progress(phase="predict", step=done, steps=total))

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.context.epoch_metrics(epoch + 1, values)

    def stop_reason(self) -> str:
        return self.context.stop_reason or "stopped"

    def any_rank(self, flag: bool) -> bool:
        return flag

    def gather(self, parts: Sequence[NDArray[Any]], name: str) -> list[NDArray[Any]] | None:
        raise AssertionError("a single process gathers nothing")

    def _report(self, progress: Progress) -> bool:
        try:
            self.context.report(progress)
        except JobStopped:
            return True
        return False


def execute(context: JobContext, task: Task) -> Outcome:
    """Runs ``task`` here, or with one process per GPU (``--gpus``) / CPU process (``--procs``).
    A head on embeddings always runs here: it trains in seconds on one device."""
    on_embeddings = task.recipe is not None and task.recipe.uses_embeddings
    if context.procs > 1 and not on_embeddings:
        from ml.worker import ddp

        return ddp.launch(context, task)
    return run_task(task, JobRuntime(context))
