"""Rejection quality against known noise (ml/core/cleaning/quality.py)."""

from __future__ import annotations

from ml.core.cleaning.quality import rejection_quality


def test_rejection_quality_counts() -> None:
    quality = rejection_quality([True, True, False, False], [True, False, True, False])

    assert (quality.precision, quality.recall, quality.f1) == (0.5, 0.5, 0.5)
    assert (quality.rejected, quality.mislabeled, quality.true_positives) == (2, 2, 1)
