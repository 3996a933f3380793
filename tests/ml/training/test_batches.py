"""The training rows and the order of an epoch (ml/training/batches.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ml.training.batches import EpochBatches, EpochOrder, training_rows
from ml.training.interface import TrainingError
from tests.ml.factories import balanced_labels, tiny_recipe


def test_training_rows_default_to_every_row() -> None:
    assert training_rows(3, None).tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("indices", "message"),
    [([1], "at least 2 training samples"), ([0, 3], r"must lie in \[0, 3\)")],
)
def test_training_rows_refuse_too_few_or_outside_rows(indices: list[int], message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        training_rows(3, indices)


def test_an_epochs_order_depends_on_the_seed_and_the_epoch_only() -> None:
    labels = balanced_labels(40, 4, seed=0)
    first = EpochOrder(tiny_recipe(seed=3), labels, 4)
    again = EpochOrder(tiny_recipe(seed=3), labels, 4)

    assert np.array_equal(first.order(1), again.order(1))
    assert not np.array_equal(first.order(1), first.order(2))
    assert sorted(first.order(1).tolist()) == list(range(40))


def test_batches_resume_at_a_step_with_the_epoch_in_every_index() -> None:
    batches = EpochBatches(lambda epoch: np.arange(10, dtype=np.int64)[::-1], 3, steps=3)
    batches.set_position(epoch=2, start_step=1)

    assert len(batches) == 2
    assert list(batches) == [[(2, 6), (2, 5), (2, 4)], [(2, 3), (2, 2), (2, 1)]]
