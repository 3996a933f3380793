"""Seeded stratified K-fold splits: the one fold rule of the server's cross-validation rounds
(whose manifests carry the folds the fold jobs train on) and of ``thresher ml crossval``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["MAX_FOLDS", "stratified_folds"]

#: Folds travel in a manifest's ``fold`` column as int8.
MAX_FOLDS = 127


def stratified_folds(
    labels: NDArray[np.integer] | Sequence[int], k: int, seed: int
) -> NDArray[np.int64]:
    """Assign every sample to one of ``k`` folds, stratified by label.

    Classes are taken in ascending label order; within each class the samples are shuffled
    (seeded) and dealt to the folds in turn, starting where the previous class stopped, so every
    class's count differs by at most one between folds and so do the fold sizes. A class
    smaller than ``k`` is simply absent from some folds (long-tailed data has such classes).

    Args:
        labels: ``[N]`` class ids; only their order matters, so class ids and class indices
            that sort alike give the same folds.
        k: number of folds, 2 to :data:`MAX_FOLDS`.
        seed: the same seed and labels always give the same folds.

    Returns:
        ``[N]`` int64 fold index in ``[0, k)`` of every sample.
    """
    array = np.asarray(labels, dtype=np.int64)
    if array.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {array.shape}")
    if not 2 <= k <= MAX_FOLDS:
        raise ValueError(f"k must be between 2 and {MAX_FOLDS}, got {k}")
    if array.shape[0] < k:
        raise ValueError(f"cannot split {array.shape[0]} samples into {k} folds")
    folds = np.empty(array.shape[0], dtype=np.int64)
    rng = np.random.default_rng(seed)
    start = 0
    for value in np.unique(array):
        members = np.flatnonzero(array == value)
        rng.shuffle(members)
        folds[members] = (start + np.arange(members.shape[0])) % k
        start = (start + members.shape[0]) % k
    return folds
