"""The loss of a batch (ml/training/objective.py)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from ml.losses import soft_cross_entropy
from ml.training.objective import Objective
from tests.ml.factories import tiny_recipe

CPU = torch.device("cpu")


def batch(seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 3, generator=generator)
    targets = torch.nn.functional.one_hot(torch.arange(6) % 3, 3).float()
    return logits, targets


def test_unit_sample_weights_give_the_unweighted_loss() -> None:
    logits, targets = batch()
    objective = Objective(tiny_recipe(), 3, None, None, CPU)

    weighted = objective(logits, targets, logits, torch.ones(6))

    assert weighted == pytest.approx(float(objective(logits, targets, logits)))
    assert weighted == pytest.approx(float(soft_cross_entropy(logits, targets)))


def test_label_smoothing_spreads_the_targets_over_every_class() -> None:
    logits, targets = batch()
    objective = Objective(tiny_recipe(label_smoothing=0.3), 3, None, None, CPU)

    smoothed = targets * 0.7 + 0.1

    assert float(objective(logits, targets, logits)) == pytest.approx(
        float(soft_cross_entropy(logits, smoothed))
    )


def test_a_teacher_that_agrees_leaves_only_the_weighted_task_loss() -> None:
    logits, targets = batch()
    recipe = tiny_recipe(**{"distillation.teachers": ["unused"], "distillation.weight": 0.25})
    seen: list[Tensor] = []

    def teachers(teacher_input: Tensor) -> Tensor:
        seen.append(teacher_input)
        return logits

    loss = Objective(recipe, 3, None, teachers, CPU)(logits, targets, torch.zeros(6, 8))

    assert float(loss) == pytest.approx(0.75 * float(soft_cross_entropy(logits, targets)))
    assert seen[0].shape == (6, 8)
