"""The one training loop, used by every job kind (fold models, pull-back rounds, the junk
classifier, final training).

What a recipe (:class:`ml.recipes.Recipe`) switches on, and where it happens:

* data: rows of a uint8 array ``[N, H, W, 3]`` (the decoded cache), per-sample augmentation
  (:func:`ml.augment.transforms.build_sample_transform`) in DataLoader workers, class-balanced
  sampling (:class:`ml.sampler.ClassBalancedSampler`) or a seeded shuffle
  (:mod:`ml.training.batches`), CutMix/mixup on the device (:class:`ml.augment.batch.BatchMixer`);
* loss: soft cross-entropy with label smoothing, or the logit-adjusted loss; Flooding;
  distillation from teacher checkpoints (:mod:`ml.training.objective`, :mod:`ml.losses`);
* optimisation: SGD or AdamW (no weight decay on biases and norms), linear warmup then cosine
  (:mod:`ml.training.setup`), gradient clipping, EMA of the weights;
* device: bfloat16 autocast on CUDA, float32 on CPU; channels-last.

A recipe with a ``head`` trains only the head, on cached embeddings (:mod:`ml.head_training`).

**Determinism.** Every random choice derives from the recipe's seed: initial weights from
``torch.manual_seed(seed)``, the epoch's order from ``(seed, epoch)``, a sample's augmentation from
``(seed, epoch, row)``, batch mixing from ``(seed, epoch, step)``, dropout from the global RNG
re-seeded at each step. On the CPU two runs give identical weights; on CUDA, up to the
non-determinism of cuDNN kernels.

**Resume.** With ``checkpoint_dir`` a checkpoint is saved after every epoch (and when stopped);
a later call with the same arguments continues from the newest one, mid-epoch included, and ends
with the same weights as an uninterrupted run (on the CPU). Resuming with another recipe or
another training set is refused (:mod:`ml.training.resume`).

**Progress and cancellation.** ``callback`` receives a
:class:`~ml.training.interface.TrainingProgress` after every step (and with the epoch's summary at
its end); returning :attr:`~ml.training.interface.Control.STOP` stops the run at that step
boundary, saving a checkpoint first.

The loop's steps, in order: set up and resume (:func:`_start`), then per epoch
(:func:`_run_epoch`): train (:func:`_train_epoch`, one :func:`_train_step` per batch), summarise
(:func:`_summarise_epoch`) and save (:func:`_save`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from ml.augment.randomness import sample_generator
from ml.embeddings import EmbeddingArray
from ml.head_training import train_head
from ml.heads import HeadTargets
from ml.logging import get_logger
from ml.metrics import EvalReport, evaluate
from ml.predict import autocast, predict_logits, resolve_device
from ml.recipes import Recipe
from ml.training.batches import training_rows
from ml.training.interface import (
    Control,
    EpochSummary,
    EvalSet,
    TrainingCallback,
    TrainingError,
    TrainingProgress,
    TrainResult,
)
from ml.training.resume import RunState, resume_run, save_run
from ml.training.setup import Feed, Learner, set_scheduled_lr, set_up_image_run

__all__ = ["train_model"]

log = get_logger(__name__)


class _Tally:
    """Running totals of the epoch in progress; the sums stay on the device until its end."""

    def __init__(self, device: torch.device, lr: float) -> None:
        self.device = device
        self.started = time.perf_counter()
        self.loss_total = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.seen = 0
        self.steps = 0
        self.lr = lr
        self.loss_value = float("nan")
        self.previous: Tensor | None = None

    def add(self, loss: Tensor, logits: Tensor, hard: Tensor, lr: float) -> None:
        """Count a step: its loss, logits ``[B, C]``, labels ``[B]`` and learning rate."""
        detached = loss.detach()
        self.loss_total += detached
        self.correct += (logits.detach().argmax(dim=1) == hard).sum()
        # On CUDA, read the previous step's loss: the GPU is already busy with this one, so
        # the read does not leave it idle (on the CPU every step is finished anyway).
        cuda = self.device.type == "cuda"
        shown = self.previous if self.previous is not None and cuda else detached
        self.loss_value = float(shown)
        self.previous = detached
        self.lr = lr
        self.steps += 1
        self.seen += int(hard.shape[0])

    def images_per_second(self) -> float:
        return self.seen / max(time.perf_counter() - self.started, 1e-9)


def train_model(
    recipe: Recipe,
    images: NDArray[np.uint8],
    labels: NDArray[np.integer] | Sequence[int],
    *,
    num_classes: int,
    indices: NDArray[np.integer] | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    val: EvalSet | None = None,
    device: str | torch.device | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    callback: TrainingCallback | None = None,
    targets: HeadTargets | None = None,
) -> TrainResult:
    """Train a classifier on ``images[indices]`` with ``labels`` following ``recipe``.

    A recipe with a ``head`` trains only the head, on cached embeddings: ``images`` is then an
    :class:`~ml.embeddings.EmbeddingArray` of the same rows (see :mod:`ml.head_training`).

    Args:
        images: uint8 ``[N, H, W, 3]``, usually the decoded cache's memory map; rows are fitted to
            ``recipe.image_size`` by the per-sample transform when ``H`` differs.
        labels: ``[N]`` class ids in ``[0, num_classes)`` (rows outside ``indices`` may be -1).
        indices: the training rows (default: all); a fold's or the kept set's rows.
        class_names: saved with the model.
        val: evaluated after every epoch (in :attr:`EpochSummary.val`).
        device: default CUDA when available, else CPU.
        checkpoint_dir: where to save checkpoints; enables resuming.
        resume: continue from the newest checkpoint in ``checkpoint_dir`` if there is one.
        callback: progress reports and the stop signal (see the module docstring).
        targets: soft targets for unlabelled rows and sample weights (heads only).

    Raises:
        TrainingError: bad inputs, too few samples, or a checkpoint of another run.
    """
    if recipe.head is not None:
        return train_head(
            recipe,
            cast(EmbeddingArray, images),
            labels,
            num_classes=num_classes,
            indices=indices,
            class_names=class_names,
            val=val,
            device=device,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            callback=callback,
            targets=targets,
        )
    if targets is not None:
        raise TrainingError("soft targets and sample weights are for heads on embeddings only")
    learner, feed, run = _start(
        recipe, images, labels, num_classes, indices, class_names, device, checkpoint_dir, resume
    )
    while run.epoch < feed.epochs and not run.stopped:
        _run_epoch(learner, feed, run, val=val, checkpoint_dir=checkpoint_dir, callback=callback)
    return _result(learner, run)


def _start(
    recipe: Recipe,
    images: NDArray[np.uint8],
    labels: NDArray[np.integer] | Sequence[int],
    num_classes: int,
    indices: NDArray[np.integer] | Sequence[int] | None,
    class_names: Sequence[str] | None,
    device: str | torch.device | None,
    checkpoint_dir: str | Path | None,
    resume: bool,
) -> tuple[Learner, Feed, RunState]:
    """Check the inputs, set the run up and resume it from its newest checkpoint if asked."""
    label_array = np.asarray(labels, dtype=np.int64)
    rows = _checked_rows(images, label_array, indices, num_classes)
    names = list(class_names) if class_names is not None else None
    learner, feed = set_up_image_run(
        recipe, images, label_array, rows, num_classes, names, resolve_device(device)
    )
    if checkpoint_dir is None or not resume:
        return learner, feed, RunState()
    run = resume_run(
        checkpoint_dir,
        learner.identity,
        model=learner.model,
        ema=learner.ema,
        optimizer=learner.optimizer,
        device=learner.device,
    )
    return learner, feed, run


def _checked_rows(
    images: NDArray[np.uint8],
    labels: NDArray[np.int64],
    indices: NDArray[np.integer] | Sequence[int] | None,
    num_classes: int,
) -> NDArray[np.int64]:
    """The training rows ``[M]``, after checking the images, the labels and the rows."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise TrainingError(
            f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}"
        )
    if labels.shape != (images.shape[0],):
        raise TrainingError(f"labels {labels.shape} do not match {images.shape[0]} images")
    rows = training_rows(images.shape[0], indices)
    used = labels[rows]
    if used.min() < 0 or used.max() >= num_classes:
        raise TrainingError(f"training labels must lie in [0, {num_classes})")
    return rows


