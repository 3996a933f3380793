"""Datasets over manifests and decoded arrays (the folds are :mod:`ml.core.folds`).

Two sources of pixels:

* :class:`ManifestDataset` decodes files with Pillow on every access (for one-off passes);
* :class:`ArrayDataset` reads rows of a uint8 array ``[N, H, W, 3]``, usually the memory-mapped
  decoded cache (:mod:`ml.cache`), which is what training and prediction use.

Both return ``(image uint8 [3, H, W], label int)`` and apply an optional per-sample transform
(:data:`ml.augment.transforms.SampleTransform`) with its own generator
``sample_generator(seed, 0, epoch, index)``, so a sample's augmentation does not depend on
DataLoader workers or order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import Dataset

from ml.augment.randomness import sample_generator
from ml.augment.transforms import SampleTransform
from ml.decode import Fit, load_image
from ml.manifest import Manifest

__all__ = ["ArrayDataset", "ManifestDataset"]


class _Transformed(Dataset[tuple[Tensor, int]]):
    """Shared per-sample transform and epoch handling."""

    def __init__(self, transform: SampleTransform | None, seed: int) -> None:
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (same seed + epoch + index = same view)."""
        self.epoch = epoch

    def _apply(self, image: Tensor, index: int) -> Tensor:
        if self.transform is None:
            return image
        return self.transform(image, sample_generator(self.seed, 0, self.epoch, index))


class ManifestDataset(_Transformed):
    """Decode the manifest's files on access.

    Args:
        manifest: the samples.
        size: when given, every image is fitted to ``size × size`` (see :data:`ml.decode.Fit`).
        transform: per-sample transform on uint8 ``[3, H, W]``.
        seed: seeds the transform's per-sample generators.

    ``__getitem__`` raises :class:`ml.decode.ImageDecodeError` naming the file when it cannot be
    decoded (also from a DataLoader worker, where the message names it too).
    """

    def __init__(
        self,
        manifest: Manifest,
        *,
        size: int | None = None,
        fit: Fit = "center_crop",
        transform: SampleTransform | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(transform, seed)
        self.manifest = manifest
        self.size = size
        self.fit: Fit = fit

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        sample = self.manifest.samples[index]
        pixels = load_image(sample.path, size=self.size, fit=self.fit)
        image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
        return self._apply(image, index), sample.label


class ArrayDataset(_Transformed):
    """Rows of a uint8 image array ``[N, H, W, 3]`` (an in-memory array or the decoded cache's
    memory map) with their labels.

    Args:
        images: ``[N, H, W, 3]`` uint8.
        labels: ``[N]`` class ids (``-1`` allowed for unlabelled rows).
        indices: the rows this dataset exposes, in order; item ``i`` is row ``indices[i]``.
            Default: all rows.
        transform, seed: as in :class:`ManifestDataset`; the generator is keyed by the row index,
            so a row gets the same view whichever subset it appears in.

    A memory-mapped array is re-opened, not copied, when the dataset is sent to a worker process.
    """

    def __init__(
        self,
        images: NDArray[np.uint8],
        labels: NDArray[np.integer] | Sequence[int],
        *,
        indices: NDArray[np.integer] | Sequence[int] | None = None,
        transform: SampleTransform | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(transform, seed)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}"
            )
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        if self.labels.shape != (images.shape[0],):
            raise ValueError(f"labels {self.labels.shape} do not match {images.shape[0]} images")
        self.indices = (
            np.arange(images.shape[0], dtype=np.int64)
            if indices is None
            else np.asarray(indices, dtype=np.int64)
        )

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, item: int) -> tuple[Tensor, int]:
        row = int(self.indices[item])
        # A copy: memory-mapped rows are read-only, and torch wants writable arrays.
        image = torch.from_numpy(np.array(self.images[row])).permute(2, 0, 1)
        return self._apply(image.contiguous(), row), int(self.labels[row])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        images = self.images
        if isinstance(images, np.memmap) and images.filename is not None:
            state["images"] = ("memmap", images.filename, images.offset, images.shape)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        images = state["images"]
        if isinstance(images, tuple) and images and images[0] == "memmap":
            _, filename, offset, shape = images
            state["images"] = np.memmap(
                filename, dtype=np.uint8, mode="r", offset=offset, shape=shape
            )
        self.__dict__.update(state)
