"""The class-balanced sampler (ml/sampler.py)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ml.sampler import ClassBalancedSampler, balanced_class_draws, expected_class_draws

# Class 0 is the largest (300); 1 and 4 are below a third of it; 2 is above; 3 is empty.
COUNTS = [300, 10, 150, 0, 99]


def labels_for(counts: list[int], seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(labels)


def test_expected_draws_lift_small_classes_to_a_third_of_the_largest() -> None:
    draws = expected_class_draws(COUNTS, min_fraction=1 / 3)
    assert draws.tolist() == [300.0, 100.0, 150.0, 0.0, 100.0]
    assert balanced_class_draws(COUNTS).tolist() == [300, 100, 150, 0, 100]
    nonempty = draws[draws > 0]
    assert nonempty.min() / nonempty.max() == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [(0.0, [300, 10, 150, 0, 99]), (0.5, [300, 150, 150, 0, 150]), (1.0, [300, 300, 300, 0, 300])],
)
def test_min_fraction_sets_the_floor(fraction: float, expected: list[int]) -> None:
    assert balanced_class_draws(COUNTS, min_fraction=fraction).tolist() == expected


def test_expected_draws_with_a_fixed_epoch_length_keep_the_ratios() -> None:
    draws = expected_class_draws(COUNTS, num_samples=130)
    np.testing.assert_allclose(draws, [60, 20, 30, 0, 20])


def test_epoch_length_is_the_sum_of_class_draws() -> None:
    sampler = ClassBalancedSampler(labels_for(COUNTS), seed=0)
    assert len(sampler) == 650
    assert len(list(sampler)) == 650


def test_empirical_class_draws_match_the_expected_counts_over_many_epochs() -> None:
    labels = labels_for(COUNTS)
    sampler = ClassBalancedSampler(labels, min_fraction=1 / 3, seed=1)
    totals: Counter[int] = Counter()
    epochs = 20
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        totals.update(int(labels[i]) for i in sampler)
    observed = np.array([totals[c] for c in range(len(COUNTS))], dtype=np.float64)
    np.testing.assert_array_equal(observed, sampler.expected_class_draws() * epochs)
    assert observed[1] / observed[0] == pytest.approx(1 / 3)
    assert observed[2] / observed[0] == pytest.approx(0.5)  # above the floor: natural rate


def test_empirical_draws_with_a_fixed_epoch_length_average_to_the_expectation() -> None:
    labels = labels_for(COUNTS)
    sampler = ClassBalancedSampler(labels, seed=2, num_samples=101)
    expected = sampler.expected_class_draws()
    totals = np.zeros(len(COUNTS))
    epochs = 400
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        drawn = np.bincount(labels[list(sampler)], minlength=len(COUNTS))
        assert drawn.sum() == 101
        assert np.all(np.abs(drawn - expected) < 1)  # each epoch: floor or ceiling
        totals += drawn
    np.testing.assert_allclose(totals / epochs, expected, atol=0.05)


def test_large_classes_show_each_sample_once_and_small_ones_evenly() -> None:
    labels = labels_for(COUNTS)
    sampler = ClassBalancedSampler(labels, seed=3)
    seen = Counter(sampler)
    large = np.flatnonzero(labels == 0)
    assert all(seen[int(i)] == 1 for i in large)
    small = np.flatnonzero(labels == 1)  # 10 samples drawn 100 times
    assert all(seen[int(i)] == 10 for i in small)
    medium = np.flatnonzero(labels == 4)  # 99 samples drawn 100 times
    assert sorted(seen[int(i)] for i in medium) == [1] * 98 + [2]


def test_same_seed_and_epoch_repeat_and_a_new_epoch_reshuffles() -> None:
    labels = labels_for(COUNTS)
    a = ClassBalancedSampler(labels, seed=4)
    b = ClassBalancedSampler(labels, seed=4)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(ClassBalancedSampler(labels, seed=5)) != first


def test_sampler_feeds_a_dataloader() -> None:
    labels = labels_for([40, 4])
    dataset = TensorDataset(torch.as_tensor(labels))
    sampler = ClassBalancedSampler(torch.as_tensor(labels), min_fraction=0.5, seed=0)
    batches = list(DataLoader(dataset, batch_size=10, sampler=sampler))
    drawn = torch.cat([batch[0] for batch in batches])
    assert torch.bincount(drawn).tolist() == [40, 20]


def test_num_classes_pads_trailing_empty_classes() -> None:
    sampler = ClassBalancedSampler([0, 0, 1], seed=0, num_classes=4)
    assert sampler.class_counts.tolist() == [2, 1, 0, 0]
    assert sampler.expected_class_draws().tolist() == [2.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": [], "seed": 0}, "empty"),
        ({"labels": [0, -1], "seed": 0}, "non-negative"),
        ({"labels": [0.5, 1.0], "seed": 0}, "integers"),
        ({"labels": [0, 1], "seed": 0, "min_fraction": 1.5}, "min_fraction"),
        ({"labels": [0, 3], "seed": 0, "num_classes": 2}, "num_classes"),
    ],
)
def test_sampler_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClassBalancedSampler(**kwargs)  # type: ignore[arg-type]
