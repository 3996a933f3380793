"""How well a rejected set matches the truly mislabeled samples (benchmarks with known noise)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["RejectionQuality", "rejection_quality"]


@dataclass(frozen=True)
class RejectionQuality:
    """How well a rejected set matches the truly mislabeled samples.

    Attributes:
        precision: fraction of rejected samples that are mislabeled (1.0 if none rejected).
        recall: fraction of mislabeled samples that are rejected (1.0 if none mislabeled).
        f1: harmonic mean of the two (0 when both are 0).
        rejected, mislabeled, true_positives: counts.
    """

    precision: float
    recall: float
    f1: float
    rejected: int
    mislabeled: int
    true_positives: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rejection_quality(
    rejected: NDArray[np.bool_] | Sequence[bool], mislabeled: NDArray[np.bool_] | Sequence[bool]
) -> RejectionQuality:
    """Precision, recall and F1 of ``rejected`` ``[N]`` against ``mislabeled`` ``[N]``
    (given label != true label)."""
    r = np.asarray(rejected, dtype=bool)
    m = np.asarray(mislabeled, dtype=bool)
    if r.shape != m.shape or r.ndim != 1:
        raise ValueError(f"rejected {r.shape} and mislabeled {m.shape} must be equal [N] masks")
    tp = int((r & m).sum())
    precision = tp / int(r.sum()) if r.any() else 1.0
    recall = tp / int(m.sum()) if m.any() else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return RejectionQuality(precision, recall, f1, int(r.sum()), int(m.sum()), tp)
