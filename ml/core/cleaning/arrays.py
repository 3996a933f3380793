"""Input checks shared by the cleaning rules: every public rule validates its arrays here, then
computes on the checked copies."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["FloatMatrix", "IntArray", "check_k", "check_labels", "check_probs"]

#: Class ids ``[N]``.
IntArray = NDArray[np.integer] | Sequence[int]
#: Probabilities (or scores ranked alike) ``[N, C]``.
FloatMatrix = NDArray[np.floating]


def non_negative_ints(values: IntArray, *, name: str) -> NDArray[np.int64]:
    """``values`` as int64 ``[N]`` non-negative integers (class ids, class sizes); a ValueError
    naming ``name`` otherwise."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must be non-negative")
    return array


def check_labels(
    labels: IntArray, *, rows: int | None = None, num_classes: int | None = None
) -> NDArray[np.int64]:
    """``labels`` as int64 ``[N]`` non-negative class ids, checked against ``rows`` and
    ``num_classes`` when given."""
    array = non_negative_ints(labels, name="labels")
    if rows is not None and array.shape[0] != rows:
        raise ValueError(f"{array.shape[0]} labels for {rows} prediction rows")
    if num_classes is not None and array.size and array.max() >= num_classes:
        raise ValueError(f"label {int(array.max())} is outside the {num_classes} predicted classes")
    return array


def check_probs(pred_probs: FloatMatrix) -> NDArray[np.float64]:
    """``pred_probs`` as a finite float64 ``[N, C]`` matrix."""
    matrix = np.asarray(pred_probs, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"pred_probs must be [N, C], got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("pred_probs contains NaN or infinite values")
    return matrix


def check_k(k: int, num_classes: int) -> int:
    """A rule's ``k`` (at least 1), capped at the number of classes."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return min(k, num_classes)
