"""Which rows each training step sees: the training rows and their fingerprint, the order of an
epoch (a seeded shuffle or class-balanced draws), and for images the DataLoader that augments
each sample in worker processes.

An epoch's order derives from ``(seed, epoch)`` and a sample's augmentation from
``(seed, epoch, row)``, so a run resumed mid-epoch sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from ml.augment.randomness import sample_generator
from ml.augment.transforms import build_sample_transform
from ml.data import ArrayDataset
from ml.recipes import Recipe
from ml.sampler import ClassBalancedSampler
from ml.training.interface import TrainingError

__all__ = [
    "EpochBatches",
    "EpochOrder",
    "image_loader",
    "training_fingerprint",
    "training_rows",
]


def training_rows(
    count: int, indices: NDArray[np.integer] | Sequence[int] | None
) -> NDArray[np.int64]:
    """The training rows ``[M]`` of ``count`` (default all), checked: at least two, in range.

    Raises:
        TrainingError: too few rows, or a row outside ``[0, count)``.
    """
    rows = (
        np.arange(count, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    )
    if rows.ndim != 1 or rows.shape[0] < 2:
        raise TrainingError(f"need at least 2 training samples, got {rows.shape[0]}")
    if rows.min() < 0 or rows.max() >= count:
        raise TrainingError(f"training indices must lie in [0, {count})")
    return rows


def training_fingerprint(
    labels: NDArray[np.int64], rows: NDArray[np.int64], num_classes: int
) -> str:
    """SHA-256 (hex) of the training rows ``[M]`` and their labels: a checkpoint resumes only
    on the same ones."""
    digest = hashlib.sha256(f"{num_classes}:".encode())
    digest.update(np.ascontiguousarray(rows).tobytes())
    digest.update(np.ascontiguousarray(labels[rows]).tobytes())
    return digest.hexdigest()


class EpochOrder:
    """The order of an epoch: a seeded shuffle of the training rows, or class-balanced draws.

    ``order(epoch)`` gives positions into the training rows; ``prior_counts`` ``[C]`` is the
    class distribution the model sees (the sampler's expected draws when balancing).
    """

    def __init__(self, recipe: Recipe, labels: NDArray[np.int64], num_classes: int) -> None:
        self.seed = recipe.seed
        self.balanced: ClassBalancedSampler | None = None
        if recipe.balance is not None:
            self.balanced = ClassBalancedSampler(
                labels,
                min_fraction=recipe.balance.min_fraction,
                seed=recipe.seed,
                num_samples=recipe.balance.epoch_samples,
                num_classes=num_classes,
            )
            self.epoch_length = len(self.balanced)
            self.prior_counts: NDArray[Any] = self.balanced.expected_class_draws()
        else:
            self.epoch_length = int(labels.shape[0])
            self.prior_counts = np.bincount(labels, minlength=num_classes)

    def order(self, epoch: int) -> NDArray[np.int64]:
        if self.balanced is not None:
            self.balanced.set_epoch(epoch)
            return np.fromiter(iter(self.balanced), dtype=np.int64, count=len(self.balanced))
        rng = np.random.default_rng([self.seed & (2**63 - 1), epoch])
        return rng.permutation(self.epoch_length).astype(np.int64)


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """The batches of one epoch as lists of ``(epoch, position)``; the epoch travels with every
    index so that persistent workers pick the right augmentation stream."""

    def __init__(
        self, order: Callable[[int], NDArray[np.int64]], batch_size: int, steps: int
    ) -> None:
        self.order = order
        self.batch_size = batch_size
        self.steps = steps
        self.epoch = 0
        self.start_step = 0

    def set_position(self, epoch: int, start_step: int) -> None:
        """Start the next iteration at step ``start_step`` of ``epoch``."""
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return self.steps - self.start_step

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        positions = self.order(self.epoch)
        for step in range(self.start_step, self.steps):
            chunk = positions[step * self.batch_size : (step + 1) * self.batch_size]
            yield [(self.epoch, int(p)) for p in chunk]


class _TrainSet(ArrayDataset):
    """:class:`ArrayDataset` addressed by ``(epoch, position)``."""

    def __getitem__(self, item: Any) -> tuple[Tensor, int]:
        epoch, position = item
        row = int(self.indices[position])
        image = torch.from_numpy(np.array(self.images[row])).permute(2, 0, 1)
        image = image.contiguous()
        if self.transform is not None:
            image = self.transform(image, sample_generator(self.seed, 0, epoch, row))
        return image, int(self.labels[row])


def _loader_workers(recipe: Recipe, device: torch.device) -> int:
    if recipe.loader_workers is not None:
        return recipe.loader_workers
    if device.type != "cuda":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def image_loader(
    recipe: Recipe,
    images: NDArray[np.uint8],
    labels: NDArray[np.int64],
    rows: NDArray[np.int64],
    batches: EpochBatches,
    device: torch.device,
) -> DataLoader[tuple[Tensor, int]]:
    """The DataLoader of an image run: uint8 ``[B, 3, H, W]`` augmented batches of
    ``images[rows]`` with their labels ``[B]``, in the order ``batches`` gives."""
    transform = build_sample_transform(recipe.augment, image_size=recipe.image_size, train=True)
    dataset = _TrainSet(images, labels, indices=rows, transform=transform, seed=recipe.seed)
    workers = _loader_workers(recipe, device)
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
