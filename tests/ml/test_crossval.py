"""Out-of-fold predictions and the cleaning rules on injected label flips (ml/crossval.py)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from ml.core.cleaning.confident import confident_learning
from ml.core.cleaning.quality import rejection_quality
from ml.core.cleaning.topk import pullback, topk_keep
from ml.core.folds import stratified_folds
from ml.crossval import OutOfFold, out_of_fold_predictions
from ml.predict import predict
from ml.train import train_model
from tests.ml.factories import balanced_labels, colour_images, flip_labels, tiny_recipe

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def noisy() -> tuple[NDArray[np.uint8], NDArray[np.int64], NDArray[np.bool_]]:
    """240 images of 4 colour classes, 10% of the labels flipped to another class."""
    truth = balanced_labels(240, NUM_CLASSES, seed=0)
    labels, flipped = flip_labels(truth, NUM_CLASSES, fraction=0.1, seed=1)
    return colour_images(truth, size=16, seed=2), labels, flipped


@pytest.fixture(scope="module")
def oof(noisy: tuple[NDArray[np.uint8], NDArray[np.int64], NDArray[np.bool_]]) -> OutOfFold:
    images, labels, _ = noisy
    folds = stratified_folds(labels, 3, seed=0)
    return out_of_fold_predictions(
        tiny_recipe(epochs=6, optimizer={"name": "sgd", "lr": 0.03}),
        images,
        labels,
        folds,
        num_classes=NUM_CLASSES,
        top_k=2,
        device="cpu",
    )


def test_every_sample_is_predicted_by_the_model_that_did_not_see_it(oof: OutOfFold) -> None:
    assert oof.probs.shape == (240, NUM_CLASSES)
    np.testing.assert_allclose(oof.probs.sum(axis=1), 1.0, rtol=1e-5)
    for result in oof.fold_results:
        np.testing.assert_array_equal(result.heldout, np.flatnonzero(oof.folds == result.fold))
    assert oof.predictions.topk_ids.shape == (240, 2)


def test_top1_rule_rejects_most_flipped_and_few_clean_samples(
    noisy: tuple[NDArray[np.uint8], NDArray[np.int64], NDArray[np.bool_]], oof: OutOfFold
) -> None:
    _, labels, flipped = noisy

    rejected = ~topk_keep(labels, oof.probs, k=1)

    assert rejected[flipped].mean() >= 0.8
    assert rejected[~flipped].mean() <= 0.1


def test_confident_learning_on_the_same_predictions(
    noisy: tuple[NDArray[np.uint8], NDArray[np.int64], NDArray[np.bool_]], oof: OutOfFold
) -> None:
    _, labels, flipped = noisy

    quality = rejection_quality(confident_learning(labels, oof.probs), flipped)

    assert quality.recall >= 0.7
    assert quality.precision >= 0.7


def test_pullback_round_returns_wrongly_rejected_clean_samples_and_no_flipped_ones(
    noisy: tuple[NDArray[np.uint8], NDArray[np.int64], NDArray[np.bool_]],
) -> None:
    images, labels, flipped = noisy
    # An over-eager first pass: every flipped sample rejected, and 24 clean ones too.
    wrongly_rejected = np.random.default_rng(3).choice(np.flatnonzero(~flipped), 24, replace=False)
    kept = ~flipped
    kept[wrongly_rejected] = False
    rejected = np.flatnonzero(~kept)
    model = train_model(
        tiny_recipe(epochs=6, optimizer={"name": "sgd", "lr": 0.03}, seed=5),
        images,
        labels,
        num_classes=NUM_CLASSES,
        indices=np.flatnonzero(kept),
        device="cpu",
    )
    probs = predict(model.trained, images, indices=rejected, top_k=1, return_probs=True).probs
    assert probs is not None

    result = pullback(labels, kept, probs, k=1, indices=rejected)

    assert np.isin(wrongly_rejected, result.pulled_back).mean() >= 0.8
    assert not flipped[result.pulled_back].any()
    assert result.kept[kept].all()
