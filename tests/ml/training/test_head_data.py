"""What a head's training rows learn from (ml/training/head_data.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml.heads import HeadTargets
from ml.training.head_data import head_targets, mix_features
from ml.training.interface import TrainingError
from tests.ml.factories import head_recipe


def test_a_row_without_a_label_learns_its_normalised_soft_target() -> None:
    labels = np.array([0, -1, 2])
    soft = np.array([[1, 0, 0], [2, 1, 1], [0, 0, 1]], dtype=np.float32)

    targets, weights, classes = head_targets(
        labels, np.arange(3), 3, HeadTargets(soft=soft, weights=np.array([1.0, 0.5, 2.0]))
    )

    assert targets.tolist() == [[1, 0, 0], [0.5, 0.25, 0.25], [0, 0, 1]]
    assert weights.tolist() == [1.0, 0.5, 2.0]
    assert classes.tolist() == [0, 0, 2]


def test_a_row_without_a_label_needs_a_soft_target() -> None:
    with pytest.raises(TrainingError, match="need soft targets"):
        head_targets(np.array([0, -1]), np.arange(2), 2, HeadTargets())


def test_mixing_mixes_every_tensor_with_the_same_partners() -> None:
    recipe = head_recipe(**{"augment.mixup.alpha": 0.4, "augment.mixup.p": 1.0})
    features = torch.arange(8.0).view(4, 2)
    targets = torch.eye(4)

    mixed_features, mixed_targets = mix_features(
        recipe, [features, targets], torch.Generator().manual_seed(0)
    )

    # Each mixed row is lam * row + (1 - lam) * partner, for features and targets alike.
    assert torch.allclose(mixed_targets @ features, mixed_features)


def test_without_mixup_a_batch_is_left_alone() -> None:
    batch = [torch.ones(2, 3)]

    assert mix_features(head_recipe(), batch, torch.Generator()) is batch