def _run_epoch(
    learner: Learner,
    feed: Feed,
    run: RunState,
    *,
    val: EvalSet | None,
    checkpoint_dir: str | Path | None,
    callback: TrainingCallback | None,
) -> None:
    """Train the epoch in progress from ``run.step``; then, unless the callback stopped it
    midway, summarise it, report the summary and move ``run`` to the next epoch. Saves a
    checkpoint either way."""
    tally = _train_epoch(learner, feed, run, callback)
    if run.stopped:
        _save(learner, run, checkpoint_dir)
        log.info("ml.train.stopped", epoch=run.epoch, step=run.step)
        return
    summary = _summarise_epoch(learner, tally, run.epoch, val)
    run.history.append(summary)
    log.info(
        "ml.train.epoch",
        epoch=summary.epoch,
        loss=round(summary.train_loss, 4),
        acc=round(summary.train_accuracy, 4),
        img_per_s=round(summary.images_per_second),
        val_top1=None if summary.val is None else round(summary.val.top1, 4),
    )
    steps_done = run.step
    run.epoch, run.step = run.epoch + 1, 0
    if callback is not None:
        report = TrainingProgress(
            summary.epoch,
            steps_done,
            feed.steps_per_epoch,
            run.global_step,
            feed.total_steps,
            summary.images_per_second,
            tally.loss_value,
            tally.lr,
            epoch_end=summary,
        )
        run.stopped = callback(report) is Control.STOP and run.epoch < feed.epochs
    _save(learner, run, checkpoint_dir)


