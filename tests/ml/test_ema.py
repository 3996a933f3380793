"""Exponential moving average of weights (ml/ema.py)."""

from __future__ import annotations

import torch
from torch import nn

from ml.ema import ModelEma


def test_ema_moves_towards_the_weights_by_one_minus_decay() -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEma(model, decay=0.9, warmup=False)
    with torch.no_grad():
        model.weight.fill_(1.0)

    ema.update(model, step=0)

    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.1))


def test_ema_warmup_starts_with_a_small_decay() -> None:
    ema = ModelEma(nn.Linear(1, 1), decay=0.999)

    assert ema.decay_at(0) == 0.1
    assert ema.decay_at(10_000) == 0.999


def test_ema_copies_integer_buffers() -> None:
    model = nn.BatchNorm1d(2)
    ema = ModelEma(model, decay=0.5)
    model.num_batches_tracked.fill_(7)

    ema.update(model, step=100)

    assert int(ema.module.num_batches_tracked) == 7
