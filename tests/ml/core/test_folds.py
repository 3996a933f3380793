"""Stratified folds (ml/core/folds.py)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from ml.core.folds import stratified_folds


@pytest.fixture
def long_tail_labels() -> NDArray[np.int64]:
    rng = np.random.default_rng(0)
    counts = [50, 23, 11, 5, 3, 1]
    return rng.permutation(np.repeat(np.arange(len(counts)), counts)).astype(np.int64)


def test_stratified_folds_split_every_class_evenly(long_tail_labels: NDArray[np.int64]) -> None:
    folds = stratified_folds(long_tail_labels, 5, seed=0)

    for label in np.unique(long_tail_labels):
        per_fold = np.bincount(folds[long_tail_labels == label], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= 1


def test_stratified_folds_are_seeded(long_tail_labels: NDArray[np.int64]) -> None:
    first = stratified_folds(long_tail_labels, 5, seed=3)

    np.testing.assert_array_equal(first, stratified_folds(long_tail_labels, 5, seed=3))
    assert not np.array_equal(first, stratified_folds(long_tail_labels, 5, seed=4))


def test_labels_that_sort_alike_give_the_same_folds(long_tail_labels: NDArray[np.int64]) -> None:
    class_ids = np.array([3, 8, 20, 21, 40, 99])[long_tail_labels]

    np.testing.assert_array_equal(
        stratified_folds(long_tail_labels, 5, seed=1), stratified_folds(class_ids, 5, seed=1)
    )


def test_the_folds_of_a_seed_do_not_change() -> None:
    # The server stores these folds in its manifests: a change here changes what a resumed
    # pipeline's fold jobs would train on.
    labels = [0, 1, 0, 2, 1, 0, 2, 2, 1, 0]
    assert stratified_folds(labels, 3, seed=7).tolist() == [0, 0, 2, 1, 1, 1, 2, 0, 2, 0]


@pytest.mark.parametrize(
    ("labels", "k", "reason"),
    [
        ([0, 1, 0], 5, "cannot split 3 samples into 5 folds"),
        ([0, 1, 0], 1, "k must be between 2 and 127"),
        (list(range(200)), 128, "k must be between 2 and 127"),
        ([[0, 1], [1, 0]], 2, "one-dimensional"),
    ],
)
def test_impossible_splits_are_refused(labels: object, k: int, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        stratified_folds(labels, k, seed=0)  # type: ignore[arg-type]
