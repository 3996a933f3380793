"""Batched prediction (ml/predict.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from ml.checkpoint import TrainedModel
from ml.models import create_model
from ml.predict import iter_batches, predict, predict_logits, predictions_from_probs
from tests.ml.factories import balanced_labels, colour_images


@pytest.fixture
def trained() -> TrainedModel:
    torch.manual_seed(0)
    model = create_model("cifar_resnet8", num_classes=4).eval()
    return TrainedModel(model, "cifar_resnet8", 4, 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


@pytest.fixture
def images() -> NDArray[np.uint8]:
    return colour_images(balanced_labels(20, 4), size=16)


def test_topk_and_given_probability_agree_with_the_full_matrix(
    trained: TrainedModel, images: NDArray[np.uint8]
) -> None:
    labels = np.arange(20) % 4

    result = predict(trained, images, labels=labels, top_k=3, return_probs=True, batch_size=7)

    assert result.probs is not None and result.given_prob is not None
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(result.topk_ids, np.argsort(-result.probs, axis=1)[:, :3])
    np.testing.assert_allclose(result.topk_probs, np.sort(result.probs, axis=1)[:, ::-1][:, :3])
    np.testing.assert_allclose(result.given_prob, result.probs[np.arange(20), labels])


def test_predictions_follow_the_order_of_indices(
    trained: TrainedModel, images: NDArray[np.uint8]
) -> None:
    everything = predict(trained, images, top_k=1, return_probs=True)
    assert everything.probs is not None

    picked = predict(trained, images, indices=[9, 2, 15], top_k=1, return_probs=True, batch_size=2)

    assert picked.probs is not None
    np.testing.assert_allclose(picked.probs, everything.probs[[9, 2, 15]], rtol=1e-5, atol=1e-6)


def test_images_of_another_size_are_resized_for_the_model(trained: TrainedModel) -> None:
    big = colour_images(balanced_labels(4, 4), size=24)

    assert predict_logits(trained, big).shape == (4, 4)


def test_unknown_labels_get_nan_probability() -> None:
    probs = np.array([[0.2, 0.8], [0.6, 0.4]])

    result = predictions_from_probs(probs, [-1, 0], top_k=1)

    assert np.isnan(result.given_prob[0]) if result.given_prob is not None else False
    assert result.given_prob is not None and result.given_prob[1] == pytest.approx(0.6)
    assert result.topk_ids.tolist() == [[1], [0]]


def test_iter_batches_reads_rows_in_the_order_asked() -> None:
    array = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    rows = np.array([7, 1, 2, 3, 9])

    batches = list(iter_batches(array, rows, 2))

    assert [b.shape[0] for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(torch.cat(batches).numpy(), array[rows])
