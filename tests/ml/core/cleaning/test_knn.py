"""kNN label agreement (ml/core/cleaning/knn.py)."""

from __future__ import annotations

import numpy as np

from ml.core.cleaning.knn import knn_verdicts, knn_votes
from ml.core.cleaning.topk import (
    topk_keep,
)


def _two_clusters() -> tuple[np.ndarray, np.ndarray]:
    """Four points around (+1, 0) labelled 0 except the last, four around (-1, 0) labelled 1."""
    features = np.array(
        [[1.0, 0.1], [1.0, -0.1], [1.0, 0.2], [1.0, -0.2], [-1.0, 0.1], [-1.0, -0.1],
         [-1.0, 0.2], [-1.0, -0.2]]
    )  # fmt: skip
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    return features, labels


def test_knn_agreement_is_the_share_of_neighbours_with_the_same_label() -> None:
    features, labels = _two_clusters()

    kept, agreement = knn_verdicts(features, labels, k=3)

    # The mislabeled point's three neighbours all say 0; each other point of the first
    # cluster sees the mislabeled one among its three neighbours.
    np.testing.assert_allclose(agreement, [2 / 3, 2 / 3, 2 / 3, 0.0, 1.0, 1.0, 1.0, 1.0])
    assert kept.tolist() == [True, True, True, False] + [True] * 4


def test_knn_votes_rank_like_probabilities_in_the_top_k_rule() -> None:
    features, labels = _two_clusters()

    votes = knn_votes(features, labels, k=3)

    np.testing.assert_allclose(votes.sum(axis=1), 1.0)
    assert topk_keep(labels, votes, k=1).tolist() == [True, True, True, False] + [True] * 4


def test_knn_excludes_the_sample_itself_and_caps_k() -> None:
    features = np.array([[1.0, 0.0], [0.9, 0.1]])

    kept, agreement = knn_verdicts(features, np.array([0, 1]), k=10, top_k=5)

    assert agreement.tolist() == [0.0, 0.0]
    assert kept.tolist() == [True, True]  # top_k above the classes: every label is in it
