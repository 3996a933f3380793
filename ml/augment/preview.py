"""Previews of a recipe's augmentations (``thresher augment-preview``): ``n`` training views of
one image, tiled into a grid."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ml.augment.batch import BatchMixer
from ml.augment.randomness import sample_generator
from ml.augment.transforms import build_sample_transform
from ml.core.augment_config import AugmentConfig

__all__ = ["augment_samples", "image_grid"]


def augment_samples(
    image: Tensor, config: AugmentConfig, *, image_size: int, n: int, seed: int
) -> Tensor:
    """``n`` training views of one image, as a recipe would produce them, uint8
    ``[n, 3, image_size, image_size]``.

    View ``i`` uses ``sample_generator(seed, i)``. When the recipe mixes batches, the ``n`` views
    are then mixed with each other as one batch (CutMix pastes a box from another view).
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    transform = build_sample_transform(config, image_size=image_size, train=True)
    views = torch.stack([transform(image, sample_generator(seed, i)) for i in range(n)])
    if not config.batch_mixing:
        return views
    mixer = BatchMixer(config, num_classes=n)
    mixed, _ = mixer(views.float(), torch.arange(n), sample_generator(seed, n))
    return mixed.round().clamp_(0, 255).to(torch.uint8)


def image_grid(
    images: Tensor, *, columns: int | None = None, padding: int = 2, fill: int = 255
) -> Tensor:
    """Tile uint8 images ``[N, 3, H, W]`` row by row into one uint8 image ``[3, H', W']``.

    ``columns`` defaults to ``ceil(sqrt(N))``; ``padding`` pixels of ``fill`` separate the tiles
    and frame the grid.
    """
    if images.ndim != 4 or images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images [N, 3, H, W], got {images.dtype} {images.shape}")
    count, channels, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = torch.full(
        (channels, padding + rows * (height + padding), padding + columns * (width + padding)),
        fill,
        dtype=torch.uint8,
    )
    for index in range(count):
        row, col = divmod(index, columns)
        top = padding + row * (height + padding)
        left = padding + col * (width + padding)
        grid[:, top : top + height, left : left + width] = images[index]
    return grid
