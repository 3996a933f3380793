"""Per-sample transforms: one decoded image, a uint8 tensor ``[3, H, W]``, in and out.

Each transform is a small frozen dataclass with a ``__call__(image, generator)`` that takes every
random choice from ``generator`` (:mod:`ml.augment.randomness`). Transforms never modify their
input in place, but an output may share memory with it (a crop is a view). In a dataset, give
each sample its own stream: ``sample_generator(seed, epoch, index)``.
:func:`build_sample_transform` composes a recipe's :class:`~ml.core.augment_config.AugmentConfig`
into the training (or evaluation) pipeline.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor

from ml.augment.randomness import bernoulli, randint, uniform
from ml.core.augment_config import AugmentConfig, quality_size_range

__all__ = [
    "CenterCropResize",
    "ColorJitter",
    "Compose",
    "GridShuffle",
    "HFlip",
    "RandomDownscale",
    "RandomJpegQuality",
    "RandomResizedCrop",
    "Rotate4",
    "SampleTransform",
    "ScaledPaste",
    "build_sample_transform",
]

SampleTransform = Callable[[Tensor, torch.Generator], Tensor]
"""A per-sample transform: ``(image uint8 [3, H, W], generator) -> image uint8 [3, H', W']``."""


def _check_image(image: Tensor) -> None:
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(
            f"expected a uint8 image [3, H, W], got dtype {image.dtype} shape {tuple(image.shape)}"
        )


def _resize(image: Tensor, height: int, width: int) -> Tensor:
    resized: Tensor = TF.resize(image, [height, width], antialias=True)
    return resized


@dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order, all drawing from the same generator."""

    transforms: tuple[SampleTransform, ...]

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        for transform in self.transforms:
            image = transform(image, generator)
        return image


@dataclass(frozen=True)
class CenterCropResize:
    """Deterministic evaluation geometry: scale the shorter side to ``size / crop_pct``, then cut
    the central ``size × size`` square. ``crop_pct = 1`` keeps as much of the image as a square
    allows. Uses no randomness (the generator is ignored)."""

    size: int
    crop_pct: float = 1.0

    def __call__(self, image: Tensor, generator: torch.Generator | None = None) -> Tensor:
        height, width = image.shape[-2:]
        shorter = max(self.size, round(self.size / self.crop_pct))
        if height <= width:
            new_h, new_w = shorter, max(shorter, round(width * shorter / height))
        else:
            new_h, new_w = max(shorter, round(height * shorter / width)), shorter
        if (new_h, new_w) != (height, width):
            image = _resize(image, new_h, new_w)
        cropped: Tensor = TF.center_crop(image, [self.size, self.size])
        return cropped


