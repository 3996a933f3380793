"""Decoding and caching real images from the shared data (CIFAR-10, Caltech-101).

The archives are read from ``../shared/data`` (beside the repository) and members are extracted
to a temporary directory; the tests skip, saying why, when the data is not there.
"""

from __future__ import annotations

import csv
import tarfile
from pathlib import Path

import numpy as np
import pytest

from ml.cache import decoded_cache
from ml.decode import load_image
from ml.manifest import load_manifest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CIFAR_TRAIN = DATA / "cifar10" / "train.tar"
CIFAR_LABELS = DATA / "cifar10" / "train_labels.csv"
CALTECH = DATA / "caltech101" / "caltech101.tar"


def _extract(archive: Path, names: list[str], target: Path) -> list[Path]:
    """Extract ``names`` from ``archive`` under ``target`` (by reading bytes: no tar paths are
    trusted)."""
    paths = []
    with tarfile.open(archive) as tar:
        for name in names:
            member = tar.extractfile(name)
            assert member is not None, name
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(member.read())
            paths.append(path)
    return paths


@pytest.mark.skipif(not CIFAR_TRAIN.is_file(), reason=f"CIFAR-10 data not found at {CIFAR_TRAIN}")
def test_cifar10n_manifest_with_a_noisy_label_column_decodes_and_caches(tmp_path: Path) -> None:
    with CIFAR_LABELS.open(newline="") as handle:
        rows = [row for _, row in zip(range(40), csv.DictReader(handle), strict=False)]
    _extract(CIFAR_TRAIN, [row["path"] for row in rows], tmp_path)
    (tmp_path / "m.csv").write_text(
        "path,label,sample_id\n" + "".join(f"{r['path']},{r['worse']},{r['index']}\n" for r in rows)
    )

    manifest = load_manifest(tmp_path / "m.csv")
    cache = decoded_cache(manifest.paths, size=32, cache_dir=tmp_path / "cache", workers=0)

    assert cache.images.shape == (40, 32, 32, 3)
    np.testing.assert_array_equal(cache.images[7], load_image(manifest.paths[7]))
    assert set(manifest.classes) <= {
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    }


@pytest.mark.skipif(not CALTECH.is_file(), reason=f"Caltech-101 data not found at {CALTECH}")
def test_caltech_grayscale_and_extensionless_images_become_rgb(tmp_path: Path) -> None:
    names = [
        "101_ObjectCategories/BACKGROUND_Google/image_0006.jpg",  # single-channel grayscale
        "101_ObjectCategories/BACKGROUND_Google/tmp",  # a JPEG without an extension
        "101_ObjectCategories/BACKGROUND_Google/image_0001.jpg",
    ]
    gray, no_extension, colour = _extract(CALTECH, names, tmp_path)

    manifest = load_manifest(tmp_path / "101_ObjectCategories")
    pixels = load_image(gray, size=64)

    assert pixels.shape == (64, 64, 3)
    assert np.array_equal(pixels[..., 0], pixels[..., 1])
    assert load_image(no_extension).shape[-1] == 3
    assert load_image(colour).ndim == 3
    assert {p.name for p in manifest.paths} == {"image_0006.jpg", "tmp", "image_0001.jpg"}
