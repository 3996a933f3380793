"""Training a head on cached embeddings (:mod:`ml.heads`): what :func:`ml.train.train_model`
runs for a recipe with a ``head``.

The features of the training rows live in memory as one float32 tensor, so an epoch is a few
matrix products: a head trains in seconds on a CPU. Everything a recipe can ask for that makes
sense on features applies:

* the class-balanced sampler or a seeded shuffle, per epoch
  (:class:`ml.training.batches.EpochOrder`);
* the three logit-adjustment forms (frozen log-prior bias, logit-adjusted loss, post-hoc);
* label smoothing, mixup in feature space, Flooding;
* distillation from teacher heads in the same embedding space (e.g. the fold models), computed
  on the (mixed) features of each batch;
* EMA of the weights, SGD or AdamW with warmup and cosine decay.

Besides hard labels, rows may carry **soft targets** (a distribution over classes, e.g. the fold
ensemble's out-of-fold prediction for a rejected sample) and **sample weights**. A row whose
label is -1 trains only on its soft target: its given label never reaches the loss.

**Determinism and resume.** Initialisation, epoch order, dropout and mixing derive from the
recipe's seed. A head is saved once, when training ends (``checkpoint_dir/step-N``); a later call
with the same recipe and data loads it instead of training again. Training is too short to be
worth resuming midway: a stopped run saves nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from ml.checkpoint import InferenceAdjustment
from ml.ema import ModelEma
from ml.embeddings import EmbeddingArray, EmbeddingSpace
from ml.heads import HeadNet, HeadTargets, TrainedHead, head_logits
from ml.logging import get_logger
from ml.metrics import evaluate
from ml.recipes import Recipe, dump_recipe
from ml.training.batches import EpochOrder, training_rows
from ml.training.head_data import head_fingerprint, head_targets, mix_features
from ml.training.interface import (
    Control,
    EpochSummary,
    EvalSet,
    TrainingCallback,
    TrainingError,
    TrainingProgress,
    TrainResult,
)
from ml.training.objective import HeadTeachers, Objective
from ml.training.resume import RunIdentity, RunState, finished_head, save_finished_head
from ml.training.setup import build_ema, build_optimizer, set_scheduled_lr, setup_logit_adjustment

__all__ = ["train_head"]

log = get_logger(__name__)


@dataclass
class _HeadRun:
    """What stays fixed through a head's training: the network, its EMA, optimizer and loss,
    the training rows' features on the device (``raw`` and ``normalised``, ``[M, D]``) with
    their targets ``[M, C]`` and weights ``[M]``, and the schedule."""

    recipe: Recipe
    space: EmbeddingSpace
    model: HeadNet
    ema: ModelEma | None
    optimizer: torch.optim.Optimizer
    objective: Objective
    prior: Tensor | None
    inference: InferenceAdjustment
    tau: float
    class_names: list[str] | None
    device: torch.device
    raw: Tensor
    normalised: Tensor
    soft_targets: Tensor
    weights: Tensor
    sampling: EpochOrder
    batch_size: int
    steps_per_epoch: int
    epochs: int
    generator: torch.Generator

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def warmup_steps(self) -> int:
        return round(self.recipe.schedule.warmup_epochs * self.steps_per_epoch)

    def trained(self) -> TrainedHead:
        """The head for inference: the EMA weights when EMA is on."""
        return TrainedHead(
            model=self.ema.module if self.ema is not None else self.model,  # type: ignore[arg-type]
            space=self.space,
            head=self.recipe.head,  # type: ignore[arg-type]
            dim=int(self.raw.shape[1]),
            num_classes=int(self.soft_targets.shape[1]),
            class_names=self.class_names,
            log_prior=self.prior,
            adjustment=self.inference,
            tau=self.tau,
        )


@dataclass
class _Tally:
    """Running totals of the epoch in progress."""

    lr: float
    started: float = field(default_factory=time.perf_counter)
    loss_total: float = 0.0
    loss_value: float = float("nan")
    correct: int = 0
    seen: int = 0


def train_head(
    recipe: Recipe,
    features: EmbeddingArray,
    labels: NDArray[np.integer] | Any,
    *,
    num_classes: int,
    indices: NDArray[np.integer] | Any | None = None,
    class_names: Any | None = None,
    val: EvalSet | None = None,
    device: str | torch.device | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    callback: TrainingCallback | None = None,
    targets: HeadTargets | None = None,
) -> TrainResult:
    """Train the recipe's head on ``features[indices]``.

    Args:
        recipe: a recipe with ``head``.
        features: ``[N, D]`` embeddings with their space (saved with the head).
        labels: ``[N]`` class ids; -1 for rows that learn only from ``targets.soft``.
        indices: the training rows (default all).
        val: validation features and labels (``EvalSet.images`` holds features).
        targets: soft targets and sample weights (see :class:`HeadTargets`).
        Others: as for :func:`ml.train.train_model`.

    Raises:
        TrainingError: bad inputs, or a teacher that is not a head in the same space.
    """
    label_array = _checked_labels(recipe, features, labels)
    rows = training_rows(features.shape[0], indices)
    target_device = torch.device(device) if device is not None else torch.device("cpu")
    extra = targets or HeadTargets()
    recipe_yaml = dump_recipe(recipe)
    fingerprint = head_fingerprint(label_array, rows, num_classes, features, extra)
    run_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    soft_targets, weights, classes = head_targets(label_array, rows, num_classes, extra)
    class_counts = np.bincount(classes, minlength=num_classes).astype(np.int64)
    identity = RunIdentity(recipe_yaml, fingerprint, num_classes, class_counts)
    if resume and (done := finished_head(run_dir, identity, target_device)):
        log.info("ml.head.reused", checkpoint=done.checkpoint)
        return done

    names = list(class_names) if class_names is not None else None
    run = _set_up(recipe, features, rows, soft_targets, weights, classes, names, target_device)
    state = RunState()
    while state.epoch < run.epochs and not state.stopped:
        _run_epoch(run, state, val=val, class_counts=class_counts, callback=callback)
    trained = run.trained()
    trained.model.eval()
    if run_dir is not None and not state.stopped:
        state.checkpoint = save_finished_head(run_dir, trained, identity, state)
    _log_trained(recipe, state.history)
    return TrainResult(trained, state.history, state.stopped, state.checkpoint, class_counts)


def _checked_labels(
    recipe: Recipe, features: EmbeddingArray, labels: NDArray[np.integer] | Any
) -> NDArray[np.int64]:
    """``labels`` as int64 ``[N]``, after checking that the recipe has a head and that
    ``features`` are embeddings ``[N, D]`` of as many rows."""
    if recipe.head is None:
        raise TrainingError(f"recipe {recipe.name} has no head")
    if not isinstance(features, EmbeddingArray):
        raise TrainingError(
            f"recipe {recipe.name} trains a head on embeddings: give an EmbeddingArray, not "
            f"{type(features).__name__} {getattr(features, 'shape', '')}"
        )
    label_array = np.asarray(labels, dtype=np.int64)
    if features.ndim != 2 or features.shape[0] != label_array.shape[0]:
        raise TrainingError(
            f"expected features [N, D] for {label_array.shape[0]} labels, got {features.shape}"
        )
    return label_array


def _set_up(
    recipe: Recipe,
    features: EmbeddingArray,
    rows: NDArray[np.int64],
    soft_targets: Tensor,
    weights: Tensor,
    classes: NDArray[np.int64],
    class_names: list[str] | None,
    device: torch.device,
) -> _HeadRun:
    """The seeded head, fitted to the training rows' features, with its EMA, optimizer and
    teachers; the features and targets on ``device``."""
    num_classes = int(soft_targets.shape[1])
    raw = torch.from_numpy(np.asarray(features[rows], dtype=np.float32)).to(device)
    sampling = EpochOrder(recipe, classes, num_classes)
    batch_size = min(recipe.batch_size, sampling.epoch_length)
    steps_per_epoch = max(1, sampling.epoch_length // batch_size)
    torch.manual_seed(recipe.seed)
    model = HeadNet(int(features.shape[1]), num_classes, recipe.head)  # type: ignore[arg-type]
    model.norm.fit(raw)
    prior, inference, tau = setup_logit_adjustment(recipe, sampling.prior_counts, model)
    model.to(device)
    ema = build_ema(recipe, model)
    optimizer = build_optimizer(recipe, model)
    teachers = (
        HeadTeachers(list(recipe.distillation.teachers), features.space, num_classes, device)
        if recipe.distillation is not None
        else None
    )
    with torch.no_grad():
        # The normalisation is fixed once fitted: apply it once, not at every step.
        normalised = model.norm(raw)
    return _HeadRun(
        recipe=recipe,
        space=features.space,
        model=model,
        ema=ema,
        optimizer=optimizer,
        objective=Objective(
            recipe, num_classes, prior, teachers.logits if teachers else None, device
        ),
        prior=prior,
        inference=inference,
        tau=tau,
        class_names=class_names,
        device=device,
        raw=raw,
        normalised=normalised,
        soft_targets=soft_targets.to(device),
        weights=weights.to(device),
        sampling=sampling,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        epochs=recipe.epochs_for(steps_per_epoch),
        generator=torch.Generator().manual_seed(recipe.seed),
    )


def _run_epoch(
    run: _HeadRun,
    state: RunState,
    *,
    val: EvalSet | None,
    class_counts: NDArray[np.int64],
    callback: TrainingCallback | None,
) -> None:
    """Train epoch ``state.epoch``; unless the callback stopped it midway, summarise it, report
    the summary (the callback may then stop the run) and move ``state`` to the next epoch."""
    tally = _train_epoch(run, state, callback)
    if state.stopped:
        return
    summary = _summarise_epoch(run, tally, state.epoch, val, class_counts)
    state.history.append(summary)
    if callback is not None:
        report = TrainingProgress(
            state.epoch,
            run.steps_per_epoch,
            run.steps_per_epoch,
            state.global_step,
            run.total_steps,
            summary.images_per_second,
            tally.loss_value,
            tally.lr,
            epoch_end=summary,
        )
        if callback(report) is Control.STOP and state.epoch + 1 < run.epochs:
            state.stopped = True
    state.epoch += 1


def _train_epoch(run: _HeadRun, state: RunState, callback: TrainingCallback | None) -> _Tally:
    """The epoch's steps, or those until the callback asks to stop (then ``state.stopped``)."""
    run.model.train()
    tally = _Tally(lr=run.recipe.optimizer.lr)
    order = torch.from_numpy(run.sampling.order(state.epoch))
    for step in range(run.steps_per_epoch):
        batch = order[step * run.batch_size : (step + 1) * run.batch_size].to(run.device)
        loss, logits, tally.lr = _train_step(run, batch, state.global_step)
        tally.loss_value = float(loss.detach())
        if not math.isfinite(tally.loss_value):
            raise TrainingError(
                f"loss is {tally.loss_value} at epoch {state.epoch} step {step}; "
                "lower the learning rate"
            )
        tally.loss_total += tally.loss_value
        hard = run.soft_targets[batch].argmax(dim=1)
        tally.correct += int((logits.detach().argmax(dim=1) == hard).sum())
        tally.seen += int(batch.shape[0])
        state.global_step += 1
        if callback is not None and step + 1 < run.steps_per_epoch:
            rate = tally.seen / max(time.perf_counter() - tally.started, 1e-9)
            report = TrainingProgress(
                state.epoch,
                step + 1,
                run.steps_per_epoch,
                state.global_step,
                run.total_steps,
                rate,
                tally.loss_value,
                tally.lr,
            )
            if callback(report) is Control.STOP:
                state.stopped = True
                break
    return tally