def _train_epoch(
    learner: Learner, feed: Feed, run: RunState, callback: TrainingCallback | None
) -> _Tally:
    """The steps from ``run.step`` to the epoch's end, or until the callback asks to stop
    (then ``run.stopped``); ``run`` advances with every step."""
    learner.model.train()
    feed.batches.set_position(run.epoch, run.step)
    tally = _Tally(learner.device, learner.recipe.optimizer.lr)
    for pixels, labels in feed.loader:
        loss, logits, hard, lr = _train_step(learner, feed, run, pixels, labels)
        tally.add(loss, logits, hard, lr)
        if not math.isfinite(tally.loss_value):
            raise TrainingError(
                f"loss is {tally.loss_value} at epoch {run.epoch} step {run.step}; "
                "lower the learning rate"
            )
        run.global_step += 1
        run.step += 1
        if callback is not None and run.step < feed.steps_per_epoch:
            report = TrainingProgress(
                run.epoch,
                run.step,
                feed.steps_per_epoch,
                run.global_step,
                feed.total_steps,
                tally.images_per_second(),
                tally.loss_value,
                lr,
            )
            if callback(report) is Control.STOP:
                run.stopped = True
                break
    return tally


def _train_step(
    learner: Learner, feed: Feed, run: RunState, pixels: Tensor, labels: Tensor
) -> tuple[Tensor, Tensor, Tensor, float]:
    """One optimizer step on uint8 ``pixels`` ``[B, 3, H, W]`` with ``labels`` ``[B]``;
    returns the loss, the logits ``[B, C]``, the labels on the device and the learning rate."""
    recipe, model, device = learner.recipe, learner.model, learner.device
    # Dropout and other global-RNG users: seeded per step, so a resumed run matches.
    torch.manual_seed(_seed_from(recipe.seed, 2, run.epoch, run.step))
    lr = set_scheduled_lr(
        learner.optimizer,
        recipe,
        run.global_step,
        total_steps=feed.total_steps,
        warmup_steps=feed.warmup_steps,
    )
    raw = pixels.to(device, non_blocking=True).float()
    hard = labels.to(device, non_blocking=True)
    raw, soft = feed.mixer(raw, hard, sample_generator(recipe.seed, 1, run.epoch, run.step))
    x = feed.normalise(raw)
    if recipe.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device):
        logits = model(x).float()
    loss = feed.objective(logits, soft, raw)
    learner.optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]  # untyped in torch stubs
    if recipe.optimizer.grad_clip_norm is not None:
        nn.utils.clip_grad_norm_(model.parameters(), recipe.optimizer.grad_clip_norm)
    learner.optimizer.step()
    if learner.ema is not None:
        learner.ema.update(model, run.global_step)
    return loss, logits, hard, lr


def _seed_from(*keys: int) -> int:
    return int(sample_generator(*keys).initial_seed())


def _summarise_epoch(
    learner: Learner, tally: _Tally, epoch: int, val: EvalSet | None
) -> EpochSummary:
    """The epoch's summary from its tally, with the validation report when ``val`` is given
    (the epoch's time excludes validation)."""
    seconds = time.perf_counter() - tally.started
    return EpochSummary(
        epoch=epoch,
        train_loss=float(tally.loss_total) / max(tally.steps, 1),
        train_accuracy=int(tally.correct) / max(tally.seen, 1),
        learning_rate=tally.lr,
        images_per_second=tally.seen / max(seconds, 1e-9),
        seconds=seconds,
        steps=tally.steps,
        val=_validate(learner, val) if val is not None else None,
    )


def _validate(learner: Learner, val: EvalSet) -> EvalReport:
    logits = predict_logits(
        learner.trained(),
        val.images,
        indices=val.indices,
        batch_size=learner.recipe.eval_batch_size,
        device=learner.device,
        channels_last=learner.recipe.channels_last,
    )
    return evaluate(
        logits, val.evaluated_labels(), train_class_counts=learner.identity.class_counts
    )


def _result(learner: Learner, run: RunState) -> TrainResult:
    trained = learner.trained()
    trained.model.eval()
    return TrainResult(
        trained=trained,
        history=run.history,
        stopped=run.stopped,
        checkpoint=run.checkpoint,
        class_counts=learner.identity.class_counts,
    )


def _save(learner: Learner, run: RunState, checkpoint_dir: str | Path | None) -> None:
    """Save the run as a checkpoint when it has a ``checkpoint_dir``."""
    if checkpoint_dir is None:
        return
    run.checkpoint = save_run(
        checkpoint_dir,
        run,
        learner.identity,
        trained=learner.trained(),
        model=learner.model,
        ema=learner.ema,
        optimizer=learner.optimizer,
    )