@dataclass(frozen=True)
class RandomResizedCrop:
    """Crop a random region (area fraction in ``scale``, aspect ratio in ``ratio``, log-uniform)
    and resize it to ``size × size``. After ten failed tries, falls back to a centre crop at the
    nearest allowed aspect ratio."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def box(self, height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
        """``(top, left, crop_height, crop_width)`` of the region to keep."""
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target_area = area * uniform(generator, *self.scale)
            aspect = math.exp(uniform(generator, log_lo, log_hi))
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = randint(generator, 0, height - h)
                left = randint(generator, 0, width - w)
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        top, left, h, w = self.box(image.shape[-2], image.shape[-1], generator)
        out: Tensor = TF.resized_crop(
            image, top, left, h, w, [self.size, self.size], antialias=True
        )
        return out


@dataclass(frozen=True)
class HFlip:
    """Mirror left–right with probability ``p``."""

    p: float = 0.5

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        return image.flip(-1) if bernoulli(generator, self.p) else image


@dataclass(frozen=True)
class Rotate4:
    """With probability ``p``, rotate by 90, 180 or 270 degrees (chosen uniformly), exactly as
    ``torch.rot90(image, k, dims=(-2, -1))``. A lossless pixel permutation; a 90/270 rotation of a
    non-square image swaps H and W."""

    p: float = 0.25

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        if not bernoulli(generator, self.p):
            return image
        k = randint(generator, 1, 3)
        return torch.rot90(image, k, dims=(-2, -1))


@dataclass(frozen=True)
class ColorJitter:
    """With probability ``p``, jitter brightness, contrast, saturation and hue in a random order.

    Factors are uniform in ``[max(0, 1 - x), 1 + x]`` for brightness, contrast and saturation, and
    the hue shift is uniform in ``[-hue, hue]`` (a fraction of the colour wheel, at most 0.5).
    A strength of 0 leaves that property alone.
    """

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    p: float = 1.0

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        if not bernoulli(generator, self.p):
            return image
        order = torch.randperm(4, generator=generator, device=generator.device).tolist()
        for op in order:
            if op == 0 and self.brightness > 0:
                image = TF.adjust_brightness(image, _jitter_factor(generator, self.brightness))
            elif op == 1 and self.contrast > 0:
                image = TF.adjust_contrast(image, _jitter_factor(generator, self.contrast))
            elif op == 2 and self.saturation > 0:
                image = TF.adjust_saturation(image, _jitter_factor(generator, self.saturation))
            elif op == 3 and self.hue > 0:
                image = TF.adjust_hue(image, uniform(generator, -self.hue, self.hue))
        return image


def _jitter_factor(generator: torch.Generator, strength: float) -> float:
    """A factor uniform in ``[max(0, 1 - strength), 1 + strength]``."""
    return uniform(generator, max(0.0, 1 - strength), 1 + strength)


@dataclass(frozen=True)
class RandomDownscale:
    """With probability ``p``, shrink the image so its shorter side is a random ``min_size`` to
    ``max_size`` pixels (inclusive), then resize it back to its original ``H × W``: the blur of a
    low-resolution web image upscaled. A target at least as large as the image does nothing."""

    min_size: int
    max_size: int
    p: float = 0.5

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        if not bernoulli(generator, self.p):
            return image
        height, width = image.shape[-2:]
        target = randint(generator, self.min_size, self.max_size)
        shorter = min(height, width)
        if target >= shorter:
            return image
        small_h = max(1, round(height * target / shorter))
        small_w = max(1, round(width * target / shorter))
        return _resize(_resize(image, small_h, small_w), height, width)


@dataclass(frozen=True)
class RandomJpegQuality:
    """With probability ``p``, re-encode as JPEG at a random quality in ``[min_quality,
    max_quality]`` and decode again: compression artefacts. Keeps the size and dtype."""

    min_quality: int = 30
    max_quality: int = 70
    p: float = 0.5

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        if not bernoulli(generator, self.p):
            return image
        quality = randint(generator, self.min_quality, self.max_quality)
        pixels = image.permute(1, 2, 0).contiguous().cpu().numpy()
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            array = np.asarray(decoded.convert("RGB"))
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous().to(image.device)


@dataclass(frozen=True)
class ScaledPaste:
    """With probability ``p``, shrink the image by a random factor in ``[min_scale, max_scale]``
    and paste it at a random position on a canvas of the original size.

    ``fill`` is the canvas colour: an RGB triple, ``"mean"`` (the image's own mean colour) or
    ``"random"`` (a random colour per call).
    """

    min_scale: float = 0.5
    max_scale: float = 1.0
    fill: tuple[int, int, int] | Literal["mean", "random"] = "mean"
    p: float = 0.5

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        if not bernoulli(generator, self.p):
            return image
        height, width = image.shape[-2:]
        factor = uniform(generator, self.min_scale, self.max_scale)
        small_h = min(height, max(1, round(height * factor)))
        small_w = min(width, max(1, round(width * factor)))
        top = randint(generator, 0, height - small_h)
        left = randint(generator, 0, width - small_w)
        if self.fill == "mean":
            colour = image.float().mean(dim=(-2, -1)).round().to(torch.uint8)
        elif self.fill == "random":
            colour = torch.randint(
                0, 256, (3,), generator=generator, device=generator.device, dtype=torch.uint8
            ).to(image.device)
        else:
            colour = torch.tensor(self.fill, dtype=torch.uint8, device=image.device)
        canvas = colour.view(3, 1, 1).expand(3, height, width).clone()
        canvas[:, top : top + small_h, left : left + small_w] = _resize(image, small_h, small_w)
        return canvas


@dataclass(frozen=True)
class GridShuffle:
    """With probability ``p``, cut the image into ``grid × grid`` equal tiles and put them back in
    a random order: an exact permutation of the pixels. When H or W is not a multiple of ``grid``,
    the tiles are ``H // grid × W // grid`` and the leftover bottom and right strips stay put."""

    grid: int = 2
    p: float = 0.5

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        if not bernoulli(generator, self.p):
            return image
        n = self.grid
        height, width = image.shape[-2:]
        th, tw = height // n, width // n
        if th == 0 or tw == 0:
            return image
        order = torch.randperm(n * n, generator=generator, device=generator.device).tolist()
        core = image[:, : n * th, : n * tw]
        # [3, n*th, n*tw] -> [n*n, 3, th, tw], tile (row, col) at index row*n + col.
        tiles = core.reshape(3, n, th, n, tw).permute(1, 3, 0, 2, 4).reshape(n * n, 3, th, tw)
        shuffled = tiles[order].reshape(n, n, 3, th, tw).permute(2, 0, 3, 1, 4)
        out = image.clone()
        out[:, : n * th, : n * tw] = shuffled.reshape(3, n * th, n * tw)
        return out


def build_sample_transform(
    config: AugmentConfig, *, image_size: int, train: bool
) -> SampleTransform:
    """The per-sample pipeline of a recipe.

    Args:
        config: the recipe's augmentations.
        image_size: side of the square output, pixels.
        train: ``False`` gives the deterministic evaluation transform (resize + centre crop),
            ignoring every augmentation.

    Returns:
        ``f(image, generator)`` taking a uint8 ``[3, H, W]`` image of any size and returning a
        uint8 ``[3, image_size, image_size]`` one. The same generator seed gives the same output.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    eval_geometry = CenterCropResize(image_size, config.eval_crop_pct)
    if not train:
        return _Checked(eval_geometry)

    steps: list[SampleTransform] = []
    if config.random_resized_crop is not None:
        rrc = config.random_resized_crop
        steps.append(RandomResizedCrop(image_size, scale=rrc.scale, ratio=rrc.ratio))
    else:
        steps.append(eval_geometry)
    if config.scaled_paste is not None:
        sp = config.scaled_paste
        steps.append(ScaledPaste(sp.min_scale, sp.max_scale, fill=sp.fill, p=sp.p))
    if config.rotate4 is not None:
        steps.append(Rotate4(config.rotate4.p))
    if config.hflip is not None:
        steps.append(HFlip(config.hflip.p))
    if config.color_jitter is not None:
        cj = config.color_jitter
        steps.append(ColorJitter(cj.brightness, cj.contrast, cj.saturation, cj.hue, p=cj.p))
    if config.grid_shuffle is not None:
        steps.append(GridShuffle(config.grid_shuffle.grid, config.grid_shuffle.p))
    if config.random_quality is not None:
        rq = config.random_quality
        low, high = quality_size_range(rq, image_size)
        steps.append(RandomDownscale(low, high, p=rq.downscale_p))
        steps.append(RandomJpegQuality(rq.min_quality, rq.max_quality, p=rq.jpeg_p))
    return _Checked(Compose(tuple(steps)))


@dataclass(frozen=True)
class _Checked:
    """Validates the input image before running ``transform``."""

    transform: Callable[[Tensor, torch.Generator], Tensor]

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        _check_image(image)
        return self.transform(image, generator)
