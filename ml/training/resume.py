"""Where an image run stands, saved as a checkpoint and resumed from one.

:func:`ml.train.train_model` saves after every epoch and when stopped; a later call continues
from the newest checkpoint, mid-epoch included, with the same weights, optimizer state,
position and history. A checkpoint resumes only the run it was made by: the same recipe and
the same training rows and labels (:class:`RunIdentity`).

A head (:mod:`ml.head_training`) is saved once, when it has finished; a later run of the same
recipe on the same data reuses it (:func:`save_finished_head`, :func:`finished_head`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from ml.checkpoint import (
    CheckpointError,
    TrainedModel,
    TrainState,
    latest_checkpoint,
    load_train_state,
    load_trained_model,
    save_checkpoint,
)
from ml.ema import ModelEma
from ml.heads import TrainedHead, load_model, save_head
from ml.logging import get_logger
from ml.training.interface import EpochSummary, TrainingError, TrainResult

__all__ = [
    "RunIdentity",
    "RunState",
    "finished_head",
    "resume_run",
    "save_finished_head",
    "save_run",
]

log = get_logger(__name__)


@dataclass(frozen=True)
class RunIdentity:
    """What a checkpoint must match to be resumed, and records besides the weights.

    Attributes:
        recipe_yaml: the resolved recipe.
        fingerprint: :func:`~ml.training.batches.training_fingerprint` of the training rows.
        class_counts: training samples per class ``[C]``.
    """

    recipe_yaml: str
    fingerprint: str
    num_classes: int
    class_counts: NDArray[np.int64]


@dataclass
class RunState:
    """Where a run stands: what the steps of :func:`ml.train.train_model` pass between them.

    Attributes:
        epoch: the epoch in progress (0-based); ``step``: the steps done in it.
        global_step: the steps done in the run.
        history: summaries of the completed epochs.
        checkpoint: the last checkpoint written or resumed from.
        stopped: the progress callback asked to stop.
    """

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    history: list[EpochSummary] = field(default_factory=list)
    checkpoint: Path | None = None
    stopped: bool = False


def resume_run(
    checkpoint_dir: str | Path,
    identity: RunIdentity,
    *,
    model: nn.Module,
    ema: ModelEma | None,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> RunState:
    """The state of the newest checkpoint in ``checkpoint_dir``, its weights and optimizer
    state loaded into ``model``, ``ema`` and ``optimizer``; a fresh state when there is none.

    Raises:
        TrainingError: the checkpoint was made with another recipe or training set.
        CheckpointError: it lacks the raw weights of an EMA run.
    """
    checkpoint = latest_checkpoint(checkpoint_dir)
    if checkpoint is None:
        return RunState()
    state = load_train_state(checkpoint)
    if state.recipe_yaml != identity.recipe_yaml:
        raise TrainingError(
            f"{checkpoint} was made with another recipe; use a fresh checkpoint_dir or resume=False"
        )
    if state.fingerprint != identity.fingerprint:
        raise TrainingError(f"{checkpoint} was made on another training set or labels")
    trained = load_trained_model(checkpoint, device=device)
    if ema is not None:
        ema.module.load_state_dict(trained.model.state_dict())
        if state.raw_weights is None:
            raise CheckpointError(f"{checkpoint} lacks the raw weights of an EMA run")
        model.load_state_dict(state.raw_weights)
    else:
        model.load_state_dict(trained.model.state_dict())
    optimizer.load_state_dict(state.optimizer)
    log.info("ml.train.resumed", checkpoint=checkpoint, epoch=state.epoch, step=state.step)
    return RunState(
        epoch=state.epoch,
        step=state.step,
        global_step=state.global_step,
        history=[EpochSummary.from_dict(h) for h in state.history],
        checkpoint=checkpoint,
    )


def save_run(
    checkpoint_dir: str | Path,
    run: RunState,
    identity: RunIdentity,
    *,
    trained: TrainedModel,
    model: nn.Module,
    ema: ModelEma | None,
    optimizer: torch.optim.Optimizer,
) -> Path:
    """Save ``trained`` with the run's position, history and identity (and the raw weights
    under EMA) as ``checkpoint_dir/step-<global step>``; returns that directory."""
    return save_checkpoint(
        checkpoint_dir,
        trained=trained,
        train_state=TrainState(
            epoch=run.epoch,
            step=run.step,
            global_step=run.global_step,
            raw_weights=model.state_dict() if ema is not None else None,
            optimizer={},
            history=[h.to_dict() for h in run.history],
            fingerprint=identity.fingerprint,
            recipe_yaml=identity.recipe_yaml,
            extra={
                "class_counts": identity.class_counts.tolist(),
                "num_classes": identity.num_classes,
            },
        ),
        optimizer=optimizer,
    )


def finished_head(
    run_dir: Path | None, identity: RunIdentity, device: torch.device
) -> TrainResult | None:
    """The result of a finished head run of the same recipe on the same data in ``run_dir``
    (saved by :func:`save_finished_head`), if there is one."""
    if run_dir is None:
        return None
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None or not (checkpoint / "train_state.json").is_file():
        return None
    state = json.loads((checkpoint / "train_state.json").read_text(encoding="utf-8"))
    recipe_file = checkpoint / "recipe.yaml"
    if state.get("fingerprint") != identity.fingerprint or not recipe_file.is_file():
        return None
    if recipe_file.read_text(encoding="utf-8") != identity.recipe_yaml:
        return None
    trained = load_model(checkpoint, device=device)
    if not isinstance(trained, TrainedHead):
        return None
    history = [EpochSummary.from_dict(h) for h in state.get("history", [])]
    return TrainResult(trained, history, False, checkpoint, identity.class_counts)


def save_finished_head(
    run_dir: Path, trained: TrainedHead, identity: RunIdentity, run: RunState
) -> Path:
    """Save a head that finished training as ``run_dir/step-<global step>``, with what
    :func:`finished_head` needs to reuse it; returns that directory."""
    return save_head(
        run_dir,
        trained,
        recipe_yaml=identity.recipe_yaml,
        state={
            "fingerprint": identity.fingerprint,
            "history": [h.to_dict() for h in run.history],
            "class_counts": identity.class_counts.tolist(),
        },
        step=run.global_step,
    )
