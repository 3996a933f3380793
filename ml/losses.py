"""Losses for long-tailed, noisy training: logit adjustment, Flooding, distillation.

Shapes: logits and soft targets are ``[B, C]`` (batch, classes); hard targets are int64 ``[B]``;
a log prior is ``[C]``. Every loss returns a scalar, the mean over the batch.

Logit adjustment (Menon et al., ICLR 2021) comes in three forms, all with the same log prior
``log pi_c = log(n_c / N)``:

1. a classifier bias initialised to the log prior and frozen
   (:func:`init_frozen_log_prior_bias`), removed at inference (:func:`remove_log_prior`);
2. the logit-adjusted loss, cross-entropy on ``logits + tau * log_prior``
   (:func:`logit_adjusted_cross_entropy`), with plain logits used at inference;
3. post-hoc adjustment of a plainly trained model's logits (:func:`posthoc_adjust`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

__all__ = [
    "distillation_loss",
    "ensemble_teacher_logits",
    "flooding",
    "init_frozen_log_prior_bias",
    "log_prior",
    "logit_adjusted_cross_entropy",
    "posthoc_adjust",
    "remove_log_prior",
    "soft_cross_entropy",
    "with_distillation",
]


def log_prior(
    class_counts: Sequence[int] | NDArray[np.integer] | Tensor, *, pseudo_count: float = 0.0
) -> Tensor:
    """Log class prior ``log((n_c + a) / sum_k (n_k + a))``, float32 ``[C]``.

    Args:
        class_counts: training samples per class ``[C]``.
        pseudo_count: ``a``, added to every count; needed when a class has no samples (its log
            prior would be ``-inf``).

    Raises:
        ValueError: a class would get a zero prior, or a count is negative.
    """
    counts = torch.as_tensor(
        np.asarray(
            class_counts.detach().cpu() if isinstance(class_counts, Tensor) else class_counts
        ),
        dtype=torch.float64,
    )
    if counts.ndim != 1 or counts.numel() == 0:
        raise ValueError(f"class_counts must be a non-empty [C] vector, got {tuple(counts.shape)}")
    if bool((counts < 0).any()) or pseudo_count < 0:
        raise ValueError("class counts and pseudo_count must be non-negative")
    counts = counts + pseudo_count
    if bool((counts == 0).any()):
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(
            f"classes {empty[:10]} have no samples, so their log prior is -inf; "
            "drop them or pass pseudo_count > 0"
        )
    return torch.log(counts / counts.sum()).to(torch.float32)


def init_frozen_log_prior_bias(linear: nn.Linear, log_prior: Tensor) -> None:
    """Set ``linear``'s bias to ``log_prior`` ``[C]`` and freeze it (``requires_grad = False``).

    A frozen parameter gets no gradient, and torch optimizers skip parameters without a gradient,
    so the bias stays put under SGD or AdamW with weight decay even when it is in the optimizer's
    parameter list. The model then learns ``logits - log_prior``: subtract the prior at inference
    with :func:`remove_log_prior` (``tau = 1``) to get balanced predictions.
    """
    if linear.bias is None:
        raise ValueError("the classifier has no bias to initialise (built with bias=False)")
    if log_prior.shape != linear.bias.shape:
        raise ValueError(
            f"log prior {tuple(log_prior.shape)} does not match the bias {tuple(linear.bias.shape)}"
        )
    with torch.no_grad():
        linear.bias.copy_(log_prior.to(linear.bias))
    linear.bias.requires_grad_(False)
    linear.bias.grad = None


def posthoc_adjust(logits: Tensor, log_prior: Tensor, tau: float = 1.0) -> Tensor:
    """Balanced logits from a model trained with plain cross-entropy: ``logits - tau *
    log_prior``. ``logits`` ``[..., C]``, ``log_prior`` ``[C]``; the result has logits' shape."""
    return logits - tau * log_prior.to(logits)


def remove_log_prior(logits: Tensor, log_prior: Tensor, tau: float = 1.0) -> Tensor:
    """Inference logits of a model whose classifier bias holds ``tau * log_prior`` (frozen with
    :func:`init_frozen_log_prior_bias`, ``tau = 1``): ``logits - tau * log_prior``, ``[..., C]``
    — the subtraction :func:`posthoc_adjust` makes, for another reason."""
    return posthoc_adjust(logits, log_prior, tau)


def prediction_logits(
    logits: Tensor, adjustment: str, log_prior: Tensor | None, tau: float = 1.0
) -> Tensor:
    """The logits predictions are made from, given a model's raw logits ``[B, C]`` and how it
    was trained: ``adjustment`` ``none`` (as they are), ``remove_prior`` (the frozen log-prior
    bias taken out) or ``posthoc`` (balanced after plain cross-entropy)."""
    if adjustment == "none" or log_prior is None:
        return logits
    if adjustment == "remove_prior":
        return remove_log_prior(logits, log_prior, tau)
    return posthoc_adjust(logits, log_prior, tau)


