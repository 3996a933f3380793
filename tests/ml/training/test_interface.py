"""What a training run takes and gives back (ml/training/interface.py)."""

from __future__ import annotations

import numpy as np

from ml.metrics import evaluate
from ml.training.interface import EpochSummary, EvalSet


def test_an_epoch_summary_survives_a_round_trip_through_a_dict() -> None:
    report = evaluate(np.eye(3), np.array([0, 1, 2]), train_class_counts=[5, 50, 500])
    summary = EpochSummary(
        epoch=1,
        train_loss=0.5,
        train_accuracy=0.75,
        learning_rate=0.1,
        images_per_second=100.0,
        seconds=2.0,
        steps=4,
        val=report,
    )

    assert EpochSummary.from_dict(summary.to_dict()) == summary


def test_an_eval_sets_labels_follow_its_indices() -> None:
    images = np.zeros((4, 2, 2, 3), dtype=np.uint8)
    labels = np.array([3, 1, 2, 0])

    assert EvalSet(images, labels).evaluated_labels().tolist() == [3, 1, 2, 0]
    assert EvalSet(images, labels, np.array([2, 0])).evaluated_labels().tolist() == [2, 3]
