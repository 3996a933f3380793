"""Per-sample generators (ml/augment/randomness.py)."""

from __future__ import annotations

import torch

from ml.augment.randomness import sample_generator


def test_sample_generators_differ_by_key_and_repeat_by_key() -> None:
    def draw(*key: int) -> float:
        return float(torch.rand((), generator=sample_generator(*key)))

    assert draw(0, 1, 2) == draw(0, 1, 2)
    assert len({draw(0, 1, 2), draw(0, 2, 1), draw(1, 1, 2), draw(0, 1, 3)}) == 4
