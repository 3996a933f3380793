"""The loss a run minimises on one batch, and the distillation teachers it may consult.

:class:`Objective` is the same for whole networks and heads: (smoothed) soft-target
cross-entropy or the logit-adjusted loss, optionally sample-weighted, then Flooding, then
distillation (:mod:`ml.losses`). The teachers differ: whole networks read the batch's pixels
(:class:`ImageTeachers`), heads its features (:class:`HeadTeachers`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ml.checkpoint import load_trained_model
from ml.embeddings import EmbeddingSpace
from ml.heads import TrainedHead, load_model
from ml.losses import (
    distillation_loss,
    ensemble_teacher_logits,
    flooding,
    logit_adjusted_cross_entropy,
    soft_cross_entropy,
    with_distillation,
)
from ml.predict import Normaliser, autocast
from ml.recipes import Recipe
from ml.training.interface import TrainingError

__all__ = ["HeadTeachers", "ImageTeachers", "Objective"]


class Objective:
    """The recipe's training loss on one batch.

    Args:
        prior: ``[C]`` log prior from :func:`~ml.training.setup.setup_logit_adjustment`; used
            only by the logit-adjusted loss.
        teachers: the teachers' logits ``[B, C]`` of the batch's teacher input; ``None``
            without distillation.
    """

    def __init__(
        self,
        recipe: Recipe,
        num_classes: int,
        prior: Tensor | None,
        teachers: Callable[[Tensor], Tensor] | None,
        device: torch.device,
    ) -> None:
        self.recipe = recipe
        self.num_classes = num_classes
        adjusted = recipe.logit_adjustment is not None and recipe.logit_adjustment.mode == "loss"
        self.prior = prior.to(device) if prior is not None and adjusted else None
        self.tau = recipe.logit_adjustment.tau if recipe.logit_adjustment is not None else 1.0
        self.teachers = teachers

    def __call__(
        self, logits: Tensor, soft: Tensor, teacher_input: Tensor, weights: Tensor | None = None
    ) -> Tensor:
        """``logits`` ``[B, C]``, soft targets ``[B, C]``, what the teachers see (the mixed raw
        pixels ``[B, 3, H, W]`` or features ``[B, D]``) and sample weights ``[B]``; returns
        the scalar loss."""
        smoothing = self.recipe.label_smoothing
        if smoothing > 0:
            soft = soft * (1.0 - smoothing) + smoothing / self.num_classes
        if self.prior is not None:
            loss = logit_adjusted_cross_entropy(logits, soft, self.prior, self.tau, weights)
        else:
            loss = soft_cross_entropy(logits, soft, weights)
        if self.recipe.flooding is not None:
            loss = flooding(loss, self.recipe.flooding)
        distillation = self.recipe.distillation
        if self.teachers is not None and distillation is not None:
            loss = with_distillation(
                loss,
                distillation_loss(logits, self.teachers(teacher_input), distillation.temperature),
                distillation.weight,
            )
        return loss


class ImageTeachers:
    """Distillation teachers for a whole network: one model or the ensemble of several, inputs
    normalised each with its own statistics."""

    def __init__(self, paths: Sequence[Path], device: torch.device, num_classes: int) -> None:
        self.models = [load_trained_model(p, device=device) for p in paths]
        self.normalisers = [Normaliser(t.mean, t.std, device) for t in self.models]
        self.device = device
        for path, teacher in zip(paths, self.models, strict=True):
            if teacher.num_classes != num_classes:
                raise TrainingError(
                    f"teacher {path} predicts {teacher.num_classes} classes, not {num_classes}"
                )

    @torch.no_grad()
    def logits(self, raw: Tensor) -> Tensor:
        """Float pixels in 0..255 ``[B, 3, H, W]`` → the teachers' logits ``[B, C]``."""
        outputs = []
        for teacher, normaliser in zip(self.models, self.normalisers, strict=True):
            x = normaliser(raw)
            with autocast(self.device):
                outputs.append(teacher.model(x).float())
        return outputs[0] if len(outputs) == 1 else ensemble_teacher_logits(outputs)


class HeadTeachers:
    """Teacher heads in the student's embedding space; their ensemble's logits on a batch."""

    def __init__(
        self, paths: list[Path], space: EmbeddingSpace, num_classes: int, device: torch.device
    ) -> None:
        self.heads: list[TrainedHead] = []
        for path in paths:
            teacher = load_model(path, device=device)
            if not isinstance(teacher, TrainedHead) or teacher.space != space:
                raise TrainingError(
                    f"teacher {path} is not a head on the student's embeddings: distil a head "
                    "from heads in the same embedding space"
                )
            if teacher.num_classes != num_classes:
                raise TrainingError(
                    f"teacher {path} predicts {teacher.num_classes} classes, not {num_classes}"
                )
            self.heads.append(teacher)

    @torch.no_grad()
    def logits(self, features: Tensor) -> Tensor:
        """Features ``[B, D]`` → the teachers' (adjusted) logits ``[B, C]``."""
        outputs = [t.adjust_logits(t.model(features)) for t in self.heads]
        return outputs[0] if len(outputs) == 1 else ensemble_teacher_logits(outputs)
