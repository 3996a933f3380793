"""Evaluation of a classifier on a labelled set, with long-tail breakdowns.

Many/medium/few-shot groups follow the long-tail literature (Liu et al., 2019): classes with more
than 100, 20 to 100, and fewer than 20 *training* images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

__all__ = ["FEW_SHOT_BELOW", "MANY_SHOT_ABOVE", "EvalReport", "evaluate"]

MANY_SHOT_ABOVE = 100
"""A class with more than this many training images is many-shot."""
FEW_SHOT_BELOW = 20
"""A class with fewer than this many training images is few-shot; between the two, medium."""


@dataclass(frozen=True)
class EvalReport:
    """Accuracies in ``[0, 1]``.

    Attributes:
        top1, top5: fraction of samples whose label is the top prediction / among the top five
            (top-min(5, C) when there are fewer than five classes).
        balanced_accuracy: mean of the per-class accuracies over classes present in the labels.
        per_class_accuracy: ``[C]``; ``None`` for a class with no evaluation samples.
        many_shot, medium_shot, few_shot: mean per-class accuracy over the classes of each group
            that have evaluation samples; ``None`` when that is no class or no training counts
            were given.
        num_samples, num_classes: ``N`` and ``C``.
    """

    top1: float
    top5: float
    balanced_accuracy: float
    per_class_accuracy: list[float | None]
    many_shot: float | None
    medium_shot: float | None
    few_shot: float | None
    num_samples: int
    num_classes: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


def _to_numpy(values: torch.Tensor | NDArray[Any] | Sequence[Any]) -> NDArray[Any]:
    if isinstance(values, torch.Tensor):
        tensor = values.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(values)


def _group_mean(
    accuracy: NDArray[np.float64], has_samples: NDArray[np.bool_], members: NDArray[np.bool_]
) -> float | None:
    selected = members & has_samples
    return float(accuracy[selected].mean()) if selected.any() else None


def evaluate(
    logits_or_probs: torch.Tensor | NDArray[Any],
    labels: torch.Tensor | NDArray[Any] | Sequence[int],
    *,
    train_class_counts: torch.Tensor | NDArray[Any] | Sequence[int] | None = None,
) -> EvalReport:
    """Score predictions against labels.

    Args:
        logits_or_probs: ``[N, C]`` scores; only their ranking within a row matters, so logits,
            probabilities and log-probabilities give the same report.
        labels: true class ids ``[N]`` in ``[0, C)``.
        train_class_counts: training images per class ``[C]``, for the many/medium/few-shot
            accuracies.
    """
    scores, label_array = _checked(logits_or_probs, labels)
    num_samples, num_classes = scores.shape
    k = min(5, num_classes)
    top_k = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < num_classes else None
    top1_pred = scores.argmax(axis=1)
    correct1 = top1_pred == label_array
    if top_k is None:
        correct5 = np.ones(num_samples, dtype=bool)
    else:
        correct5 = (top_k == label_array[:, None]).any(axis=1)

    support = np.bincount(label_array, minlength=num_classes)
    hits = np.bincount(label_array, weights=correct1.astype(np.float64), minlength=num_classes)
    has_samples = support > 0
    accuracy = np.divide(
        hits, support, out=np.zeros(num_classes, dtype=np.float64), where=has_samples
    )
    per_class: list[float | None] = [
        float(a) if present else None for a, present in zip(accuracy, has_samples, strict=True)
    ]
    many, medium, few = _shot_groups(accuracy, has_samples, train_class_counts)
    return EvalReport(
        top1=float(correct1.mean()),
        top5=float(correct5.mean()),
        balanced_accuracy=float(accuracy[has_samples].mean()),
        per_class_accuracy=per_class,
        many_shot=many,
        medium_shot=medium,
        few_shot=few,
        num_samples=int(num_samples),
        num_classes=int(num_classes),
    )


def _checked(
    logits_or_probs: torch.Tensor | NDArray[Any],
    labels: torch.Tensor | NDArray[Any] | Sequence[int],
) -> tuple[NDArray[Any], NDArray[np.int64]]:
    """Scores ``[N, C]`` and int64 labels ``[N]`` as numpy arrays, after checking that they fit
    each other and that every label is a class.

    Raises:
        ValueError: wrong shapes, no samples, or a label outside ``[0, C)``.
    """
    scores = _to_numpy(logits_or_probs)
    label_array = _to_numpy(labels)
    if scores.ndim != 2:
        raise ValueError(f"expected scores [N, C], got shape {scores.shape}")
    num_samples, num_classes = scores.shape
    if label_array.shape != (num_samples,):
        raise ValueError(f"labels {label_array.shape} do not match {num_samples} score rows")
    if num_samples == 0:
        raise ValueError("nothing to evaluate: no samples")
    label_array = label_array.astype(np.int64)
    if label_array.min() < 0 or label_array.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes})")
    return scores, label_array


def _shot_groups(
    accuracy: NDArray[np.float64],
    has_samples: NDArray[np.bool_],
    train_class_counts: torch.Tensor | NDArray[Any] | Sequence[int] | None,
) -> tuple[float | None, float | None, float | None]:
    """Mean per-class accuracy ``[C]`` over the many-, medium- and few-shot classes that have
    evaluation samples; ``None`` for each without training counts."""
    if train_class_counts is None:
        return None, None, None
    num_classes = accuracy.shape[0]
    counts = _to_numpy(train_class_counts).astype(np.int64)
    if counts.shape != (num_classes,):
        raise ValueError(f"train_class_counts {counts.shape} do not match {num_classes} classes")
    return (
        _group_mean(accuracy, has_samples, counts > MANY_SHOT_ABOVE),
        _group_mean(
            accuracy, has_samples, (counts >= FEW_SHOT_BELOW) & (counts <= MANY_SHOT_ABOVE)
        ),
        _group_mean(accuracy, has_samples, counts < FEW_SHOT_BELOW),
    )
