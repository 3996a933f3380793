"""The decoded cache (ml/cache.py)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from ml.cache import (
    CacheBuildError,
    CacheCorruptError,
    content_hashes,
    decoded_cache,
    open_decoded_cache,
)
from ml.decode import load_image
from tests.ml.factories import colour_images, write_image


@pytest.fixture
def image_files(tmp_path: Path) -> list[Path]:
    images = colour_images(np.arange(12) % 3, size=20, seed=1)
    files = []
    for i, pixels in enumerate(images):
        mode, fmt = [("RGB", "JPEG"), ("L", "PNG"), ("RGBA", "PNG")][i % 3]
        files.append(
            write_image(tmp_path / "img" / f"{i}.{fmt.lower()}", pixels, mode=mode, fmt=fmt)
        )
    return files


def test_cache_matches_direct_decoding(image_files: list[Path], tmp_path: Path) -> None:
    cache = decoded_cache(image_files, size=16, cache_dir=tmp_path / "cache", workers=0)

    expected = np.stack([load_image(p, size=16) for p in image_files])
    assert cache.images.shape == (12, 16, 16, 3)
    np.testing.assert_array_equal(cache.images, expected)
    assert cache.built


def test_cache_is_reused_not_rebuilt(image_files: list[Path], tmp_path: Path) -> None:
    first = decoded_cache(image_files, size=16, cache_dir=tmp_path / "cache", workers=0)
    modified = first.path.stat().st_mtime_ns

    second = decoded_cache(image_files, size=16, cache_dir=tmp_path / "cache", workers=0)

    assert not second.built
    assert second.path == first.path
    assert second.path.stat().st_mtime_ns == modified


def test_cache_is_keyed_by_content_and_size(image_files: list[Path], tmp_path: Path) -> None:
    first = decoded_cache(image_files, size=16, cache_dir=tmp_path / "cache", workers=0)
    other_size = decoded_cache(image_files, size=8, cache_dir=tmp_path / "cache", workers=0)
    write_image(image_files[0], colour_images(np.array([2]), size=20, seed=9)[0], fmt="JPEG")
    changed = decoded_cache(image_files, size=16, cache_dir=tmp_path / "cache", workers=0)

    assert len({first.path, other_size.path, changed.path}) == 3
    assert changed.built


def test_renamed_copies_reuse_the_cache(image_files: list[Path], tmp_path: Path) -> None:
    decoded_cache(image_files, size=16, cache_dir=tmp_path / "cache", workers=0)
    copies = []
    for path in image_files:
        copy = tmp_path / "copies" / f"copy-{path.name}"
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(path.read_bytes())
        copies.append(copy)

    assert not decoded_cache(copies, size=16, cache_dir=tmp_path / "cache", workers=0).built


def test_build_error_lists_every_bad_file_and_leaves_nothing(
    image_files: list[Path], tmp_path: Path
) -> None:
    bad = tmp_path / "img" / "bad.jpg"
    bad.write_bytes(b"nope")
    cache_dir = tmp_path / "cache"

    with pytest.raises(CacheBuildError, match=r"bad\.jpg") as caught:
        decoded_cache([*image_files, bad], size=16, cache_dir=cache_dir, workers=0)

    assert [row for row, _, _ in caught.value.failures] == [12]
    assert list(cache_dir.iterdir()) == []


def test_parallel_build_matches_serial_build(image_files: list[Path], tmp_path: Path) -> None:
    serial = decoded_cache(image_files, size=16, cache_dir=tmp_path / "a", workers=0)
    parallel = decoded_cache(
        image_files, size=16, cache_dir=tmp_path / "b", workers=2, chunk_rows=5
    )

    np.testing.assert_array_equal(serial.images, parallel.images)
    parallel.verify()


def test_two_processes_building_at_once_leave_one_valid_cache(
    image_files: list[Path], tmp_path: Path
) -> None:
    context = multiprocessing.get_context("spawn")
    names = [str(p) for p in image_files]
    options = {"size": 16, "cache_dir": str(tmp_path / "cache"), "workers": 0, "chunk_rows": 3}
    children = [
        context.Process(target=decoded_cache, args=(names,), kwargs=options) for _ in range(2)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)

    assert [child.exitcode for child in children] == [0, 0]
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npy")
    cache = decoded_cache(image_files, size=16, cache_dir=tmp_path / "cache", workers=0)
    assert not cache.built
    cache.verify()


def test_verify_detects_a_changed_byte(image_files: list[Path], tmp_path: Path) -> None:
    cache = decoded_cache(image_files, size=16, cache_dir=tmp_path / "cache", workers=0)
    with open(cache.path, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)[0]
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last ^ 0xFF]))

    reopened = open_decoded_cache(tmp_path / "cache", cache.meta.key)

    assert reopened is not None
    with pytest.raises(CacheCorruptError, match="do not match their checksum"):
        reopened.verify()


def test_truncated_array_is_not_opened_and_gets_rebuilt(
    image_files: list[Path], tmp_path: Path
) -> None:
    cache = decoded_cache(image_files, size=16, cache_dir=tmp_path / "cache", workers=0)
    expected: NDArray[np.uint8] = np.array(cache.images)
    with open(cache.path, "r+b") as handle:
        handle.truncate(cache.path.stat().st_size // 2)

    assert open_decoded_cache(tmp_path / "cache", cache.meta.key) is None
    rebuilt = decoded_cache(image_files, size=16, cache_dir=tmp_path / "cache", workers=0)
    assert rebuilt.built
    np.testing.assert_array_equal(rebuilt.images, expected)


def test_content_hashes_are_sha256(image_files: list[Path]) -> None:
    import hashlib

    assert content_hashes(image_files[:2], workers=0) == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in image_files[:2]
    ]
