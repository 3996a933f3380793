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

import numpy as np
import torch
from numpy.typing import NDArray

from ml.predict import Predictions, predict, predictions_from_probs
from ml.recipes import Recipe
from ml.train import EpochMetrics, ProgressCallback, TrainResult, train_model

__all__ = ["FoldResult", "OutOfFold", "merge_folds", "out_of_fold_predictions", "train_fold"]


@dataclass(frozen=True)
class FoldResult:
    """One fold's held-out predictions.

    Attributes:
        fold: the held-out fold.
        heldout: ``[M]`` int64 row indices of the held-out samples (ascending).
        probs: ``[M, C]`` float32 predicted probabilities for them.
        history: the fold model's epoch metrics.
        checkpoint: the fold model's checkpoint, when one was saved (e.g. a distillation teacher).
    """

    fold: int
    heldout: NDArray[np.int64]
    probs: NDArray[np.float32]
    history: list[EpochMetrics]
    checkpoint: Path | None


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


def train_fold(
    recipe: Recipe,
    images: NDArray[np.uint8],
    labels: NDArray[np.integer] | Sequence[int],
    folds: NDArray[np.integer] | Sequence[int],
    fold: int,
    *,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    checkpoint_dir: str | Path | None = None,
    callback: ProgressCallback | None = None,
) -> FoldResult:
    """Train on every fold but ``fold`` and predict ``fold``.

    Args:
        recipe: the training recipe; its seed is offset by ``fold``.
        images: uint8 ``[N, H, W, 3]``.
        labels: ``[N]`` given class ids.
        folds: ``[N]`` fold of every sample (:func:`ml.data.stratified_folds`).
        fold: the held-out fold.
        checkpoint_dir: saves (and resumes) the fold model there.
    """
    label_array = np.asarray(labels, dtype=np.int64)
    fold_array = _check_folds(folds, label_array.shape[0])
    heldout = np.flatnonzero(fold_array == fold).astype(np.int64)
    train_rows = np.flatnonzero(fold_array != fold).astype(np.int64)
    if heldout.size == 0:
        raise ValueError(f"fold {fold} is empty")
    fold_recipe = recipe.model_copy(update={"seed": recipe.seed + fold})
    result: TrainResult = train_model(
        fold_recipe,
        images,
        label_array,
        num_classes=num_classes,
        indices=train_rows,
        class_names=class_names,
        device=device,
        checkpoint_dir=checkpoint_dir,
        callback=callback,
    )
    predicted = predict(
        result.trained,
        images,
        indices=heldout,
        top_k=1,
        return_probs=True,
        batch_size=recipe.eval_batch_size,
        device=device,
        channels_last=recipe.channels_last,
    )
    assert predicted.probs is not None
    return FoldResult(fold, heldout, predicted.probs, result.history, result.checkpoint)


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
    images: NDArray[np.uint8],
    labels: NDArray[np.integer] | Sequence[int],
    folds: NDArray[np.integer] | Sequence[int],
    *,
    num_classes: int,
    top_k: int = 5,
    class_names: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    checkpoint_root: str | Path | None = None,
    callback: Callable[[int], ProgressCallback | None] | None = None,
) -> OutOfFold:
    """Run :func:`train_fold` for every fold, one after the other, then :func:`merge_folds`.

    Args:
        checkpoint_root: fold ``f``'s model is saved under ``checkpoint_root/fold-<f>``.
        callback: ``fold -> progress callback`` (or ``None``) for each fold's training.
    """
    fold_array = _check_folds(folds, len(labels))
    results = []
    for fold in sorted(int(f) for f in np.unique(fold_array)):
        results.append(
            train_fold(
                recipe,
                images,
                labels,
                fold_array,
                fold,
                num_classes=num_classes,
                class_names=class_names,
                device=device,
                checkpoint_dir=None
                if checkpoint_root is None
                else Path(checkpoint_root) / f"fold-{fold}",
                callback=callback(fold) if callback is not None else None,
            )
        )
    return merge_folds(results, labels, fold_array, top_k=top_k)
