"""The junk classifier and its numbers (ml/junk.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ml.junk import (
    junk_labels,
    junk_rate_upper_bound,
    junk_review_queue,
    score_junk,
    train_junk_classifier,
)
from ml.runtime import LocalRuntime
from tests.ml.factories import colour_images, tiny_recipe


def test_junk_classifier_scores_junk_higher_than_normal_images() -> None:
    rng = np.random.default_rng(0)
    normal = colour_images(np.zeros(48, dtype=np.int64), size=16, seed=1)
    junk = rng.integers(0, 256, size=(16, 16, 16, 1), dtype=np.uint8).repeat(3, axis=3)
    images = np.concatenate([normal, junk])
    is_junk = np.array([0] * 48 + [1] * 16)
    recipe = tiny_recipe(epochs=3, balance={"min_fraction": 1.0})

    result = train_junk_classifier(recipe, images, is_junk, runtime=LocalRuntime("cpu"))
    scores = score_junk(result.trained, images, runtime=LocalRuntime("cpu"))

    assert scores is not None and scores.shape == (64,)
    assert scores[48:].min() > scores[:48].max()
    assert result.trained.class_names == ["normal", "junk"]


def test_junk_classifier_needs_both_kinds_of_label() -> None:
    images = colour_images(np.zeros(4, dtype=np.int64), size=16)

    with pytest.raises(ValueError, match="both junk and normal"):
        train_junk_classifier(tiny_recipe(), images, [0, 0, -1, -1], runtime=LocalRuntime("cpu"))


def test_junk_labels_follow_the_class_names_and_keep_unlabelled_rows() -> None:
    labels = junk_labels(["junk", "normal"], np.array([0, 1, -1, 1]))

    assert labels.tolist() == [1, 0, -1, 0]


def test_junk_labels_refuse_other_classes() -> None:
    with pytest.raises(
        ValueError, match="junk labels must be 'junk' or 'normal', found \\['cat'\\]"
    ):
        junk_labels(["junk", "cat"], np.array([0, 1]))


def test_review_queue_is_above_threshold_most_likely_first() -> None:
    queue = junk_review_queue(np.array([0.95, 0.2, 0.99, 0.9, 0.95]), threshold=0.9)

    assert queue.tolist() == [2, 0, 4, 3]


@pytest.mark.parametrize(
    ("found", "audited", "bound"),
    [(0, 300, 0.009936), (3, 300, 0.025641), (10, 1000, 0.016903), (0, 10, 0.258866)],
)
def test_junk_rate_upper_bound_is_clopper_pearson(found: int, audited: int, bound: float) -> None:
    assert junk_rate_upper_bound(found, audited) == pytest.approx(bound, abs=1e-6)


def test_everything_junk_bounds_at_one() -> None:
    assert junk_rate_upper_bound(5, 5) == 1.0
