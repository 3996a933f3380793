"""CutMix, mixup and normalisation of batches (ml/augment/batch.py)."""

from __future__ import annotations

import pytest
import torch

from ml.augment.batch import BatchMixer, normalize
from ml.core.augment_config import AugmentConfig


def constant_batch(batch: int, height: int, width: int) -> torch.Tensor:
    """Image i is filled with the value i + 1, so every pixel tells which image it came from."""
    values = torch.arange(1, batch + 1, dtype=torch.float32).view(batch, 1, 1, 1)
    return values.expand(batch, 3, height, width).clone()


@pytest.mark.parametrize(("height", "width"), [(16, 16), (17, 23)])
def test_cutmix_label_weights_equal_the_pasted_area(height: int, width: int) -> None:
    batch = 6
    mixer = BatchMixer(AugmentConfig.model_validate({"cutmix": {"alpha": 1.0, "p": 1.0}}), batch)
    images = constant_batch(batch, height, width)
    partial_boxes = 0
    for seed in range(30):
        mixed, soft = mixer(images, torch.arange(batch), torch.Generator().manual_seed(seed))
        assert soft.shape == (batch, batch) and soft.dtype == torch.float32
        for i in range(batch):
            fractions = torch.stack([(mixed[i, 0] == c + 1).float().mean() for c in range(batch)])
            torch.testing.assert_close(soft[i], fractions, rtol=0, atol=1e-6)
        pasted = (mixed != images).any(dim=1)[0].float().mean()
        partial_boxes += int(0 < pasted < 1)
    assert partial_boxes > 0


def test_mixup_mixes_images_and_targets_with_the_same_weight() -> None:
    batch = 5
    mixer = BatchMixer(AugmentConfig.model_validate({"mixup": {"alpha": 0.4, "p": 1.0}}), batch)
    images = constant_batch(batch, 4, 4)
    for seed in range(5):
        mixed, soft = mixer(images, torch.arange(batch), torch.Generator().manual_seed(seed))
        torch.testing.assert_close(soft.sum(dim=1), torch.ones(batch))
        # Image i holds the value i + 1, so a mix's value is its label weights times (c + 1).
        expected = soft @ torch.arange(1, batch + 1, dtype=torch.float32)
        torch.testing.assert_close(mixed, expected.view(batch, 1, 1, 1).expand_as(mixed))
        assert not torch.equal(mixed, images)


def test_mixer_off_returns_images_and_one_hot_targets() -> None:
    mixer = BatchMixer(AugmentConfig(), num_classes=4)
    images = torch.rand(3, 3, 8, 8)
    mixed, soft = mixer(images, torch.tensor([3, 0, 1]), torch.Generator())
    assert not mixer.enabled
    assert torch.equal(mixed, images)
    assert torch.equal(soft, torch.eye(4)[[3, 0, 1]])


def test_mixer_applies_cutmix_or_mixup_at_their_rates() -> None:
    config = AugmentConfig.model_validate({"cutmix": {"p": 0.3}, "mixup": {"p": 0.3}})
    mixer = BatchMixer(config, num_classes=4)
    images = constant_batch(4, 8, 8)
    kinds = {"cutmix": 0, "mixup": 0, "none": 0}
    generator = torch.Generator().manual_seed(0)
    for _ in range(400):
        mixed, _ = mixer(images, torch.arange(4), generator)
        if torch.equal(mixed, images):
            kinds["none"] += 1
        elif torch.equal(mixed, mixed.round()):
            kinds["cutmix"] += 1
        else:
            kinds["mixup"] += 1
    assert 80 <= kinds["cutmix"] <= 160
    assert 80 <= kinds["mixup"] <= 160
    assert 120 <= kinds["none"] <= 200


def test_mixer_is_reproducible_with_a_seed() -> None:
    mixer = BatchMixer(AugmentConfig.model_validate({"cutmix": {"p": 1.0}}), num_classes=4)
    images = torch.rand(4, 3, 8, 8)
    a = mixer(images, torch.arange(4), torch.Generator().manual_seed(5))
    b = mixer(images, torch.arange(4), torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_normalize_maps_uint8_to_standardised_floats() -> None:
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    out = normalize(images, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert out.dtype == torch.float32 and out.shape == (2, 3, 2, 2)
    assert torch.equal(out[0], torch.full((3, 2, 2), -1.0))
    assert torch.equal(out[1], torch.full((3, 2, 2), 1.0))