def _weighted_mean(values: Tensor, sample_weights: Tensor | None) -> Tensor:
    if sample_weights is None:
        return values.mean()
    if sample_weights.shape != values.shape:
        raise ValueError(
            f"sample weights {tuple(sample_weights.shape)} do not match {tuple(values.shape)}"
        )
    weights = sample_weights.to(values)
    return (values * weights).sum() / weights.sum().clamp_min(1e-12)


def soft_cross_entropy(
    logits: Tensor, soft_targets: Tensor, sample_weights: Tensor | None = None
) -> Tensor:
    """Cross-entropy ``-sum_c t_c log softmax(logits)_c``, mean over the batch.

    Args:
        logits: ``[B, C]``.
        soft_targets: ``[B, C]`` rows summing to 1 (e.g. from CutMix/mixup), or int64 class ids
            ``[B]``.
        sample_weights: ``[B]`` non-negative; the mean is then ``sum(w * loss) / sum(w)``.
    """
    if soft_targets.ndim == 1 and not soft_targets.is_floating_point():
        if sample_weights is None:
            return F.cross_entropy(logits, soft_targets)
        return _weighted_mean(
            F.cross_entropy(logits, soft_targets, reduction="none"), sample_weights
        )
    if soft_targets.shape != logits.shape:
        raise ValueError(
            f"soft targets {tuple(soft_targets.shape)} do not match logits {tuple(logits.shape)}"
        )
    log_probs = F.log_softmax(logits.float(), dim=-1)
    per_sample = -(soft_targets.to(log_probs) * log_probs).sum(dim=-1)
    return _weighted_mean(per_sample, sample_weights)


def logit_adjusted_cross_entropy(
    logits: Tensor,
    soft_targets: Tensor,
    log_prior: Tensor,
    tau: float = 1.0,
    sample_weights: Tensor | None = None,
) -> Tensor:
    """Logit-adjusted loss: cross-entropy on ``logits + tau * log_prior``; scalar mean.

    Args:
        logits: ``[B, C]``, the model's plain output (use it unchanged at inference).
        soft_targets: ``[B, C]`` soft targets or int64 ``[B]`` class ids.
        log_prior: ``[C]``, from :func:`log_prior`.
        tau: adjustment strength (1 in the paper).
        sample_weights: ``[B]``, as for :func:`soft_cross_entropy`.
    """
    return soft_cross_entropy(logits + tau * log_prior.to(logits), soft_targets, sample_weights)


def flooding(loss: Tensor, b: float) -> Tensor:
    """Flooding (Ishida et al., 2020): ``|loss - b| + b``. Equal to ``loss`` above the flood level
    ``b``; below it the gradient is reversed, so training ascends back towards ``b``."""
    return (loss - b).abs() + b


def ensemble_teacher_logits(teacher_logits: Sequence[Tensor]) -> Tensor:
    """One teacher from M models: the log of their mean softmax probability.

    Args:
        teacher_logits: M tensors ``[N, C]`` (e.g. the K fold models on the same batch).

    Returns:
        ``[N, C]`` log-probabilities, usable as logits: ``softmax`` of them is the averaged
        probability. :func:`distillation_loss` then applies its temperature to these.
    """
    if len(teacher_logits) == 0:
        raise ValueError("need at least one teacher")
    shape = teacher_logits[0].shape
    if any(t.shape != shape for t in teacher_logits):
        raise ValueError(
            f"teacher logits differ in shape: {[tuple(t.shape) for t in teacher_logits]}"
        )
    stacked = torch.stack([F.log_softmax(t.float(), dim=-1) for t in teacher_logits])
    return torch.logsumexp(stacked, dim=0) - torch.log(torch.tensor(float(len(teacher_logits))))


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Knowledge distillation (Hinton et al., 2015): ``T^2 * KL(p_teacher^T || p_student^T)``,
    mean over the batch, where ``p^T = softmax(logits / T)``.

    The ``T^2`` factor keeps the gradient scale independent of ``T``. The teacher is detached.

    Args:
        student_logits: ``[B, C]``.
        teacher_logits: ``[B, C]``, one model's or :func:`ensemble_teacher_logits`.
        temperature: ``T > 0``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} "
            "logits differ in shape"
        )
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    kl = F.kl_div(student, teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def with_distillation(task_loss: Tensor, distill_loss: Tensor, weight: float) -> Tensor:
    """``(1 - weight) * task_loss + weight * distill_loss``; ``weight`` in ``[0, 1]``."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distillation weight must be in [0, 1], got {weight}")
    return (1.0 - weight) * task_loss + weight * distill_loss
