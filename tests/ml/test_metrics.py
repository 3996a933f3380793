"""Evaluation reports (ml/metrics.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ml.metrics import evaluate

# Four classes. Class 0: 3 of 4 right; class 1: 1 of 2; class 2: 0 of 1; class 3: no samples.
SCORES = np.array(
    [
        [0.9, 0.05, 0.03, 0.02],  # label 0, right
        [0.7, 0.2, 0.05, 0.05],  # label 0, right
        [0.6, 0.3, 0.05, 0.05],  # label 0, right
        [0.1, 0.6, 0.2, 0.1],  # label 0, wrong (rank 3)
        [0.2, 0.7, 0.05, 0.05],  # label 1, right
        [0.5, 0.3, 0.1, 0.1],  # label 1, wrong (rank 2)
        [0.4, 0.3, 0.2, 0.1],  # label 2, wrong (rank 3)
    ]
)
LABELS = np.array([0, 0, 0, 0, 1, 1, 2])


def test_report_on_hand_made_scores() -> None:
    report = evaluate(SCORES, LABELS, train_class_counts=[500, 60, 5, 3])
    assert report.top1 == pytest.approx(4 / 7)
    assert report.top5 == 1.0  # fewer than five classes: every label is in the top four
    assert report.per_class_accuracy == [0.75, 0.5, 0.0, None]
    assert report.balanced_accuracy == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert report.many_shot == pytest.approx(0.75)
    assert report.medium_shot == pytest.approx(0.5)
    assert report.few_shot == pytest.approx(0.0)  # class 3 is few-shot but has no samples
    assert (report.num_samples, report.num_classes) == (7, 4)


def test_shot_groups_use_the_boundaries_100_and_20() -> None:
    scores = np.eye(4)
    labels = np.arange(4)
    report = evaluate(scores, labels, train_class_counts=[101, 100, 20, 19])
    assert report.many_shot == 1.0
    assert report.medium_shot == 1.0
    assert report.few_shot == 1.0
    all_wrong = evaluate(np.roll(scores, 1, axis=1), labels, train_class_counts=[101, 100, 20, 19])
    assert (all_wrong.many_shot, all_wrong.medium_shot, all_wrong.few_shot) == (0.0, 0.0, 0.0)


def test_shot_groups_are_none_without_counts_or_members() -> None:
    assert evaluate(SCORES, LABELS).many_shot is None
    report = evaluate(SCORES, LABELS, train_class_counts=[500, 500, 500, 500])
    assert report.medium_shot is None and report.few_shot is None


def test_top5_counts_labels_ranked_five_or_better() -> None:
    scores = np.tile(np.arange(10, 0, -1, dtype=np.float64), (3, 1))  # class 0 best … 9 worst
    report = evaluate(scores, [0, 4, 5])
    assert report.top1 == pytest.approx(1 / 3)
    assert report.top5 == pytest.approx(2 / 3)


def test_logits_probabilities_and_tensors_give_the_same_report() -> None:
    logits = torch.randn(50, 7, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 7, (50,), generator=torch.Generator().manual_seed(1))
    from_logits = evaluate(logits, labels)
    from_probs = evaluate(logits.softmax(dim=1).numpy(), labels.numpy())
    assert from_logits == from_probs
    assert evaluate(logits.to(torch.bfloat16), labels).num_samples == 50


def test_to_dict_is_json_ready() -> None:
    report = evaluate(SCORES, LABELS, train_class_counts=[500, 60, 5, 3])
    data = json.loads(json.dumps(report.to_dict()))
    assert data["per_class_accuracy"] == [0.75, 0.5, 0.0, None]
    assert set(data) >= {"top1", "top5", "balanced_accuracy", "many_shot", "medium_shot"}


@pytest.mark.parametrize(
    ("scores", "labels", "counts", "message"),
    [
        (np.zeros(4), [0], None, r"\[N, C\]"),
        (np.zeros((2, 3)), [0], None, "do not match"),
        (np.zeros((2, 3)), [0, 3], None, "must lie in"),
        (np.zeros((2, 3)), [0, 1], [1, 2], "train_class_counts"),
        (np.zeros((0, 3)), [], None, "no samples"),
    ],
)
def test_evaluate_rejects_mismatched_inputs(
    scores: np.ndarray, labels: list[int], counts: list[int] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(scores, np.asarray(labels, dtype=np.int64), train_class_counts=counts)