def _train_step(run: _HeadRun, batch: Tensor, global_step: int) -> tuple[Tensor, Tensor, float]:
    """One optimizer step on the training positions ``batch`` ``[B]``; returns the loss, the
    logits ``[B, C]`` and the learning rate."""
    lr = set_scheduled_lr(
        run.optimizer,
        run.recipe,
        global_step,
        total_steps=run.total_steps,
        warmup_steps=run.warmup_steps,
    )
    parts = [run.normalised[batch], run.soft_targets[batch], run.weights[batch]]
    if run.objective.teachers is not None:
        parts.append(run.raw[batch])
    parts = mix_features(run.recipe, parts, run.generator)
    features, targets, weights = parts[0], parts[1], parts[2]
    logits = run.model.head(features)
    # Teacher heads normalise their input themselves: they get the raw features, mixed alike.
    teacher_input = parts[3] if run.objective.teachers is not None else features
    loss = run.objective(logits, targets, teacher_input, weights)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]  # untyped in torch stubs
    clip = run.recipe.optimizer.grad_clip_norm
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), clip)
    run.optimizer.step()
    if run.ema is not None:
        run.ema.update(run.model, global_step)
    return loss, logits, lr


def _summarise_epoch(
    run: _HeadRun,
    tally: _Tally,
    epoch: int,
    val: EvalSet | None,
    class_counts: NDArray[np.int64],
) -> EpochSummary:
    """The epoch's summary, with the validation report when ``val`` is given (the epoch's time
    excludes validation)."""
    seconds = time.perf_counter() - tally.started
    val_report = None
    if val is not None:
        run.model.eval()
        logits = head_logits(run.trained(), val.images, indices=val.indices, device=run.device)
        val_report = evaluate(logits, val.evaluated_labels(), train_class_counts=class_counts)
    return EpochSummary(
        epoch=epoch,
        train_loss=tally.loss_total / run.steps_per_epoch,
        train_accuracy=tally.correct / max(tally.seen, 1),
        learning_rate=tally.lr,
        images_per_second=tally.seen / max(seconds, 1e-9),
        seconds=seconds,
        steps=run.steps_per_epoch,
        val=val_report,
    )


def _log_trained(recipe: Recipe, history: list[EpochSummary]) -> None:
    if history:
        last = history[-1]
        log.info(
            "ml.head.trained",
            kind=recipe.head.kind if recipe.head is not None else None,
            epochs=len(history),
            loss=round(last.train_loss, 4),
            acc=round(last.train_accuracy, 4),
        )
