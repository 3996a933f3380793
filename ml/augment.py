"""Training augmentations: explicit parameters, explicit randomness, composable into a recipe.

Two levels:

* **Per-sample transforms** work on one decoded image, a uint8 tensor ``[3, H, W]``, and take an
  explicit :class:`torch.Generator` for every random choice, so a sample's augmentation depends only
  on the generator's seed (not on global RNG state, worker ids or call order elsewhere). Each
  transform is a small frozen dataclass with a ``__call__(image, generator)``. Transforms never
  modify their input in place, but an output may share memory with it (a crop is a view).
  In a dataset, give each sample its own stream: ``sample_generator(seed, epoch, index)``.
* **Batch mixing** (CutMix, mixup) works on a float batch ``[B, 3, H, W]`` and turns hard labels
  ``[B]`` into soft targets ``[B, C]``: :class:`BatchMixer`.

A recipe describes both with one :class:`AugmentConfig` (every augmentation off by default), e.g.
``{"hflip": {"p": 0.5}, "rotate4": {"p": 0.25}, "cutmix": {"alpha": 1.0, "p": 0.5}}``;
:func:`build_sample_transform` turns it into the per-sample pipeline.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentConfig",
    "BatchMixer",
    "CenterCropResize",
    "ColorJitter",
    "ColorJitterConfig",
    "Compose",
    "CutMixConfig",
    "GridShuffle",
    "GridShuffleConfig",
    "HFlip",
    "HFlipConfig",
    "MixupConfig",
    "RandomDownscale",
    "RandomJpegQuality",
    "RandomQualityConfig",
    "RandomResizedCrop",
    "RandomResizedCropConfig",
    "Rotate4",
    "Rotate4Config",
    "SampleTransform",
    "ScaledPaste",
    "ScaledPasteConfig",
    "augment_samples",
    "build_sample_transform",
    "cutmix_box",
    "image_grid",
    "normalize",
    "quality_size_range",
    "sample_generator",
]

SampleTransform = Callable[[Tensor, torch.Generator], Tensor]
"""A per-sample transform: ``(image uint8 [3, H, W], generator) -> image uint8 [3, H', W']``."""

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------
# Randomness
# --------------------------------------------------------------------------------------------


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    u = float(torch.rand((), generator=generator, device=generator.device).item())
    return low + (high - low) * u


def _bernoulli(generator: torch.Generator, p: float) -> bool:
    if p <= 0.0:
        return False
    if p >= 1.0:
        return True
    return _uniform(generator, 0.0, 1.0) < p


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """An integer uniform in ``[low, high]`` (both ends included)."""
    if high <= low:
        return low
    return int(torch.randint(low, high + 1, (), generator=generator, device=generator.device))


def _beta(generator: torch.Generator, alpha: float) -> float:
    """A draw from Beta(alpha, alpha), driven by ``generator`` (torch's Beta takes no generator)."""
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def sample_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and any number of integer keys.

    Use it to give every sample its own stream independent of DataLoader workers and order, e.g.
    ``sample_generator(seed, epoch, index)``. Distinct key tuples give unrelated streams.
    """
    entropy = np.random.SeedSequence([seed & (2**63 - 1), *(k & (2**63 - 1) for k in keys)])
    state = int(entropy.generate_state(1, dtype=np.uint64)[0]) & (2**63 - 1)
    return torch.Generator().manual_seed(state)


# --------------------------------------------------------------------------------------------
# Per-sample transforms (uint8 [3, H, W] in and out)
# --------------------------------------------------------------------------------------------


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
            target_area = area * _uniform(generator, *self.scale)
            aspect = math.exp(_uniform(generator, log_lo, log_hi))
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = _randint(generator, 0, height - h)
                left = _randint(generator, 0, width - w)
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
        return image.flip(-1) if _bernoulli(generator, self.p) else image


@dataclass(frozen=True)
class Rotate4:
    """With probability ``p``, rotate by 90, 180 or 270 degrees (chosen uniformly), exactly as
    ``torch.rot90(image, k, dims=(-2, -1))``. A lossless pixel permutation; a 90/270 rotation of a
    non-square image swaps H and W."""

    p: float = 0.25

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        if not _bernoulli(generator, self.p):
            return image
        k = _randint(generator, 1, 3)
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
        if not _bernoulli(generator, self.p):
            return image
        order = torch.randperm(4, generator=generator, device=generator.device).tolist()
        for op in order:
            if op == 0 and self.brightness > 0:
                factor = _uniform(generator, max(0.0, 1 - self.brightness), 1 + self.brightness)
                image = TF.adjust_brightness(image, factor)
            elif op == 1 and self.contrast > 0:
                factor = _uniform(generator, max(0.0, 1 - self.contrast), 1 + self.contrast)
                image = TF.adjust_contrast(image, factor)
            elif op == 2 and self.saturation > 0:
                factor = _uniform(generator, max(0.0, 1 - self.saturation), 1 + self.saturation)
                image = TF.adjust_saturation(image, factor)
            elif op == 3 and self.hue > 0:
                image = TF.adjust_hue(image, _uniform(generator, -self.hue, self.hue))
        return image


@dataclass(frozen=True)
class RandomDownscale:
    """With probability ``p``, shrink the image so its shorter side is a random ``min_size`` to
    ``max_size`` pixels (inclusive), then resize it back to its original ``H × W``: the blur of a
    low-resolution web image upscaled. A target at least as large as the image does nothing."""

    min_size: int
    max_size: int
    p: float = 0.5

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        if not _bernoulli(generator, self.p):
            return image
        height, width = image.shape[-2:]
        target = _randint(generator, self.min_size, self.max_size)
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
        if not _bernoulli(generator, self.p):
            return image
        quality = _randint(generator, self.min_quality, self.max_quality)
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
        if not _bernoulli(generator, self.p):
            return image
        height, width = image.shape[-2:]
        factor = _uniform(generator, self.min_scale, self.max_scale)
        small_h = min(height, max(1, round(height * factor)))
        small_w = min(width, max(1, round(width * factor)))
        top = _randint(generator, 0, height - small_h)
        left = _randint(generator, 0, width - small_w)
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
        if not _bernoulli(generator, self.p):
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


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HFlipConfig(_Config):
    p: float = Field(0.5, ge=0.0, le=1.0)


class Rotate4Config(_Config):
    """``p``: probability of any rotation; the angle is then 90, 180 or 270 degrees."""

    p: float = Field(0.25, ge=0.0, le=1.0)


class ColorJitterConfig(_Config):
    brightness: float = Field(0.4, ge=0.0)
    contrast: float = Field(0.4, ge=0.0)
    saturation: float = Field(0.4, ge=0.0)
    hue: float = Field(0.0, ge=0.0, le=0.5)
    p: float = Field(0.8, ge=0.0, le=1.0)


class RandomQualityConfig(_Config):
    """Downscale-then-upscale and low JPEG quality.

    ``min_size``/``max_size`` (pixels, shorter side) hold at a training size of
    ``reference_size``; for a smaller training size both are scaled by
    ``image_size / reference_size`` (see :func:`quality_size_range`).
    """

    downscale_p: float = Field(0.5, ge=0.0, le=1.0)
    min_size: int = Field(150, ge=1)
    max_size: int = Field(190, ge=1)
    reference_size: int = Field(224, ge=1)
    jpeg_p: float = Field(0.5, ge=0.0, le=1.0)
    min_quality: int = Field(30, ge=1, le=100)
    max_quality: int = Field(70, ge=1, le=100)

    @model_validator(mode="after")
    def _ranges(self) -> RandomQualityConfig:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} is above max_size {self.max_size}")
        if self.min_quality > self.max_quality:
            raise ValueError(
                f"min_quality {self.min_quality} is above max_quality {self.max_quality}"
            )
        return self


class ScaledPasteConfig(_Config):
    min_scale: float = Field(0.5, gt=0.0, le=1.0)
    max_scale: float = Field(1.0, gt=0.0, le=1.0)
    fill: tuple[int, int, int] | Literal["mean", "random"] = "mean"
    p: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ranges(self) -> ScaledPasteConfig:
        if self.min_scale > self.max_scale:
            raise ValueError(f"min_scale {self.min_scale} is above max_scale {self.max_scale}")
        if isinstance(self.fill, tuple) and not all(0 <= c <= 255 for c in self.fill):
            raise ValueError(f"fill colour {self.fill} must be three values in 0..255")
        return self


class GridShuffleConfig(_Config):
    grid: int = Field(2, ge=2)
    p: float = Field(0.5, ge=0.0, le=1.0)


class RandomResizedCropConfig(_Config):
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    @model_validator(mode="after")
    def _ranges(self) -> RandomResizedCropConfig:
        lo, hi = self.scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"scale {self.scale} must satisfy 0 < low <= high <= 1")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio {self.ratio} must satisfy 0 < low <= high")
        return self


class CutMixConfig(_Config):
    """``p``: probability that a batch is CutMixed; the box area follows Beta(alpha, alpha)."""

    alpha: float = Field(1.0, gt=0.0)
    p: float = Field(0.5, ge=0.0, le=1.0)


class MixupConfig(_Config):
    """``p``: probability that a batch is mixed up; the weight follows Beta(alpha, alpha)."""

    alpha: float = Field(0.2, gt=0.0)
    p: float = Field(0.5, ge=0.0, le=1.0)


class AugmentConfig(_Config):
    """Every augmentation of a recipe; each is off while its entry is absent (``None``).

    Per-sample order in training: random resized crop (or resize + centre crop) → scaled paste →
    4-way rotation → horizontal flip → colour jitter → grid shuffle → downscale → JPEG quality.
    Batch level: at most one of CutMix and mixup per batch; CutMix with probability
    ``cutmix.p``, otherwise mixup with probability ``mixup.p`` of all batches, so
    ``cutmix.p + mixup.p`` must not exceed 1.

    ``eval_crop_pct``: evaluation scales the shorter side to ``image_size / eval_crop_pct`` before
    the centre crop (1.0: no border discarded beyond what a square needs).
    """

    random_resized_crop: RandomResizedCropConfig | None = None
    scaled_paste: ScaledPasteConfig | None = None
    rotate4: Rotate4Config | None = None
    hflip: HFlipConfig | None = None
    color_jitter: ColorJitterConfig | None = None
    grid_shuffle: GridShuffleConfig | None = None
    random_quality: RandomQualityConfig | None = None
    cutmix: CutMixConfig | None = None
    mixup: MixupConfig | None = None
    eval_crop_pct: float = Field(1.0, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _batch_probabilities(self) -> AugmentConfig:
        if self.cutmix is not None and self.mixup is not None and self.cutmix.p + self.mixup.p > 1:
            raise ValueError(
                f"cutmix.p + mixup.p = {self.cutmix.p + self.mixup.p} exceeds 1: "
                "at most one of them is applied to a batch"
            )
        return self

    @property
    def batch_mixing(self) -> bool:
        """Whether :class:`BatchMixer` changes anything (CutMix or mixup enabled with p > 0)."""
        return (self.cutmix is not None and self.cutmix.p > 0) or (
            self.mixup is not None and self.mixup.p > 0
        )


def quality_size_range(config: RandomQualityConfig, image_size: int) -> tuple[int, int]:
    """The downscale range (shorter side, pixels) used at training size ``image_size``.

    The configured range holds at ``reference_size`` and larger; below it both ends scale by
    ``image_size / reference_size`` (e.g. 150–190 at 224 becomes 21–27 at 32), rounded and kept
    within ``1 .. image_size``.
    """
    factor = min(1.0, image_size / config.reference_size)
    low = min(image_size, max(1, round(config.min_size * factor)))
    high = min(image_size, max(low, round(config.max_size * factor)))
    return low, high


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


# --------------------------------------------------------------------------------------------
# Batch level
# --------------------------------------------------------------------------------------------


def normalize(
    images: Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """uint8 images ``[B, 3, H, W]`` (or ``[3, H, W]``) in 0..255 → float32, ``(x/255 - mean)/std``.

    Runs on the images' device (normalise on the GPU after the transfer: 4x fewer bytes moved).
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    shape = (3, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(shape)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(shape)
    return (images.float().div_(255.0) - mean_t) / std_t


def cutmix_box(
    height: int, width: int, lam: float, generator: torch.Generator
) -> tuple[int, int, int, int]:
    """A CutMix box ``(y1, y2, x1, x2)`` covering about ``1 - lam`` of the image.

    The box has sides ``sqrt(1 - lam)`` times the image's, a uniformly random centre, and is
    clipped to the image, so the actual area may be smaller; callers must weigh labels by the
    clipped area.
    """
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = round(height * cut), round(width * cut)
    cy = _randint(generator, 0, height - 1)
    cx = _randint(generator, 0, width - 1)
    y1, y2 = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, height)
    x1, x2 = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, width)
    return y1, y2, x1, x2


