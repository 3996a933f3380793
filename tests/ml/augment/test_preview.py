"""Augmentation previews (ml/augment/preview.py)."""

from __future__ import annotations

import io

import torch
from PIL import Image

from ml.augment.preview import augment_samples, image_grid
from ml.core.augment_config import AugmentConfig
from tests.ml.augment.factories import EVERYTHING_ON, smooth_image


def test_augment_samples_and_grid_shapes() -> None:
    config = AugmentConfig.model_validate(EVERYTHING_ON)
    samples = augment_samples(smooth_image(40, 40), config, image_size=16, n=5, seed=0)
    assert samples.shape == (5, 3, 16, 16) and samples.dtype == torch.uint8
    grid = image_grid(samples, padding=2)
    assert grid.shape == (3, 2 + 2 * 18, 2 + 3 * 18)
    buffer = io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    assert buffer.getvalue().startswith(b"\x89PNG")
