"""Cleaning rules on hand-made probabilities (ml/cleaning.py)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from ml.cleaning import (
    calibrated_pullback,
    confident_learning,
    final_training_targets,
    knn_agreement,
    knn_votes,
    label_quality,
    label_rank_among_classes,
    pullback,
    pullback_from_ids,
    rejection_quality,
    topk_keep,
    topk_keep_from_ids,
)

# Four samples, three classes; given labels 0, 1, 2, 0.
LABELS = np.array([0, 1, 2, 0])
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],  # label 0 is top-1
        [0.5, 0.3, 0.2],  # label 1 is second
        [0.6, 0.3, 0.1],  # label 2 is third
        [0.1, 0.1, 0.8],  # label 0 ties for second with class 1: ranked third
    ]
)


def test_label_rank_counts_classes_ahead_of_the_label() -> None:
    assert label_rank_among_classes(LABELS, PROBS).tolist() == [0, 1, 2, 2]


def test_top1_rule_keeps_only_top_predictions() -> None:
    assert topk_keep(LABELS, PROBS, k=1).tolist() == [True, False, False, False]


def test_top2_rule_partition() -> None:
    kept = topk_keep(LABELS, PROBS, k=2)

    assert kept.tolist() == [True, True, False, False]


def test_k_above_class_count_keeps_everything() -> None:
    assert topk_keep(LABELS, PROBS, k=10).all()


def test_a_uniform_prediction_never_confirms_a_label() -> None:
    assert not topk_keep([1], np.full((1, 4), 0.25), k=1).any()


def test_topk_from_uploaded_ids() -> None:
    ids = np.array([[0, 1], [0, 1], [0, 1], [2, 1]])

    assert topk_keep_from_ids(LABELS, ids, k=1).tolist() == [True, False, False, False]
    assert topk_keep_from_ids(LABELS, ids).tolist() == [True, True, False, False]


def test_pullback_moves_back_rejected_samples_whose_label_is_now_in_topk() -> None:
    kept = np.array([True, False, False, False])
    # A kept-set model's predictions for the rejected samples 1, 2, 3.
    probs = np.array([[0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.6, 0.3, 0.1]])

    result = pullback(LABELS, kept, probs, k=1)

    assert result.pulled_back.tolist() == [1, 3]
    assert result.kept.tolist() == [True, True, False, True]


def test_pullback_never_rejects_a_kept_sample() -> None:
    kept = np.array([True, True, False, False])
    probs = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])

    result = pullback(LABELS, kept, probs, k=1, indices=[0, 2])

    assert result.kept.tolist() == [True, True, True, False]
    assert result.pulled_back.tolist() == [2]


def test_pullback_with_top2_pulls_back_more() -> None:
    kept = np.array([True, False, False, False])
    probs = np.array([[0.5, 0.3, 0.2], [0.5, 0.1, 0.4], [0.3, 0.3, 0.4]])

    assert pullback(LABELS, kept, probs, k=1).pulled_back.tolist() == []
    assert pullback(LABELS, kept, probs, k=2).pulled_back.tolist() == [1, 2]


def test_pullback_from_ids() -> None:
    kept = np.array([True, False, False, False])

    result = pullback_from_ids(LABELS, kept, np.array([[1, 0], [2, 0], [2, 1]]), k=1)

    assert result.pulled_back.tolist() == [1, 2]


def test_pullback_checks_the_prediction_rows() -> None:
    with pytest.raises(ValueError, match="do not match 2 prediction rows"):
        pullback(LABELS, np.array([True, False, False, False]), PROBS[:2], k=1)


@pytest.fixture
def noisy_probs() -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.bool_]]:
    """300 samples, 3 classes, a model that is right about the true class; 10% labels flipped."""
    rng = np.random.default_rng(0)
    truth = np.arange(300) % 3
    probs = rng.dirichlet([1, 1, 1], size=300) * 0.3
    probs[np.arange(300), truth] += 0.7
    flipped = np.zeros(300, dtype=bool)
    flipped[rng.choice(300, size=30, replace=False)] = True
    labels = truth.copy()
    labels[flipped] = (truth[flipped] + 1) % 3
    return labels, probs, flipped


def test_confident_learning_finds_injected_flips(
    noisy_probs: tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.bool_]],
) -> None:
    labels, probs, flipped = noisy_probs

    issues = confident_learning(labels, probs)

    quality = rejection_quality(issues, flipped)
    assert quality.recall >= 0.85
    assert quality.precision >= 0.9


def test_label_quality_is_lower_for_flipped_samples(
    noisy_probs: tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.bool_]],
) -> None:
    labels, probs, flipped = noisy_probs

    scores = label_quality(labels, probs)

    assert scores[flipped].max() < scores[~flipped].min()


def test_confident_learning_requires_probabilities() -> None:
    with pytest.raises(ValueError, match="rows must sum to 1"):
        confident_learning(LABELS, PROBS * 2)


def test_rejection_quality_counts() -> None:
    quality = rejection_quality([True, True, False, False], [True, False, True, False])

    assert (quality.precision, quality.recall, quality.f1) == (0.5, 0.5, 0.5)
    assert (quality.rejected, quality.mislabeled, quality.true_positives) == (2, 2, 1)


def test_labels_outside_the_predicted_classes_are_refused() -> None:
    with pytest.raises(ValueError, match="outside the 3 predicted classes"):
        topk_keep([0, 5, 0, 0], PROBS)


# --- kNN label agreement ---------------------------------------------------------------------


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

    agreement = knn_agreement(features, labels, k=3)

    # The mislabeled point's three neighbours all say 0; each other point of the first
    # cluster sees the mislabeled one among its three neighbours.
    np.testing.assert_allclose(agreement, [2 / 3, 2 / 3, 2 / 3, 0.0, 1.0, 1.0, 1.0, 1.0])


def test_knn_votes_rank_like_probabilities_in_the_top_k_rule() -> None:
    features, labels = _two_clusters()

    votes = knn_votes(features, labels, k=3)

    np.testing.assert_allclose(votes.sum(axis=1), 1.0)
    assert topk_keep(labels, votes, k=1).tolist() == [True, True, True, False] + [True] * 4


def test_knn_excludes_the_sample_itself_and_caps_k() -> None:
    features = np.array([[1.0, 0.0], [0.9, 0.1]])

    agreement = knn_agreement(features, np.array([0, 1]), k=10)

    assert agreement.tolist() == [0.0, 0.0]


# --- final training targets ------------------------------------------------------------------


def test_final_targets_by_use() -> None:
    labels = np.array([0, 1, 2, 0])
    kept = np.array([True, True, False, False])
    probs = np.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.05, 0.95, 0.0], [0.5, 0.1, 0.4]])

    dropped = final_training_targets(labels, kept, None, use="drop")
    soft = final_training_targets(labels, kept, probs, use="soft", weight=0.3)
    relabelled = final_training_targets(labels, kept, probs, use="relabel", relabel_threshold=0.9)

    assert dropped.rows.tolist() == [0, 1] and dropped.soft is None
    assert soft.rows.tolist() == [0, 1, 2, 3] and soft.labels.tolist() == [0, 1, -1, -1]
    assert soft.weights is not None and soft.weights.tolist() == pytest.approx([1, 1, 0.3, 0.3])
    assert relabelled.labels.tolist() == [0, 1, 1, -1] and relabelled.rows.tolist() == [0, 1, 2]
    assert relabelled.sources == {"kept": 2, "soft": 0, "relabelled": 1}


def test_final_targets_never_read_the_given_labels_of_rejected_samples() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=50)
    kept = rng.random(50) < 0.6
    probs = rng.dirichlet(np.ones(5), size=50)
    scrambled = labels.copy()
    scrambled[~kept] = rng.integers(0, 5, size=int((~kept).sum()))

    for use in ("drop", "soft", "relabel"):
        first = final_training_targets(labels, kept, probs, use=use, relabel_threshold=0.5)  # type: ignore[arg-type]
        second = final_training_targets(scrambled, kept, probs, use=use, relabel_threshold=0.5)  # type: ignore[arg-type]
        assert first.labels.tolist() == second.labels.tolist()
        assert first.rows.tolist() == second.rows.tolist()


# --- calibrated pull-back -------------------------------------------------------------------


def test_calibrated_pullback_moves_back_the_band_where_rejects_are_mostly_right() -> None:
    # Judged rejects: under 0.3 the given label was wrong 9 times in 10, above it right 3 in 4.
    low = np.linspace(0.0, 0.29, 20)
    high = np.linspace(0.3, 0.6, 20)
    scores = np.concatenate([low, high])
    wrong = np.concatenate([np.arange(20) % 10 != 0, np.arange(20) % 4 == 0])

    moved = calibrated_pullback(scores, wrong, np.array([0.01, 0.2, 0.29, 0.35, 0.45, 0.9]))

    assert moved.tolist() == [False, False, False, True, True, True]


def test_calibrated_pullback_moves_nothing_where_rejects_are_mostly_wrong() -> None:
    # High noise: even the rejects the model found likeliest are wrong more often than not.
    scores = np.linspace(0.0, 0.5, 40)
    wrong = np.arange(40) % 3 != 0

    moved = calibrated_pullback(scores, wrong, np.linspace(0.0, 1.0, 11))

    assert not moved.any()


def test_calibrated_pullback_needs_enough_verdicts_of_both_kinds() -> None:
    scores = np.linspace(0.0, 1.0, 30)
    rest = np.array([0.5, 0.99])

    assert not calibrated_pullback(scores[:10], scores[:10] < 0.05, rest).any()
    # Only the last judged reject was right: too few verdicts in the band to move anything.
    assert not calibrated_pullback(scores, scores < 0.99, rest).any()
    assert not calibrated_pullback(scores, np.zeros(30, dtype=bool), rest).any()
    assert calibrated_pullback(scores, scores < 0.3, rest).all()
    with pytest.raises(ValueError, match="finite"):
        calibrated_pullback(scores, scores < 0.3, np.array([np.nan]))
    with pytest.raises(ValueError, match="bool verdicts"):
        calibrated_pullback(scores, (scores < 0.3).astype(int), rest)  # type: ignore[arg-type]
