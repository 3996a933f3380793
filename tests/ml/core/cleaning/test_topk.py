"""The top-k rule, label ranks and the pull-backs (ml/core/cleaning/topk.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ml.core.cleaning.topk import (
    calibrated_pullback,
    label_rank_among_classes,
    label_ranks_in_topk,
    pullback,
    pullback_from_ids,
    topk_keep,
    topk_keep_from_ids,
    topk_keep_from_ranks,
)
from tests.ml.core.cleaning.factories import LABELS, PROBS


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


def test_a_label_rank_in_the_top_k_is_its_place_there_and_drives_the_rule() -> None:
    """The rank a pipeline sample stores and the rule the server applies to it: -1 where the
    label is not among the ids, or the sample has no label (-1)."""
    ids = np.array([[3, 7, 9], [3, 7, 9], [3, 7, 9], [3, 7, 9]])

    ranks = label_ranks_in_topk([7, 4, 3, -1], ids)

    assert ranks.tolist() == [1, -1, 0, -1]
    assert topk_keep_from_ranks(ranks, 1).tolist() == [False, False, True, False]
    assert topk_keep_from_ranks(ranks, 2).tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="3 top-k rows for 2 samples"):
        label_ranks_in_topk([7, 4], ids[:3])


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


def test_labels_outside_the_predicted_classes_are_refused() -> None:
    with pytest.raises(ValueError, match="outside the 3 predicted classes"):
        topk_keep([0, 5, 0, 0], PROBS)


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
