"""kNN label agreement: the labels of each sample's nearest neighbours in embedding space
(cosine), a detector that needs no trained model. As a rule, the neighbours' vote shares go
through :func:`ml.core.cleaning.topk.topk_keep` like probabilities."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ml.core.cleaning.arrays import IntArray, check_labels
from ml.core.cleaning.topk import topk_keep

__all__ = ["knn_verdicts", "knn_votes"]


def _unit_centred(features: NDArray[np.floating]) -> NDArray[np.float32]:
    """L2-normalised, centred, L2-normalised again (as the heads see embeddings)."""
    matrix = np.asarray(features, dtype=np.float32)
    matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    matrix = matrix - matrix.mean(axis=0, keepdims=True)
    result: NDArray[np.float32] = matrix / np.maximum(
        np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12
    )
    return result


def knn_votes(
    features: NDArray[np.floating],
    labels: IntArray,
    *,
    k: int = 10,
    num_classes: int | None = None,
    block_rows: int = 2048,
) -> NDArray[np.float32]:
    """How the ``k`` nearest neighbours of each sample (cosine similarity of the centred,
    normalised embeddings; the sample itself excluded) label it: vote shares ``[N, C]``, each
    row summing to 1.

    Args:
        features: ``[N, D]`` embeddings.
        labels: ``[N]`` given class ids.
        k: neighbours per sample (capped at ``N - 1``).
        num_classes: ``C`` (default: the largest label + 1).
        block_rows: rows of the ``[rows, N]`` similarity block computed at a time.
    """
    matrix = np.asarray(features)
    if matrix.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {matrix.shape}")
    label_array = check_labels(labels, rows=matrix.shape[0])
    n = label_array.shape[0]
    if n < 2:
        raise ValueError("kNN needs at least two samples")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    classes = num_classes if num_classes is not None else int(label_array.max()) + 1
    if label_array.max() >= classes:
        raise ValueError(f"label {int(label_array.max())} is outside {classes} classes")
    k = min(k, n - 1)
    unit = _unit_centred(matrix)
    votes = np.zeros((n, classes), dtype=np.float32)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        similarity = unit[start:stop] @ unit.T
        similarity[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        neighbour_labels = label_array[neighbours]
        for column in range(k):
            np.add.at(votes, (np.arange(start, stop), neighbour_labels[:, column]), 1.0)
    votes /= k
    return votes


def knn_verdicts(
    features: NDArray[np.floating],
    labels: IntArray,
    *,
    k: int = 10,
    top_k: int = 1,
    num_classes: int | None = None,
) -> tuple[NDArray[np.bool_], NDArray[np.float32]]:
    """The kNN detector, as the worker and ``thresher ml crossval`` run it: ``kept`` ``[N]``
    where the label is among the ``top_k`` classes of the neighbours' votes (the top-k rule on
    vote shares), and ``agreement`` ``[N]`` in ``[0, 1]``, the share of the ``k`` nearest
    neighbours that carry the sample's label (lower: more likely mislabeled). Arguments as
    :func:`knn_votes`."""
    label_array = check_labels(labels)
    votes = knn_votes(features, label_array, k=k, num_classes=num_classes)
    kept = topk_keep(label_array, votes, k=min(top_k, votes.shape[1]))
    agreement: NDArray[np.float32] = votes[np.arange(label_array.shape[0]), label_array]
    return kept, agreement
