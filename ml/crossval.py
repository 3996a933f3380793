"""Out-of-fold predictions: train on K-1 folds, predict the held-out one, for every fold.

:func:`train_fold` is one fold's job (the GPU workers run the K of them in parallel);
:func:`merge_folds` assembles their held-out predictions; :func:`out_of_fold_predictions` does
both in this process, one fold after the other.

Fold ``f`` trains with seed ``recipe.seed + f``, so the K models differ in initialisation and
augmentation as well as data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ml.parallel import predict_rows, train
from ml.predict import Predictions, predictions_from_probs
from ml.recipes import Recipe
from ml.runtime import LocalRuntime, Runtime
from ml.training.interface import EpochSummary, TrainingCallback

__all__ = ["FoldResult", "OutOfFold", "merge_folds", "out_of_fold_predictions", "train_fold"]


@dataclass(frozen=True)
class FoldResult:
    """One fold's held-out predictions.

    Attributes:
        fold: the held-out fold.
        heldout: ``[M]`` int64 row indices of the held-out samples (ascending).
        predictions: their top-k classes and the given label's probability, and (when kept)
            every class's probability ``[M, C]`` float32.
        history: the fold model's epoch metrics.
        checkpoint: the fold model's checkpoint, when one was saved (e.g. a distillation teacher).
    """

    fold: int
    heldout: NDArray[np.int64]
    predictions: Predictions
    history: list[EpochSummary]
    checkpoint: Path | None

    @property
    def probs(self) -> NDArray[np.float32]:
        """``[M, C]`` float32 predicted probabilities of the held-out samples."""
        probs = self.predictions.probs
        if probs is None:
            raise ValueError(f"fold {self.fold} was predicted without its probabilities")
        return probs


@dataclass(frozen=True)
class OutOfFold:
    """Every sample predicted by the model that did not train on it.

    Attributes:
        probs: ``[N, C]`` float32 out-of-fold probabilities (cleanlab's ``pred_probs``).
        predictions: top-k ids and probabilities and the given label's probability, ``[N, k]``
            and ``[N]`` (see :class:`ml.predict.Predictions`).
        folds: ``[N]`` int64 fold of every sample.
        fold_results: per fold.
    """

    probs: NDArray[np.float32]
    predictions: Predictions
    folds: NDArray[np.int64]
    fold_results: list[FoldResult]


def _check_folds(folds: NDArray[np.integer] | Sequence[int], n: int) -> NDArray[np.int64]:
    array = np.asarray(folds, dtype=np.int64)
    if array.shape != (n,):
        raise ValueError(f"folds {array.shape} do not match {n} samples")
    if array.min() < 0:
        raise ValueError("fold indices must be non-negative")
    return array


def _fold_rows(
    labels: NDArray[np.int64], folds: NDArray[np.int64], fold: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The held-out rows of ``fold`` and the labelled rows of the other folds."""
    heldout = np.flatnonzero(folds == fold).astype(np.int64)
    if heldout.size == 0:
        raise ValueError(f"fold {fold} is empty")
    return heldout, np.flatnonzero((folds != fold) & (labels >= 0)).astype(np.int64)


def train_fold(
    recipe: Recipe,
    images: NDArray[Any],
    labels: NDArray[np.integer] | Sequence[int],
    folds: NDArray[np.integer] | Sequence[int],
    fold: int,
    *,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    top_k: int = 1,
    keep_probs: bool = True,
    runtime: Runtime | None = None,
    checkpoint_dir: str | Path | None = None,
) -> FoldResult | None:
    """Train on every fold but ``fold`` and predict ``fold``; raises
    :class:`~ml.runtime.JobStopped` when the runtime says to stop.

    Args:
        recipe: the training recipe; its seed is offset by ``fold``.
        images: uint8 ``[N, H, W, 3]`` (or the rows' embeddings for a recipe with a head).
        labels: ``[N]`` given class ids; -1: no label (never trained on).
        folds: ``[N]`` fold of every sample (:func:`ml.core.folds.stratified_folds`).
        top_k: classes recorded per held-out sample; ``keep_probs``: keep the held-out
            probabilities ``[M, C]`` (float32), as :func:`merge_folds` needs.
        runtime: where it runs (default: this process); ``checkpoint_dir``: saves (and
            resumes) the fold model there.

    Returns:
        The fold's held-out predictions; None on the ranks but 0 of a multi-process run.
    """
    runtime = runtime or LocalRuntime()
    label_array = np.asarray(labels, dtype=np.int64)
    heldout, train_rows = _fold_rows(label_array, _check_folds(folds, label_array.shape[0]), fold)
    fold_recipe = recipe.model_copy(update={"seed": recipe.seed + fold})
    result = train(
        fold_recipe,
        images,
        train_rows,
        label_array,
        num_classes=num_classes,
        class_names=class_names,
        runtime=runtime,
        checkpoint_dir=checkpoint_dir,
    )
    predicted = predict_rows(
        result.trained,
        images,
        heldout,
        label_array[heldout],
        top_k=top_k,
        keep_probs=keep_probs,
        batch_size=recipe.eval_batch_size,
        runtime=runtime,
        probs_dtype=np.float32,
        channels_last=recipe.channels_last,
    )
    if predicted is None:
        return None
    return FoldResult(fold, heldout, predicted, result.history, result.checkpoint)


def merge_folds(
    fold_results: Sequence[FoldResult],
    labels: NDArray[np.integer] | Sequence[int],
    folds: NDArray[np.integer] | Sequence[int],
    *,
    top_k: int = 5,
) -> OutOfFold:
    """Assemble the held-out predictions of every fold into per-sample arrays.

    Raises:
        ValueError: a sample is predicted by no fold, or by two.
    """
    label_array = np.asarray(labels, dtype=np.int64)
    fold_array = _check_folds(folds, label_array.shape[0])
    if not fold_results:
        raise ValueError("no fold results")
    num_classes = fold_results[0].probs.shape[1]
    probs = np.zeros((label_array.shape[0], num_classes), dtype=np.float32)
    covered = np.zeros(label_array.shape[0], dtype=np.int64)
    for result in fold_results:
        probs[result.heldout] = result.probs
        covered[result.heldout] += 1
    if (covered != 1).any():
        missing = np.flatnonzero(covered != 1)
        raise ValueError(
            f"{missing.size} samples are predicted by no fold or several, e.g. {missing[:5]}"
        )
    ordered = sorted(fold_results, key=lambda r: r.fold)
    return OutOfFold(
        probs=probs,
        predictions=predictions_from_probs(probs, label_array, top_k=top_k, keep_probs=False),
        folds=fold_array,
        fold_results=ordered,
    )


def out_of_fold_predictions(
    recipe: Recipe,
    images: NDArray[Any],
    labels: NDArray[np.integer] | Sequence[int],
    folds: NDArray[np.integer] | Sequence[int],
    *,
    num_classes: int,
    top_k: int = 5,
    class_names: Sequence[str] | None = None,
    device: str | None = None,
    checkpoint_root: str | Path | None = None,
    callback: Callable[[int], TrainingCallback | None] | None = None,
) -> OutOfFold:
    """Run :func:`train_fold` for every fold in this process, one after the other, then
    :func:`merge_folds`.

    Args:
        checkpoint_root: fold ``f``'s model is saved under ``checkpoint_root/fold-<f>``.
        callback: ``fold -> progress callback`` (or ``None``) for each fold's training.
    """
    fold_array = _check_folds(folds, len(labels))
    results = []
    for fold in sorted(int(f) for f in np.unique(fold_array)):
        runtime = LocalRuntime(device, callback(fold) if callback is not None else None)
        result = train_fold(
            recipe,
            images,
            labels,
            fold_array,
            fold,
            num_classes=num_classes,
            class_names=class_names,
            runtime=runtime,
            checkpoint_dir=None
            if checkpoint_root is None
            else Path(checkpoint_root) / f"fold-{fold}",
        )
        assert result is not None
        results.append(result)
    return merge_folds(results, labels, fold_array, top_k=top_k)
