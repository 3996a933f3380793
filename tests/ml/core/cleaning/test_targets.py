"""What the final training learns from the verdicts (ml/core/cleaning/targets.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ml.core.cleaning.targets import final_training_targets


def test_final_targets_by_use() -> None:
    labels = np.array([0, 1, 2, 0])
    kept = np.array([True, True, False, False])
    probs = np.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.05, 0.95, 0.0], [0.5, 0.1, 0.4]])

    dropped = final_training_targets(labels, kept, None, use="drop")
    soft = final_training_targets(labels, kept, probs, use="soft", weight=0.3)
    relabelled = final_training_targets(labels, kept, probs, use="relabel", relabel_threshold=0.9)

    assert dropped.rows.tolist() == [0, 1] and dropped.soft is None
    assert soft.rows.tolist() == [0, 1, 2, 3] and soft.labels.tolist() == [0, 1, -1, -1]
    assert soft.weights is not None and soft.weights.tolist() == pytest.approx([1, 1, 0.3, 0.3])
    assert relabelled.labels.tolist() == [0, 1, 1, -1] and relabelled.rows.tolist() == [0, 1, 2]
    assert relabelled.sources == {"kept": 2, "soft": 0, "relabelled": 1}


def test_final_targets_never_read_the_given_labels_of_rejected_samples() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=50)
    kept = rng.random(50) < 0.6
    probs = rng.dirichlet(np.ones(5), size=50)
    scrambled = labels.copy()
    scrambled[~kept] = rng.integers(0, 5, size=int((~kept).sum()))

    for use in ("drop", "soft", "relabel"):
        first = final_training_targets(labels, kept, probs, use=use, relabel_threshold=0.5)  # type: ignore[arg-type]
        second = final_training_targets(scrambled, kept, probs, use=use, relabel_threshold=0.5)  # type: ignore[arg-type]
        assert first.labels.tolist() == second.labels.tolist()
        assert first.rows.tolist() == second.rows.tolist()
