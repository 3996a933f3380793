"""Thumbnails from image files, and the disk cache (no database)."""

from __future__ import annotations

import hashlib
import threading
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app.media import service
from app.media.service import SampleFile


def decode(data: bytes) -> Image.Image:
    image = Image.open(BytesIO(data))
    image.load()
    return image


def save(image: Image.Image, path: Path, **params: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **params)
    return path


def sample_file(root: Path, relative: str) -> SampleFile:
    data = (root / relative).read_bytes()
    return SampleFile(
        sample_id=1,
        root=root,
        relative_path=relative,
        sha256=hashlib.sha256(data).hexdigest(),
        byte_size=len(data),
        media_type="image/jpeg",
    )


@pytest.mark.parametrize(
    ("width", "height", "expected"), [(640, 480, (128, 96)), (300, 900, (43, 128))]
)
def test_thumbnail_longest_side_is_the_requested_size(
    tmp_path: Path, width: int, height: int, expected: tuple[int, int]
) -> None:
    path = save(Image.new("RGB", (width, height), (10, 120, 200)), tmp_path / "a.jpg")
    thumbnail = decode(service.make_thumbnail(path, 128))
    assert thumbnail.format == "JPEG"
    assert thumbnail.size == expected


def test_small_image_is_scaled_up_to_the_requested_size(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (32, 16), (200, 0, 0)), tmp_path / "tiny.png")
    assert decode(service.make_thumbnail(path, 96)).size == (96, 48)


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGBA", "LA", "CMYK", "I", "I;16", "F"])
def test_thumbnail_of_any_mode_is_rgb(tmp_path: Path, mode: str) -> None:
    image = Image.new(mode, (40, 30))
    suffix = ".jpg" if mode == "CMYK" else ".tiff" if mode in ("I", "F") else ".png"
    path = save(image, tmp_path / f"image{suffix}")
    thumbnail = decode(service.make_thumbnail(path, 96))
    assert thumbnail.mode == "RGB"
    assert thumbnail.size == (96, 72)


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    path = save(Image.new("RGBA", (20, 20), (255, 0, 0, 0)), tmp_path / "clear.png")
    pixel = decode(service.make_thumbnail(path, 96)).getpixel((48, 48))
    assert isinstance(pixel, tuple)
    assert min(pixel) > 245


def test_sixteen_bit_gray_is_stretched_not_clipped(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 4000, 64, dtype=np.uint16), (64, 1))
    path = save(Image.fromarray(ramp), tmp_path / "deep.png")
    pixels = np.asarray(decode(service.make_thumbnail(path, 64)).convert("L"))
    assert pixels[:, :8].mean() < 40
    assert 90 < pixels[:, 28:36].mean() < 165
    assert pixels[:, -8:].mean() > 215


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the camera was turned a quarter clockwise
    path = save(Image.new("RGB", (200, 100), (0, 90, 0)), tmp_path / "turned.jpg", exif=exif)
    assert decode(service.make_thumbnail(path, 128)).size == (64, 128)


def test_large_jpeg_gets_the_exact_thumbnail_size(tmp_path: Path) -> None:
    # Draft mode decodes this at 1/8 scale (400×300); the resize then brings it to size.
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (2400, 3200, 3), dtype=np.uint8)
    path = save(Image.fromarray(pixels), tmp_path / "big.jpg", quality=80)
    assert decode(service.make_thumbnail(path, 256)).size == (256, 192)


def test_cache_path_is_sharded_by_hash_and_size(tmp_path: Path) -> None:
    sha = "abcdef" + "0" * 58
    path = service.thumbnail_cache_path(tmp_path, sha, 256)
    assert path == tmp_path / "ab" / "cd" / f"{sha}_256.jpg"


def test_thumbnail_is_made_once_then_served_from_the_cache(tmp_path: Path) -> None:
    root, cache = tmp_path / "images", tmp_path / "cache"
    save(Image.new("RGB", (64, 64), (1, 2, 3)), root / "a.jpg")
    file = sample_file(root, "a.jpg")
    first = service.get_thumbnail(file, size=96, cache_dir=cache)
    (root / "a.jpg").unlink()  # a cached thumbnail no longer needs the original
    assert service.get_thumbnail(file, size=96, cache_dir=cache) == first
    assert [p.name for p in cache.rglob("*") if p.is_file()] == [f"{file.sha256}_96.jpg"]


def test_concurrent_requests_never_see_a_partial_thumbnail(tmp_path: Path) -> None:
    root, cache = tmp_path / "images", tmp_path / "cache"
    save(Image.new("RGB", (900, 700), (9, 99, 199)), root / "a.png")
    file = sample_file(root, "a.png")
    results: list[bytes] = []
    start = threading.Barrier(8)

    def fetch() -> None:
        start.wait()
        results.append(service.get_thumbnail(file, size=256, cache_dir=cache))

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert all(decode(data).size == (256, 199) for data in results)
    assert [p.name for p in cache.rglob("*") if p.is_file()] == [f"{file.sha256}_256.jpg"]


def test_file_of_another_size_than_imported_is_refused(tmp_path: Path) -> None:
    save(Image.new("RGB", (64, 64)), tmp_path / "a.png")
    file = sample_file(tmp_path, "a.png")
    save(Image.new("RGB", (640, 64)), tmp_path / "a.png")
    with pytest.raises(service.FileChanged):
        service.original_path(file)


def test_undecodable_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    file = sample_file(tmp_path, "a.jpg")
    with pytest.raises(service.SampleUnavailable, match="could not be decoded"):
        service.get_thumbnail(file, size=96, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.jpg"))


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ('"abc-96"', True),
        ('W/"abc-96"', True),
        ('"zzz", "abc-96"', True),
        ("*", True),
        ('"abc-128"', False),
        ("", False),
        (None, False),
    ],
)
def test_if_none_match_comparison(header: str | None, matches: bool) -> None:
    assert service.etag_matches(header, '"abc-96"') is matches


def test_media_types_follow_the_pillow_format() -> None:
    assert service.media_type_for("JPEG") == "image/jpeg"
    assert service.media_type_for("MPO") == "image/jpeg"
    assert service.media_type_for("PNG") == "image/png"
    assert service.media_type_for(None) == "application/octet-stream"
