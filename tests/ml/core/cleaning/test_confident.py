"""Confident learning through cleanlab (ml/core/cleaning/confident.py)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from ml.core.cleaning.confident import (
    confident_learning,
    label_issues_among_present,
    label_quality,
)
from ml.core.cleaning.quality import rejection_quality
from tests.ml.core.cleaning.factories import LABELS, PROBS


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


def test_classes_no_sample_has_are_left_out_and_the_rows_renormalised(
    noisy_probs: tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.bool_]],
) -> None:
    """As a manifest's labelled part sees a dataset's classes: a fourth class, which no sample
    is labelled with, holds most of the first sample's probability."""
    labels, probs, flipped = noisy_probs
    wider = np.hstack([probs * 0.5, np.full((300, 1), 0.5)])
    wider[0] = [0.1, 0.1, 0.0, 0.8]
    labels = labels.copy()
    labels[0] = 0

    issues, quality = label_issues_among_present(labels, wider)

    # Over the present classes the first sample's label has half the probability.
    assert quality[0] == pytest.approx(0.5)
    assert rejection_quality(issues[1:], flipped[1:]).recall >= 0.85


def test_with_one_class_present_nothing_is_an_issue() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])

    issues, quality = label_issues_among_present(np.array([0, 0]), probs)

    assert issues.tolist() == [False, False]
    assert quality.tolist() == [1.0, 1.0]
