"""Datasets (ml/data.py)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ml.data import ArrayDataset, ManifestDataset
from ml.manifest import load_manifest
from tests.ml.factories import colour_images, write_image


def test_undecodable_file_error_names_it_from_a_dataloader_worker(tmp_path: Path) -> None:
    write_image(tmp_path / "cat" / "good.png", colour_images(np.array([0]))[0])
    (tmp_path / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    dataset = ManifestDataset(load_manifest(tmp_path), size=16)
    loader = DataLoader(dataset, batch_size=2, num_workers=1)

    with pytest.raises(Exception, match=r"cannot decode image .*broken\.jpg"):
        next(iter(loader))


def test_manifest_dataset_returns_chw_uint8(tmp_path: Path) -> None:
    pixels = colour_images(np.array([1]), size=12)[0]
    write_image(tmp_path / "dog" / "a.png", pixels)

    image, label = ManifestDataset(load_manifest(tmp_path))[0]

    assert image.dtype == torch.uint8
    assert image.shape == (3, 12, 12)
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), pixels)
    assert label == 0


def test_array_dataset_augmentation_depends_on_seed_epoch_and_row() -> None:
    images = colour_images(np.arange(4) % 2, size=8)

    def noise(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, 256, image.shape, generator=generator, dtype=torch.uint8)

    dataset = ArrayDataset(images, np.arange(4) % 2, indices=[3, 1], transform=noise, seed=5)
    first = dataset[0][0]
    again = ArrayDataset(images, np.arange(4) % 2, indices=[0, 3], transform=noise, seed=5)[1][0]
    dataset.set_epoch(1)

    assert torch.equal(first, again)  # same row, same seed and epoch, another subset
    assert not torch.equal(first, dataset[0][0])


def test_array_dataset_reopens_a_memory_map_instead_of_copying_it(tmp_path: Path) -> None:
    path = tmp_path / "images.npy"
    np.save(path, colour_images(np.arange(6) % 3, size=8))
    dataset = ArrayDataset(np.load(path, mmap_mode="r"), np.arange(6) % 3)

    payload = pickle.dumps(dataset)
    restored = pickle.loads(payload)  # noqa: S301  (our own bytes)

    assert len(payload) < 6 * 8 * 8 * 3
    assert isinstance(restored.images, np.memmap)
    assert torch.equal(restored[4][0], dataset[4][0])
