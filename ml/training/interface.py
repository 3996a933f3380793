"""What a training run takes and gives back besides its data: the validation set, the progress
reports and the stop signal, the result, and the error it raises.

Shared by :func:`ml.train.train_model` and :func:`ml.head_training.train_head`. The names say
"training" where the wire protocol (:mod:`ml.core.protocol.messages`) has a message of a similar
name: a :class:`TrainingProgress` is reported in-process after every step, a protocol
``Progress`` is sent to the server.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ml.checkpoint import TrainedModel
from ml.heads import TrainedHead
from ml.metrics import EvalReport

__all__ = [
    "Control",
    "EpochSummary",
    "EvalSet",
    "TrainResult",
    "TrainingCallback",
    "TrainingError",
    "TrainingProgress",
]


class TrainingError(RuntimeError):
    """The data or the checkpoint does not allow training as asked."""


class Control(enum.Enum):
    """What a progress callback asks the loop to do next."""

    CONTINUE = "continue"
    STOP = "stop"


@dataclass(frozen=True)
class EpochSummary:
    """One epoch's summary.

    Attributes:
        epoch: 0-based.
        train_loss: mean training loss over the epoch's steps (as optimised: smoothing,
            adjustment, flooding and distillation included).
        train_accuracy: fraction of training images whose top prediction is their label
            (before mixing), on the augmented images.
        learning_rate: at the epoch's last step.
        images_per_second: training throughput, data loading included.
        seconds: wall time of the epoch (validation excluded).
        steps: optimizer steps in the epoch.
        val: the validation report, when a validation set is given.
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    learning_rate: float
    images_per_second: float
    seconds: float
    steps: int
    val: EvalReport | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochSummary:
        values = dict(data)
        if values.get("val") is not None:
            values["val"] = EvalReport(**values["val"])
        return cls(**values)


@dataclass(frozen=True)
class TrainingProgress:
    """Reported to the callback after every optimizer step.

    Attributes:
        epoch: 0-based epoch; ``step``: steps done in this epoch (1-based count).
        global_step, total_steps: steps done in the run / planned.
        images_per_second: throughput since the epoch (or the resumed part of it) began.
        loss: this step's loss; ``learning_rate``: this step's learning rate.
        epoch_end: the epoch's summary, set only on the report after its last step.
    """

    epoch: int
    step: int
    steps_per_epoch: int
    global_step: int
    total_steps: int
    images_per_second: float
    loss: float
    learning_rate: float
    epoch_end: EpochSummary | None = None


TrainingCallback = Callable[[TrainingProgress], "Control | None"]
"""Receives every :class:`TrainingProgress`; returning :attr:`Control.STOP` stops the run."""


@dataclass(frozen=True)
class EvalSet:
    """Validation data: rows ``indices`` (default all) of ``images`` with labels ``[N]``."""

    images: NDArray[np.uint8]
    labels: NDArray[np.integer]
    indices: NDArray[np.integer] | None = None

    def evaluated_labels(self) -> NDArray[np.int64]:
        """The labels of the evaluated rows, ``[M]``, in the order of ``indices``."""
        labels = np.asarray(self.labels, dtype=np.int64)
        if self.indices is None:
            return labels
        return labels[np.asarray(self.indices, dtype=np.int64)]


@dataclass
class TrainResult:
    """What a training run returns.

    Attributes:
        trained: the model for inference (EMA weights when EMA is on), on the training device;
            a :class:`~ml.heads.TrainedHead` for a recipe with a head.
        history: summaries of every completed epoch, resumed ones included.
        stopped: the callback stopped the run before its last epoch.
        checkpoint: the last checkpoint written, if any.
        class_counts: training samples per class ``[C]`` (before any resampling).
    """

    trained: TrainedModel | TrainedHead
    history: list[EpochSummary]
    stopped: bool
    checkpoint: Path | None
    class_counts: NDArray[np.int64]
