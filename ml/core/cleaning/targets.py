"""What the final training learns from the cleaning verdicts: kept samples through their labels,
rejected ones never through their given label (dropped, soft targets or a confident relabel)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ml.core.cleaning.arrays import FloatMatrix, IntArray, check_probs

__all__ = ["FinalTargets", "RejectUse", "final_training_targets"]

#: What rejected samples give the final training.
RejectUse = Literal["drop", "soft", "relabel"]


@dataclass(frozen=True)
class FinalTargets:
    """The final training's inputs besides the features.

    Attributes:
        labels: ``[N]`` the class each row trains on; -1 where a row learns only from ``soft``
            (or does not train).
        rows: ``[M]`` the training rows, ascending.
        soft: ``[N, C]`` target distributions for the rows labelled -1 (``None`` if none).
        weights: ``[N]`` loss weights (``None``: all 1).
        sources: how many rows each source contributed: ``kept``, ``soft``, ``relabelled``.
    """

    labels: NDArray[np.int64]
    rows: NDArray[np.int64]
    soft: NDArray[np.float32] | None
    weights: NDArray[np.float32] | None
    sources: dict[str, int]


def final_training_targets(
    labels: IntArray,
    kept: NDArray[np.bool_] | Sequence[bool],
    pred_probs: FloatMatrix | None,
    *,
    use: RejectUse = "drop",
    weight: float = 0.5,
    relabel_threshold: float = 0.9,
) -> FinalTargets:
    """What each sample contributes to the final training. Kept samples train on their labels
    (human labels already folded in by the caller). Rejected samples, by ``use``:

    * ``drop``: nothing;
    * ``soft``: the ensemble's out-of-fold distribution ``pred_probs[i]`` as a soft target, at
      loss weight ``weight``;
    * ``relabel``: the ensemble's top class, as a hard label, where its probability is at least
      ``relabel_threshold``; the others are dropped.

    A rejected sample's given label is never read: only ``kept`` and ``pred_probs`` decide what
    it contributes.

    Args:
        labels: ``[N]`` labels; only those of kept samples are used.
        kept: ``[N]`` the cleaning verdict.
        pred_probs: ``[N, C]`` out-of-fold probabilities (needed unless ``use`` is ``drop``).
    """
    kept_mask = np.asarray(kept, dtype=bool)
    given = np.asarray(labels, dtype=np.int64)
    if kept_mask.shape != given.shape or given.ndim != 1:
        raise ValueError(f"kept {kept_mask.shape} and labels {given.shape} must be equal [N]")
    train_labels = np.full(given.shape, -1, dtype=np.int64)
    train_labels[kept_mask] = given[kept_mask]
    rejected = np.flatnonzero(~kept_mask)
    sources = {"kept": int(kept_mask.sum()), "soft": 0, "relabelled": 0}
    if use == "drop" or rejected.size == 0:
        return FinalTargets(train_labels, np.flatnonzero(kept_mask), None, None, sources)
    if pred_probs is None:
        raise ValueError(f"using rejected samples ({use}) needs the out-of-fold probabilities")
    probs = check_probs(pred_probs)
    if probs.shape[0] != given.shape[0]:
        raise ValueError(f"pred_probs has {probs.shape[0]} rows for {given.shape[0]} samples")
    if use == "soft":
        if not weight > 0.0:
            raise ValueError(f"the weight of soft targets must be positive, got {weight}")
        weights = np.ones(given.shape, dtype=np.float32)
        weights[rejected] = weight
        sources["soft"] = int(rejected.size)
        rows = np.arange(given.shape[0], dtype=np.int64)
        return FinalTargets(train_labels, rows, probs.astype(np.float32), weights, sources)
    if use != "relabel":
        raise ValueError(f"use must be drop, soft or relabel, got {use!r}")
    confident = rejected[probs[rejected].max(axis=1) >= relabel_threshold]
    train_labels[confident] = probs[confident].argmax(axis=1)
    sources["relabelled"] = int(confident.size)
    return FinalTargets(train_labels, np.flatnonzero(train_labels >= 0), None, None, sources)
