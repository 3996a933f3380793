"""Batch-level augmentation and normalisation: CutMix and mixup (:class:`BatchMixer`) turn a
float batch ``[B, 3, H, W]`` and hard labels ``[B]`` into mixed images and soft targets
``[B, C]``; :func:`normalize` standardises uint8 images."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ml.augment.randomness import beta, randint, uniform
from ml.core.augment_config import AugmentConfig

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "BatchMixer", "cutmix_box", "normalize"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


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
    cy = randint(generator, 0, height - 1)
    cx = randint(generator, 0, width - 1)
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
        u = uniform(generator, 0.0, 1.0)
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
        lam = beta(generator, alpha)
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
        lam = beta(generator, alpha)
        perm = self._permutation(images.shape[0], generator, images.device)
        mixed = lam * images + (1.0 - lam) * images[perm]
        soft = lam * one_hot + (1.0 - lam) * one_hot[perm.to(one_hot.device)]
        return mixed, soft
