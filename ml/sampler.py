"""Class-balanced sampling for final training on a long-tailed dataset.

Every class is drawn at least ``min_fraction`` as often as the largest class; classes already
above that stay at their natural rate (each of their samples once per epoch), smaller classes are
oversampled with repetition. With class counts ``n_c`` and ``n_max = max_c n_c``, a class's
draws per epoch are

    d_c = max(n_c, ceil(min_fraction * n_max))      (0 for a class with no samples)

and the **epoch length** is ``sum_c d_c``. Passing ``num_samples`` fixes the epoch length instead
and scales every ``d_c`` by the same factor (see :func:`expected_class_draws`).

Within a class, draws are spread evenly over its samples: a class drawn ``d_c`` times from
``n_c`` samples shows each sample ``d_c // n_c`` times plus one more for a random
``d_c % n_c`` of them, so no sample is skipped by chance. The epoch's draws are then shuffled.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Sampler

from ml.core.cleaning.arrays import non_negative_ints

__all__ = ["ClassBalancedSampler", "balanced_class_draws", "expected_class_draws"]

ArrayLike = Sequence[int] | NDArray[np.integer] | torch.Tensor


def _as_int_array(values: ArrayLike, name: str) -> NDArray[np.int64]:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return non_negative_ints(values, name=name)


def _check_fraction(min_fraction: float) -> None:
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")


def balanced_class_draws(
    class_counts: ArrayLike, *, min_fraction: float = 1 / 3
) -> NDArray[np.int64]:
    """Per-class draws in one natural-length epoch, ``[C]``: ``max(n_c, ceil(min_fraction *
    n_max))``, and 0 for empty classes. Their sum is the default epoch length."""
    _check_fraction(min_fraction)
    counts = _as_int_array(class_counts, "class_counts")
    if counts.size == 0 or counts.max() == 0:
        return np.zeros_like(counts)
    # Rounded first so that e.g. (1/3) * 300 counts as exactly 100, not 100.00000000000001.
    floor = math.ceil(round(min_fraction * int(counts.max()), 9))
    return np.where(counts > 0, np.maximum(counts, floor), 0).astype(np.int64)


def expected_class_draws(
    class_counts: ArrayLike,
    *,
    min_fraction: float = 1 / 3,
    num_samples: int | None = None,
) -> NDArray[np.float64]:
    """Expected draws per class in one epoch of :class:`ClassBalancedSampler`, ``[C]`` float64.

    Without ``num_samples`` these are exact integers (every epoch draws exactly this many);
    with it, :func:`balanced_class_draws` scaled to sum to ``num_samples`` — each epoch then draws
    the floor or the ceiling, randomly, so that the mean over epochs is this value.

    Args:
        class_counts: training samples per class ``[C]``.
        min_fraction: every non-empty class is drawn at least this fraction as often as the
            largest class.
        num_samples: a fixed epoch length, or ``None`` for the natural one.
    """
    draws = balanced_class_draws(class_counts, min_fraction=min_fraction).astype(np.float64)
    if num_samples is None:
        return draws
    if num_samples < 0:
        raise ValueError(f"num_samples must be non-negative, got {num_samples}")
    total = draws.sum()
    if total == 0:
        return draws
    scaled: NDArray[np.float64] = draws * (num_samples / total)
    return scaled


class ClassBalancedSampler(Sampler[int]):
    """Indices into a dataset of ``labels``, class-balanced as the module docstring describes.

    Deterministic given ``seed`` and the epoch set with :meth:`set_epoch` (call it before every
    epoch, as with ``DistributedSampler``); different epochs give different orders.

    Args:
        labels: class id of every sample, ``[N]`` ints in ``[0, C)``.
        min_fraction: the smallest class rate relative to the largest class (default 1/3).
        seed: seeds the shuffling and the choice of repeated samples.
        num_samples: epoch length; ``None`` for ``sum_c max(n_c, ceil(min_fraction * n_max))``.
        num_classes: ``C`` when some classes have no samples at the end of the range; defaults
            to ``max(labels) + 1``.
    """

    def __init__(
        self,
        labels: ArrayLike,
        *,
        min_fraction: float = 1 / 3,
        seed: int,
        num_samples: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        _check_fraction(min_fraction)
        label_array = _as_int_array(labels, "labels")
        if label_array.size == 0:
            raise ValueError("labels is empty: nothing to sample")
        if num_samples is not None and num_samples < 0:
            raise ValueError(f"num_samples must be non-negative, got {num_samples}")
        top = int(label_array.max()) + 1
        if num_classes is not None and num_classes < top:
            raise ValueError(f"num_classes {num_classes} is below the largest label + 1 ({top})")
        self.min_fraction = min_fraction
        self.seed = seed
        self.num_samples = num_samples
        self.epoch = 0
        self.class_counts: NDArray[np.int64] = np.bincount(
            label_array, minlength=num_classes or top
        ).astype(np.int64)
        self.class_draws: NDArray[np.int64] = balanced_class_draws(
            self.class_counts, min_fraction=min_fraction
        )
        order = np.argsort(label_array, kind="stable")
        bounds = np.cumsum(self.class_counts)[:-1]
        self._class_indices: list[NDArray[np.int64]] = np.split(order, bounds)

    def expected_class_draws(self) -> NDArray[np.float64]:
        """Expected draws per class in one epoch, ``[C]`` (see :func:`expected_class_draws`)."""
        return expected_class_draws(
            self.class_counts, min_fraction=self.min_fraction, num_samples=self.num_samples
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.num_samples is not None:
            return self.num_samples
        return int(self.class_draws.sum())

    def _epoch_class_draws(self, rng: np.random.Generator) -> NDArray[np.int64]:
        if self.num_samples is None:
            return self.class_draws
        expected = self.expected_class_draws()
        base = np.floor(expected).astype(np.int64)
        remainder = self.num_samples - int(base.sum())
        if remainder <= 0:
            return base
        # Systematic sampling over the fractional parts: class c gets one extra draw with
        # probability exactly frac_c, and exactly `remainder` classes get one.
        cumulative = np.cumsum(expected - base)
        cumulative[-1] = remainder
        u = rng.random()
        upper = np.ceil(cumulative - u)
        lower = np.ceil(np.concatenate(([0.0], cumulative[:-1])) - u)
        extra: NDArray[np.int64] = np.clip(upper - lower, 0, None).astype(np.int64)
        return base + extra

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed & (2**63 - 1), self.epoch & (2**63 - 1)])
        chunks: list[NDArray[np.int64]] = []
        for indices, draws in zip(self._class_indices, self._epoch_class_draws(rng), strict=True):
            n = len(indices)
            if draws == 0 or n == 0:
                continue
            repeats, extra = divmod(int(draws), n)
            chunks.extend(rng.permutation(indices) for _ in range(repeats))
            if extra:
                chunks.append(rng.choice(indices, size=extra, replace=False))
        if not chunks:
            return iter(())
        drawn = np.concatenate(chunks)
        rng.shuffle(drawn)
        return iter(drawn.tolist())
