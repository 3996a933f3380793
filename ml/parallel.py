"""Training and prediction on a :class:`~ml.runtime.Runtime`: in this process, or data-parallel
on the ranks of a ``torchrun`` launch (:mod:`ml.worker.ddp`).

* training: each rank trains on an equal, class-stratified shard of the training rows with
  ``batch_size / world`` images per step, and gradients are averaged across ranks before every
  optimizer step (a process-group all-reduce), so the ranks keep identical weights; rank 0 saves
  the checkpoints. The stop decision is all-reduced at every step, so all ranks stop together;
* prediction: each rank predicts a strided share of the rows in slices, checking for a stop
  after each; rank 0 gathers them.

Both raise :class:`~ml.runtime.JobStopped` when the runtime says to stop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ml.checkpoint import TrainedModel
from ml.heads import HeadTargets, TrainedHead
from ml.predict import Predictions, predict
from ml.recipes import Recipe
from ml.runtime import JobStopped, Runtime
from ml.train import train_model
from ml.training.interface import Control, EvalSet, TrainingProgress, TrainResult

__all__ = ["PREDICT_SLICE_BATCHES", "epoch_values", "predict_rows", "stratified_shard", "train"]

#: Rows predicted between two progress reports (and stop checks).
PREDICT_SLICE_BATCHES = 16


def stratified_shard(
    rows: NDArray[np.int64], labels: NDArray[np.int64], rank: int, world: int
) -> NDArray[np.int64]:
    """Rank ``rank``'s share of ``rows``: each class's rows padded (by repeating its first rows)
    to a multiple of ``world`` and dealt in turn, so every rank gets the same number of rows of
    every class (and so the same number of steps, balanced sampling included)."""
    if world == 1:
        return rows
    shares = []
    for value in np.unique(labels[rows]):
        members = rows[labels[rows] == value]
        padding = (-members.shape[0]) % world
        padded = np.concatenate([members, np.resize(members, padding)]) if padding else members
        shares.append(padded[rank::world])
    return np.sort(np.concatenate(shares)).astype(np.int64)


@contextmanager
def _averaged_gradients(world: int) -> Iterator[None]:
    """Averages every optimizer's gradients across the process group before each step."""
    if world == 1:
        yield
        return
    import torch.distributed as dist
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    def average(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads = [
            p.grad
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for grad in grads:
            count = grad.numel()
            grad.copy_(flat[offset : offset + count].view_as(grad))
            offset += count

    handle = register_optimizer_step_pre_hook(average)
    try:
        yield
    finally:
        handle.remove()


def epoch_values(progress: TrainingProgress) -> dict[str, float]:
    """The metrics of the epoch that ``progress`` ends, by the names the server charts."""
    metrics = progress.epoch_end
    assert metrics is not None
    values = {
        "train_loss": metrics.train_loss,
        "train_accuracy": metrics.train_accuracy,
        "learning_rate": metrics.learning_rate,
        "images_per_second": metrics.images_per_second,
    }
    if metrics.val is not None:
        values["val_accuracy"] = metrics.val.top1
        values["val_top5_accuracy"] = metrics.val.top5
        values["val_balanced_accuracy"] = metrics.val.balanced_accuracy
    return values


def train(
    recipe: Recipe,
    images: NDArray[Any],
    rows: NDArray[np.int64],
    labels: NDArray[np.int64],
    *,
    num_classes: int,
    class_names: Sequence[str] | None,
    runtime: Runtime,
    checkpoint_dir: str | Path | None,
    val: EvalSet | None = None,
    targets: HeadTargets | None = None,
    resume: bool = True,
) -> TrainResult:
    """:func:`ml.train.train_model` on ``images[rows]``, reporting to ``runtime``; on several
    ranks, data-parallel (see the module docstring). ``resume``: continue from the latest
    checkpoint in ``checkpoint_dir`` (a single process only: several ranks must start from the
    same step).

    Raises:
        JobStopped: the runtime said to stop.
    """
    world, rank = runtime.world, runtime.rank
    if world > 1:
        rows = stratified_shard(rows, labels, rank, world)
        recipe = recipe.model_copy(update={"batch_size": max(1, recipe.batch_size // world)})

    def callback(progress: TrainingProgress) -> Control:
        stop = runtime.training(progress)
        if progress.epoch_end is not None:
            runtime.epoch(progress.epoch, epoch_values(progress))
        if world > 1:
            stop = runtime.any_rank(stop)
        return Control.STOP if stop else Control.CONTINUE

    with _averaged_gradients(world):
        result = train_model(
            recipe,
            images,
            labels,
            num_classes=num_classes,
            indices=rows,
            class_names=None if class_names is None else list(class_names),
            val=val if rank == 0 else None,
            device=runtime.device,
            checkpoint_dir=checkpoint_dir if rank == 0 else None,
            resume=resume and world == 1,
            callback=callback,
            targets=targets,
        )
    if result.stopped:
        raise JobStopped(runtime.stop_reason())
    return result


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def predict_rows(
    trained: TrainedModel | TrainedHead,
    images: NDArray[Any],
    rows: NDArray[np.int64],
    labels: NDArray[np.int64] | None,
    *,
    top_k: int,
    keep_probs: bool,
    batch_size: int,
    runtime: Runtime,
    probs_dtype: type[np.floating[Any]] = np.float16,
    channels_last: bool = True,
) -> Predictions | None:
    """Predictions of ``images[rows]`` (``labels``: ``[len(rows)]``, -1 unknown, for the given
    label's probability) in slices, reporting progress and honouring stops; the full
    probabilities ``[M, C]`` (``keep_probs``) as ``probs_dtype``. On several ranks each predicts
    every ``world``-th row and rank 0 gets them all (the others: None).

    Raises:
        JobStopped: the runtime said to stop.
    """
    mine = np.arange(runtime.rank, rows.shape[0], runtime.world)
    per_slice = batch_size * PREDICT_SLICE_BATCHES
    # The same number of slices on every rank: each slice ends with a collective stop check.
    slices = max(1, _ceil_div(_ceil_div(int(rows.shape[0]), runtime.world), per_slice))
    parts: list[Predictions] = []
    for number in range(slices):
        part = mine[number * per_slice : (number + 1) * per_slice]
        if part.size:
            predicted = predict(
                trained,
                images,
                indices=rows[part],
                labels=None if labels is None else labels[part],
                top_k=top_k,
                return_probs=keep_probs,
                batch_size=batch_size,
                device=runtime.device,
                channels_last=channels_last,
            )
            parts.append(predicted)
        done = min((number + 1) * per_slice * runtime.world, rows.shape[0])
        stop = runtime.predicting(done, int(rows.shape[0]))
        if runtime.world > 1:
            stop = runtime.any_rank(stop)
        if stop:
            raise JobStopped(runtime.stop_reason())
    local = _concatenated(parts, min(top_k, trained.num_classes), trained.num_classes, probs_dtype)
    local.append(mine)
    if runtime.world > 1:
        merged = _gathered(runtime, local, int(rows.shape[0]))
        if merged is None:
            return None
        local = merged
    return Predictions(
        topk_ids=local[0],
        topk_probs=local[1],
        given_prob=local[2] if labels is not None else None,
        probs=local[3] if keep_probs else None,
    )


def _concatenated(
    parts: list[Predictions], k: int, num_classes: int, probs_dtype: type[np.floating[Any]]
) -> list[NDArray[Any]]:
    """The slices' top-k ids, top-k probabilities, given-label probabilities and full
    probabilities, each as one array (empty when this rank predicted nothing)."""
    given = [p.given_prob for p in parts if p.given_prob is not None]
    full = [p.probs.astype(probs_dtype) for p in parts if p.probs is not None]
    return [
        np.concatenate([p.topk_ids for p in parts]) if parts else np.empty((0, k), np.int64),
        np.concatenate([p.topk_probs for p in parts]) if parts else np.empty((0, k), np.float32),
        np.concatenate(given) if given else np.empty(0, np.float32),
        np.concatenate(full) if full else np.empty((0, num_classes), probs_dtype),
    ]


def _gathered(runtime: Runtime, local: list[NDArray[Any]], n: int) -> list[NDArray[Any]] | None:
    """Every rank's ``local`` arrays (their last one: the positions they predicted) put back in
    row order on rank 0; None on the other ranks."""
    gathered = runtime.gather(local, "predict")
    if gathered is None:
        return None
    order = gathered[-1]
    merged = [np.empty_like(part, shape=(n, *part.shape[1:])) for part in gathered[:-1]]
    for target, part in zip(merged, gathered[:-1], strict=True):
        if part.shape[0]:
            target[order] = part
    return [*merged, np.arange(n)]
