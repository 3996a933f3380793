"""The optimiser and learning-rate schedule of a run (ml/training/setup.py)."""

from __future__ import annotations

import pytest
from torch import nn

from ml.training.setup import build_optimizer, lr_factor
from tests.ml.factories import tiny_recipe


def test_lr_factor_warms_up_then_decays_to_the_floor() -> None:
    def factor(step: int) -> float:
        return lr_factor(step, total_steps=110, warmup_steps=10, warmup_start=0.1, floor=0.05)

    assert factor(0) == pytest.approx(0.1)
    assert factor(5) == pytest.approx(0.55)
    assert factor(10) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.525)
    assert factor(110) == pytest.approx(0.05)


def test_biases_and_norms_get_no_weight_decay() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    model[2].bias.requires_grad_(False)

    optimizer = build_optimizer(tiny_recipe(**{"optimizer.weight_decay": 0.01}), model)

    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.01
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert plain["weight_decay"] == 0.0
    assert {id(p) for p in plain["params"]} == {
        id(model[0].bias),
        id(model[1].weight),
        id(model[1].bias),
    }
