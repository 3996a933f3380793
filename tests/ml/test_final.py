"""The final training's plan (ml/final.py): kept labels, and rejects as the option says."""

from __future__ import annotations

import numpy as np

from ml.final import final_targets


def test_dropping_rejects_trains_on_the_kept_rows_only() -> None:
    labels = np.array([0, 1, -1, 1], dtype=np.int64)
    plan = final_targets(
        labels, labels >= 0, None, rejects="soft", weight=0.5, relabel_threshold=0.9
    )

    assert plan.rows.tolist() == [0, 1, 3]
    assert plan.targets is None
    assert plan.sources == {"kept": 3, "soft": 0, "relabelled": 0}


def test_soft_rejects_without_probabilities_are_left_out() -> None:
    labels = np.array([0, 1, -1, -1], dtype=np.int64)
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [np.nan, np.nan]], dtype=np.float32)
    plan = final_targets(
        labels, labels >= 0, probs, rejects="soft", weight=0.5, relabel_threshold=0.9
    )

    assert plan.rows.tolist() == [0, 1, 2]
    assert plan.targets is not None and plan.targets.weights is not None
    assert plan.targets.weights.tolist() == [1.0, 1.0, 0.5, 1.0]
    np.testing.assert_allclose(plan.targets.soft[2], [0.3, 0.7])
    assert plan.sources["soft"] == 1


def test_confident_rejects_are_relabelled_and_the_others_dropped() -> None:
    labels = np.array([0, 1, 1, 0], dtype=np.int64)
    kept = np.array([True, True, False, False])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.95, 0.05], [0.6, 0.4]], dtype=np.float32)
    plan = final_targets(labels, kept, probs, rejects="relabel", weight=0.5, relabel_threshold=0.9)

    assert plan.rows.tolist() == [0, 1, 2]
    assert plan.labels[2] == 0
    assert plan.sources == {"kept": 2, "soft": 0, "relabelled": 1}
