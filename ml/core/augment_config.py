"""The augmentation settings of a recipe (its ``augment:`` section), validated by pydantic.

Torch-free, so the server and the CLI can read a recipe's augmentations without the ML stack;
:mod:`ml.augment` turns them into transforms.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AugmentConfig",
    "ColorJitterConfig",
    "CutMixConfig",
    "GridShuffleConfig",
    "HFlipConfig",
    "MixupConfig",
    "RandomQualityConfig",
    "RandomResizedCropConfig",
    "Rotate4Config",
    "ScaledPasteConfig",
    "quality_size_range",
]


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
        """Whether :class:`ml.augment.batch.BatchMixer` changes anything (CutMix or mixup
        enabled with p > 0)."""
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
