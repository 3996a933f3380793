"""The confident_learning job the cross-validation round queues: its wire format (a label-issues
bundle) and what the worker computes from the fold jobs' probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from ml.core.protocol.bundle_format import BundleError
from ml.core.protocol.bundles import (
    JobManifest,
    LabelIssues,
    decode_label_issues,
    encode_label_issues,
)
from ml.core.protocol.jobs import ConfidentLearningSpec, parse_spec, result_set
from ml.worker.handlers import HANDLERS, label_issues


def _manifest(labels: list[int], classes: int) -> JobManifest:
    n = len(labels)
    return JobManifest(
        root="/nowhere",
        sample_ids=np.arange(100, 100 + n, dtype=np.int64),
        labels=np.asarray(labels, dtype=np.int32),
        folds=np.zeros(n, dtype=np.int8),
        sha256=np.zeros((n, 32), dtype=np.uint8),
        paths=[f"{i}.png" for i in range(n)],
        class_ids=np.arange(10, 10 + classes, dtype=np.int64),
        class_names=[f"c{c}" for c in range(classes)],
    )


def test_a_label_issues_bundle_round_trips() -> None:
    issues = LabelIssues(
        np.asarray([5, 9], np.int64), np.asarray([True, False]), np.asarray([0.1, 0.8], np.float32)
    )
    back = decode_label_issues(encode_label_issues(issues))
    assert back.sample_id.tolist() == [5, 9] and back.is_issue.tolist() == [True, False]
    assert back.label_quality.tolist() == pytest.approx([0.1, 0.8])


def test_a_label_issues_bundle_with_repeated_samples_is_refused() -> None:
    issues = LabelIssues(
        np.asarray([5, 5], np.int64), np.asarray([True, False]), np.asarray([0.1, 0.8], np.float32)
    )
    with pytest.raises(BundleError, match="duplicates"):
        encode_label_issues(issues)


def test_a_confident_learning_job_reports_no_per_sample_results() -> None:
    spec = parse_spec(
        {
            "kind": "confident_learning",
            "train": {"sha256": "a" * 64, "count": 3, "num_classes": 2},
            "probs": [
                {
                    "job_id": 1,
                    "probs": {
                        "id": 1,
                        "job_id": 1,
                        "name": "probs.npy",
                        "sha256": "b" * 64,
                        "byte_size": 1,
                    },
                    "sample_ids": {
                        "id": 2,
                        "job_id": 1,
                        "name": "probs_sample_ids.npy",
                        "sha256": "c" * 64,
                        "byte_size": 1,
                    },
                }
            ],
        }
    )
    assert isinstance(spec, ConfidentLearningSpec) and result_set(spec) is None
    assert "confident_learning" in HANDLERS


def test_confident_learning_finds_the_flipped_labels() -> None:
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 50)
    probs = np.full((200, 5), 0.02, np.float32)  # class 4 has no sample: left out
    probs[np.arange(200), truth] = 0.9
    probs += rng.uniform(0, 0.02, probs.shape).astype(np.float32)
    probs /= probs.sum(axis=1, keepdims=True)
    given = truth.copy()
    flipped = np.arange(0, 200, 10)
    given[flipped] = (truth[flipped] + 1) % 4
    issues = label_issues(_manifest(given.tolist(), 5), probs, filter_by="prune_by_noise_rate")
    found = set(np.flatnonzero(issues.is_issue).tolist())
    assert found == set(flipped.tolist())
    assert issues.label_quality[flipped].max() < np.delete(issues.label_quality, flipped).min()
