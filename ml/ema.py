"""Exponential moving average of a model's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ModelEma"]


class ModelEma:
    """A shadow copy of ``model`` whose floating-point parameters and buffers (BatchNorm running
    statistics included) track ``ema = d * ema + (1 - d) * current`` after every
    :meth:`update`; integer buffers are copied.

    Args:
        model: the model being trained (its current weights initialise the average).
        decay: ``d``, in ``(0, 1)``.
        warmup: use ``min(decay, (1 + step) / (10 + step))`` so early, poor weights fade fast.
    """

    def __init__(self, model: nn.Module, *, decay: float, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup

    def decay_at(self, step: int) -> float:
        """The decay used for the update after optimizer step ``step`` (0-based)."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average towards ``model``'s current weights."""
        weight = 1.0 - self.decay_at(step)
        current = model.state_dict()
        for name, average in self.module.state_dict().items():
            value = current[name]
            if average.is_floating_point():
                average.lerp_(value.to(average.dtype), weight)
            else:
                average.copy_(value)
