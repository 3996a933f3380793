"""Confident learning (cleanlab) on out-of-fold probabilities. cleanlab is imported only when a
rule runs, so the server can import this module without it."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ml.core.cleaning.arrays import FloatMatrix, IntArray, check_labels, check_probs

__all__ = ["FilterBy", "confident_learning", "label_issues_among_present", "label_quality"]

#: cleanlab's ``find_label_issues`` methods.
FilterBy = Literal[
    "prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given"
]


def _cleanlab_inputs(
    labels: IntArray, pred_probs: FloatMatrix
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    probs = check_probs(pred_probs)
    label_array = check_labels(labels, rows=probs.shape[0], num_classes=probs.shape[1])
    if (probs < 0).any():
        raise ValueError("pred_probs must be probabilities (non-negative rows summing to 1)")
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("pred_probs rows must sum to 1")
    return label_array, probs / probs.sum(axis=1, keepdims=True)


def confident_learning(
    labels: IntArray,
    pred_probs: FloatMatrix,
    *,
    filter_by: FilterBy = "prune_by_noise_rate",
    **options: Any,
) -> NDArray[np.bool_]:
    """Confident learning (Northcutt et al., 2021) through ``cleanlab.filter.find_label_issues``
    on the same out-of-fold probabilities as the top-k rule. ``[N]`` bool, ``True`` = label issue
    (rejected): the opposite sense of :func:`topk_keep`.

    Args:
        labels: ``[N]`` class ids.
        pred_probs: ``[N, C]`` out-of-fold probabilities, rows summing to 1.
        filter_by: cleanlab's method.
        **options: passed to ``find_label_issues`` (e.g. ``frac_noise``,
            ``min_examples_per_class``).
    """
    label_array, probs = _cleanlab_inputs(labels, pred_probs)
    from cleanlab.filter import find_label_issues

    issues = find_label_issues(label_array, probs, filter_by=filter_by, **options)
    return np.asarray(issues, dtype=bool)


def label_quality(
    labels: IntArray, pred_probs: FloatMatrix, *, method: str = "self_confidence"
) -> NDArray[np.float64]:
    """cleanlab's label-quality score per sample, ``[N]`` in ``[0, 1]``; lower = more likely
    mislabeled (``cleanlab.rank.get_label_quality_scores``)."""
    label_array, probs = _cleanlab_inputs(labels, pred_probs)
    from cleanlab.rank import get_label_quality_scores

    return np.asarray(get_label_quality_scores(label_array, probs, method=method), dtype=np.float64)


def label_issues_among_present(
    labels: IntArray,
    pred_probs: FloatMatrix,
    *,
    filter_by: FilterBy = "prune_by_noise_rate",
    **options: Any,
) -> tuple[NDArray[np.bool_], NDArray[np.float32]]:
    """:func:`confident_learning`'s verdicts and :func:`label_quality` of labelled samples
    whose probabilities may cover classes none of them has (a dataset's classes, a manifest's
    labelled part): those classes are left out and the rows renormalised, as cleanlab needs every
    class present. With fewer than two classes present nothing is an issue and every quality is 1.

    Args:
        labels: ``[N]`` class ids, all labelled.
        pred_probs: ``[N, C]`` out-of-fold probabilities over all classes.
        filter_by, options: as :func:`confident_learning`.
    """
    probs = check_probs(pred_probs).astype(np.float64)
    label_array = check_labels(labels, rows=probs.shape[0], num_classes=probs.shape[1])
    present = np.unique(label_array)
    if present.shape[0] < 2:
        rows = label_array.shape[0]
        return np.zeros(rows, dtype=bool), np.ones(rows, dtype=np.float32)
    matrix = np.clip(probs[:, present], 1e-12, None)
    matrix /= matrix.sum(axis=1, keepdims=True)
    compact = np.searchsorted(present, label_array)
    flags = confident_learning(compact, matrix, filter_by=filter_by, **options)
    quality = np.clip(label_quality(compact, matrix), 0.0, 1.0).astype(np.float32)
    return flags, quality
