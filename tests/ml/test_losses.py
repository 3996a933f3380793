"""Logit adjustment, Flooding and distillation (ml/losses.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ml.losses import (
    distillation_loss,
    ensemble_teacher_logits,
    flooding,
    init_frozen_log_prior_bias,
    log_prior,
    logit_adjusted_cross_entropy,
    posthoc_adjust,
    remove_log_prior,
    soft_cross_entropy,
    with_distillation,
)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_log_prior_is_the_log_of_class_frequencies() -> None:
    prior = log_prior([1, 3, 4])
    assert prior.dtype == torch.float32 and prior.shape == (3,)
    torch.testing.assert_close(prior, torch.log(torch.tensor([0.125, 0.375, 0.5])))


def test_log_prior_refuses_an_empty_class_unless_smoothed() -> None:
    with pytest.raises(ValueError, match=r"classes \[1\] have no samples"):
        log_prior([5, 0, 5])
    torch.testing.assert_close(
        log_prior([5, 0, 5], pseudo_count=1), torch.log(torch.tensor([6, 1, 6]) / 13)
    )


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_frozen_bias_survives_optimizer_steps_with_weight_decay(
    optimizer_name: str, generator: torch.Generator
) -> None:
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    head = model[2]
    assert isinstance(head, nn.Linear)
    prior = log_prior([100, 30, 10, 1])
    init_frozen_log_prior_bias(head, prior)
    assert not head.bias.requires_grad
    optimizer: torch.optim.Optimizer
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    weight_before = head.weight.detach().clone()
    x = torch.randn(16, 6, generator=generator)
    y = torch.randint(0, 4, (16,), generator=generator)
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert torch.equal(head.bias, prior)
    assert not torch.equal(head.weight, weight_before)


def test_frozen_bias_is_removed_at_inference(generator: torch.Generator) -> None:
    head = nn.Linear(5, 3)
    prior = log_prior([50, 20, 5])
    init_frozen_log_prior_bias(head, prior)
    x = torch.randn(7, 5, generator=generator)
    with torch.no_grad():
        balanced = remove_log_prior(head(x), prior)
    torch.testing.assert_close(balanced, x @ head.weight.T)


def test_frozen_bias_refuses_a_mismatched_prior() -> None:
    with pytest.raises(ValueError, match="does not match"):
        init_frozen_log_prior_bias(nn.Linear(4, 3), log_prior([1, 2]))
    with pytest.raises(ValueError, match="no bias"):
        init_frozen_log_prior_bias(nn.Linear(4, 2, bias=False), log_prior([1, 2]))


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_adjusted_loss_equals_cross_entropy_on_shifted_logits(
    tau: float, generator: torch.Generator
) -> None:
    logits = torch.randn(8, 5, generator=generator)
    labels = torch.randint(0, 5, (8,), generator=generator)
    prior = log_prior([400, 100, 40, 10, 2])
    expected = F.cross_entropy(logits + tau * prior, labels)
    torch.testing.assert_close(logit_adjusted_cross_entropy(logits, labels, prior, tau), expected)
    one_hot = F.one_hot(labels, 5).float()
    torch.testing.assert_close(logit_adjusted_cross_entropy(logits, one_hot, prior, tau), expected)


def test_adjusted_loss_with_soft_targets_matches_the_definition(
    generator: torch.Generator,
) -> None:
    logits = torch.randn(4, 3, generator=generator)
    soft = torch.softmax(torch.randn(4, 3, generator=generator), dim=1)
    prior = log_prior([10, 5, 1])
    shifted = logits + prior
    expected = -(soft * torch.log_softmax(shifted, dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(logit_adjusted_cross_entropy(logits, soft, prior), expected)


def test_soft_cross_entropy_with_one_hot_targets_is_cross_entropy(
    generator: torch.Generator,
) -> None:
    logits = torch.randn(6, 4, generator=generator)
    labels = torch.randint(0, 4, (6,), generator=generator)
    expected = F.cross_entropy(logits, labels)
    torch.testing.assert_close(soft_cross_entropy(logits, F.one_hot(labels, 4).float()), expected)
    torch.testing.assert_close(soft_cross_entropy(logits, labels), expected)
    with pytest.raises(ValueError, match="do not match"):
        soft_cross_entropy(logits, torch.ones(6, 3) / 3)


def test_posthoc_adjustment_subtracts_the_scaled_prior() -> None:
    prior = log_prior([90, 10])
    logits = torch.tensor([[2.0, 0.5]])
    torch.testing.assert_close(posthoc_adjust(logits, prior, tau=0.5), logits - 0.5 * prior)
    # The head class wins on raw logits; once the prior is removed the rare class does.
    assert posthoc_adjust(logits, prior).argmax().item() == 1


@pytest.mark.parametrize(("value", "sign"), [(3.0, 1.0), (0.5, -1.0)])
def test_flooding_gradient_flips_sign_below_the_flood_level(value: float, sign: float) -> None:
    weight = torch.tensor(value, requires_grad=True)
    loss = weight * 1.0
    flooded = flooding(loss, b=1.0)
    flooded.backward()
    assert weight.grad is not None
    assert weight.grad.item() == sign
    assert flooded.item() == pytest.approx(value if value > 1.0 else 2.0 - value)


def test_ensemble_teacher_averages_probabilities(generator: torch.Generator) -> None:
    teachers = [torch.randn(5, 4, generator=generator) for _ in range(3)]
    ensemble = ensemble_teacher_logits(teachers)
    mean_probs = torch.stack([t.softmax(dim=1) for t in teachers]).mean(dim=0)
    torch.testing.assert_close(ensemble.softmax(dim=1), mean_probs)
    torch.testing.assert_close(ensemble_teacher_logits(teachers[:1]).exp(), teachers[0].softmax(1))


def test_distillation_is_t_squared_kl_and_zero_against_itself(generator: torch.Generator) -> None:
    student = torch.randn(6, 5, generator=generator, requires_grad=True)
    teacher = torch.randn(6, 5, generator=generator, requires_grad=True)
    temperature = 3.0
    loss = distillation_loss(student, teacher, temperature)
    p_teacher = (teacher / temperature).softmax(dim=1)
    log_ratio = (teacher / temperature).log_softmax(dim=1) - (student / temperature).log_softmax(1)
    expected = (p_teacher * log_ratio).sum(dim=1).mean() * temperature**2
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert student.grad is not None and teacher.grad is None
    assert distillation_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)


def test_with_distillation_weighs_the_two_losses() -> None:
    mixed = with_distillation(torch.tensor(2.0), torch.tensor(4.0), weight=0.25)
    assert mixed.item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="weight"):
        with_distillation(torch.tensor(1.0), torch.tensor(1.0), weight=1.5)


def test_losses_are_scalar_means() -> None:
    logits = torch.zeros(3, 4)
    labels = torch.tensor([0, 1, 2])
    assert soft_cross_entropy(logits, labels).shape == ()
    assert soft_cross_entropy(logits, labels).item() == pytest.approx(math.log(4))
