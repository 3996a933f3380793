"""The seam between the ML steps and where they run: progress, stops and ranks.

The step functions (:func:`ml.crossval.train_fold`, :func:`ml.junk.train_junk_classifier`,
:func:`ml.final.final_targets` with :func:`ml.parallel.train` …) are the same whether the
``thresher ml`` CLI, the GPU worker or a rank of a ``torchrun`` launch calls them; what differs is
the :class:`Runtime` they are handed:

* :class:`LocalRuntime`: this process on one device, progress to an optional callback (the CLI);
* ``ml.worker.execution.JobRuntime``: a worker job on one device, progress and stops through
  the job's lease;
* ``ml.worker.ddp.RankRuntime``: one rank of a multi-process run.

A step stops at a step boundary by raising :class:`JobStopped` with the runtime's reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from numpy.typing import NDArray

from ml.predict import resolve_device
from ml.training.interface import Control, TrainingCallback, TrainingProgress

__all__ = ["JobStopped", "LocalRuntime", "Runtime"]


class JobStopped(Exception):
    """The run must stop at this step boundary; ``reason`` says why (for a worker job, a
    ``ml.worker.context.StopReason`` value)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Runtime(Protocol):
    """Where a computation reports, when it must stop, and which share of the work is this
    process's (``rank`` of ``world``)."""

    @property
    def rank(self) -> int: ...

    @property
    def world(self) -> int: ...

    @property
    def device(self) -> str:
        """The torch device, e.g. ``cuda:0`` or ``cpu``."""

    def training(self, progress: TrainingProgress) -> bool:
        """Records a training step; True when the run must stop at this step boundary."""

    def predicting(self, done: int, total: int) -> bool:
        """Records prediction progress; True when the run must stop."""

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        """Records the metrics of a finished 0-based ``epoch``."""

    def stop_reason(self) -> str: ...

    def any_rank(self, flag: bool) -> bool:
        """True when ``flag`` is true on any rank (a collective: every rank must call it)."""

    def gather(self, parts: Sequence[NDArray[Any]], name: str) -> list[NDArray[Any]] | None:
        """On rank 0: ``parts[i]`` of every rank concatenated in rank order, for each ``i``;
        None on the other ranks (a collective: every rank must call it)."""


class LocalRuntime:
    """This process on ``device`` (default: CUDA when there is one, else the CPU); a training
    ``callback`` may stop the run (``Control.STOP``)."""

    rank = 0
    world = 1

    def __init__(self, device: str | None = None, callback: TrainingCallback | None = None) -> None:
        self.device = str(resolve_device(device))
        self.callback = callback

    def training(self, progress: TrainingProgress) -> bool:
        return self.callback is not None and self.callback(progress) is Control.STOP

    def predicting(self, done: int, total: int) -> bool:
        return False

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        return None

    def stop_reason(self) -> str:
        return "stopped"

    def any_rank(self, flag: bool) -> bool:
        return flag

    def gather(self, parts: Sequence[NDArray[Any]], name: str) -> list[NDArray[Any]] | None:
        raise AssertionError("a single process gathers nothing")
