"""The final training's plan: which rows train, on which labels or soft targets.

Kept samples train on their labels; the rejected ones as ``rejects`` says
(:func:`ml.core.cleaning.targets.final_training_targets`), from their out-of-fold probabilities. The
``thresher ml train`` step and the worker's ``train_final`` job both plan with
:func:`final_targets`, then train with :func:`ml.parallel.train`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ml.core.cleaning.targets import RejectUse, final_training_targets
from ml.heads import HeadTargets

__all__ = ["FinalPlan", "final_targets"]


@dataclass(frozen=True)
class FinalPlan:
    """What to train on.

    Attributes:
        labels: ``[N]`` hard labels (-1: none; the row trains on its soft target, or not at all).
        rows: the training rows, ascending.
        targets: soft targets and loss weights ``[N, C]`` / ``[N]``, when rejects train softly.
        sources: how many rows train as kept, soft and relabelled.
    """

    labels: NDArray[np.int64]
    rows: NDArray[np.int64]
    targets: HeadTargets | None
    sources: dict[str, int]


def final_targets(
    labels: NDArray[np.int64],
    kept: NDArray[np.bool_],
    probs: NDArray[np.float32] | None,
    *,
    rejects: RejectUse,
    weight: float,
    relabel_threshold: float,
) -> FinalPlan:
    """The final training's plan.

    Args:
        labels: ``[N]`` given labels (those of rejected samples are never read).
        kept: ``[N]`` the cleaning verdict.
        probs: ``[N, C]`` out-of-fold probabilities (NaN rows: none known; such rejected rows
            are left out); None, or ``rejects="drop"``: rejected rows are left out.
        rejects: ``drop``, ``soft`` or ``relabel``.
        weight: loss weight of the soft targets; ``relabel_threshold``: the least out-of-fold
            top-class probability that relabels a rejected sample.
    """
    if rejects == "drop" or probs is None:
        rows = np.flatnonzero(kept).astype(np.int64)
        return FinalPlan(labels, rows, None, {"kept": int(rows.size), "soft": 0, "relabelled": 0})
    known = np.nan_to_num(probs)
    usable = np.flatnonzero(kept | (known.sum(axis=1) > 0))
    plan = final_training_targets(
        labels[usable],
        kept[usable],
        known[usable],
        use=rejects,
        weight=weight,
        relabel_threshold=relabel_threshold,
    )
    train_labels = np.full(labels.shape, -1, dtype=np.int64)
    train_labels[usable] = plan.labels
    targets = None
    if plan.soft is not None:
        soft = np.zeros(probs.shape, dtype=np.float32)
        soft[usable] = plan.soft
        weights = np.ones(labels.shape, dtype=np.float32)
        if plan.weights is not None:
            weights[usable] = plan.weights
        targets = HeadTargets(soft=soft, weights=weights)
    return FinalPlan(train_labels, usable[plan.rows].astype(np.int64), targets, plan.sources)
