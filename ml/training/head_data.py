"""What the training rows of a head learn from: a target distribution and a loss weight per row
(from labels, soft targets and sample weights), mixed in feature space, and the fingerprint that
tells whether a finished head was trained on the same data.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from ml.embeddings import EmbeddingArray
from ml.heads import HeadTargets
from ml.recipes import Recipe
from ml.training.batches import training_fingerprint
from ml.training.interface import TrainingError

__all__ = ["head_fingerprint", "head_targets", "mix_features"]


def head_targets(
    labels: NDArray[np.int64],
    rows: NDArray[np.int64],
    num_classes: int,
    extra: HeadTargets,
) -> tuple[Tensor, Tensor, NDArray[np.int64]]:
    """Per training row: the target distribution ``[M, C]``, the loss weight ``[M]`` and the
    class used for balancing and accuracy ``[M]`` (the label, else the soft target's argmax)."""
    used = labels[rows]
    if (used >= num_classes).any() or (used < -1).any():
        raise TrainingError(f"training labels must lie in [-1, {num_classes})")
    unlabelled = used < 0
    targets = torch.zeros((rows.shape[0], num_classes), dtype=torch.float32)
    labelled = np.flatnonzero(~unlabelled)
    targets[labelled, used[labelled]] = 1.0
    classes = used.copy()
    if unlabelled.any():
        if extra.soft is None:
            raise TrainingError("training rows without a label need soft targets")
        soft = np.asarray(extra.soft, dtype=np.float32)
        if soft.shape != (labels.shape[0], num_classes):
            raise TrainingError(f"soft targets {soft.shape} do not fit {labels.shape[0]} rows")
        chosen = soft[rows[unlabelled]]
        if not np.isfinite(chosen).all() or (chosen < 0).any():
            raise TrainingError("soft targets must be finite and non-negative")
        sums = chosen.sum(axis=1, keepdims=True)
        if (sums <= 0).any():
            raise TrainingError("every soft target needs some probability mass")
        chosen = chosen / sums
        targets[np.flatnonzero(unlabelled)] = torch.from_numpy(chosen)
        classes[unlabelled] = chosen.argmax(axis=1)
    weights = torch.ones(rows.shape[0], dtype=torch.float32)
    if extra.weights is not None:
        given = np.asarray(extra.weights, dtype=np.float32)
        if given.shape != labels.shape or not np.isfinite(given).all() or (given < 0).any():
            raise TrainingError("sample weights must be [N], finite and non-negative")
        weights = torch.from_numpy(given[rows].copy())
    return targets, weights, classes


def head_fingerprint(
    labels: NDArray[np.int64],
    rows: NDArray[np.int64],
    num_classes: int,
    features: EmbeddingArray,
    extra: HeadTargets,
) -> str:
    """Identifies the training data: labels, rows, the space, the first rows' features and the
    extra targets."""
    digest = hashlib.sha256(training_fingerprint(labels, rows, num_classes).encode())
    digest.update(features.space.key.encode())
    digest.update(np.ascontiguousarray(features[rows[: min(rows.shape[0], 64)]]).tobytes())
    for array in (extra.soft, extra.weights):
        if array is not None:
            digest.update(np.ascontiguousarray(np.asarray(array)[rows]).tobytes())
    return digest.hexdigest()


def mix_features(recipe: Recipe, batch: list[Tensor], generator: torch.Generator) -> list[Tensor]:
    """Mixup in feature space with the recipe's probability and Beta(alpha, alpha) weight: every
    tensor of ``batch`` (features, targets, weights: ``[B, ...]``) is mixed with the same weight
    and partners."""
    mixup = recipe.augment.mixup
    if mixup is None or mixup.p <= 0:
        return batch
    if float(torch.rand((), generator=generator)) >= mixup.p:
        return batch
    seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
    lam = float(np.random.default_rng(seed).beta(mixup.alpha, mixup.alpha))
    perm = torch.randperm(batch[0].shape[0], generator=generator)
    return [lam * t + (1 - lam) * t[perm] for t in batch]