class BatchMixer:
    """CutMix or mixup on a batch, with soft targets.

    Each call picks CutMix with probability ``cutmix.p``, else mixup with probability
    ``mixup.p`` (of all calls), else nothing. Every image is mixed with ``images[perm]`` for one
    random permutation ``perm`` of the batch.

    * CutMix: a box from the partner image is pasted in; the partner's label weight is exactly
      the pasted fraction of the pixels (computed from the clipped box).
    * mixup: ``lam * x + (1 - lam) * x[perm]``, targets mixed with the same ``lam``.
    * neither (or both off): the images unchanged, one-hot targets.
    """

    def __init__(self, config: AugmentConfig, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.cutmix = config.cutmix
        self.mixup = config.mixup
        self.num_classes = num_classes

    @property
    def enabled(self) -> bool:
        return (self.cutmix is not None and self.cutmix.p > 0) or (
            self.mixup is not None and self.mixup.p > 0
        )

    def __call__(
        self, images: Tensor, targets: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Mix a batch.

        Args:
            images: float ``[B, 3, H, W]`` (raw or normalised: both mixes are linear).
            targets: int64 class ids ``[B]``.
            generator: drives every random choice (a CPU generator is fine for GPU images).

        Returns:
            ``(mixed images [B, 3, H, W], soft targets [B, C] float32)``; each target row sums
            to 1. The input tensors are not modified.
        """
        if not images.is_floating_point() or images.ndim != 4:
            raise ValueError(
                f"expected float images [B, C, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        if targets.ndim != 1 or targets.shape[0] != images.shape[0]:
            raise ValueError(
                f"targets {tuple(targets.shape)} do not match a batch of {images.shape[0]}"
            )
        one_hot = torch.nn.functional.one_hot(targets.long(), self.num_classes).to(torch.float32)
        u = _uniform(generator, 0.0, 1.0)
        cutmix_p = self.cutmix.p if self.cutmix is not None else 0.0
        mixup_p = self.mixup.p if self.mixup is not None else 0.0
        if self.cutmix is not None and u < cutmix_p:
            return self._cutmix(images, one_hot, self.cutmix.alpha, generator)
        if self.mixup is not None and u < cutmix_p + mixup_p:
            return self._mixup(images, one_hot, self.mixup.alpha, generator)
        return images, one_hot

    def _permutation(self, batch: int, generator: torch.Generator, device: torch.device) -> Tensor:
        return torch.randperm(batch, generator=generator, device=generator.device).to(device)

    def _cutmix(
        self, images: Tensor, one_hot: Tensor, alpha: float, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        height, width = images.shape[-2:]
        lam = _beta(generator, alpha)
        perm = self._permutation(images.shape[0], generator, images.device)
        y1, y2, x1, x2 = cutmix_box(height, width, lam, generator)
        mixed = images.clone()
        mixed[:, :, y1:y2, x1:x2] = images[perm, :, y1:y2, x1:x2]
        pasted = (y2 - y1) * (x2 - x1) / (height * width)
        soft = (1.0 - pasted) * one_hot + pasted * one_hot[perm.to(one_hot.device)]
        return mixed, soft

    def _mixup(
        self, images: Tensor, one_hot: Tensor, alpha: float, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        lam = _beta(generator, alpha)
        perm = self._permutation(images.shape[0], generator, images.device)
        mixed = lam * images + (1.0 - lam) * images[perm]
        soft = lam * one_hot + (1.0 - lam) * one_hot[perm.to(one_hot.device)]
        return mixed, soft


# --------------------------------------------------------------------------------------------
# Previews
# --------------------------------------------------------------------------------------------


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
