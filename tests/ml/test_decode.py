"""Decoding any image mode to RGB, with errors that name the file (ml/decode.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.decode import ImageDecodeError, load_image


def _save(image: Image.Image, path: Path, fmt: str = "PNG") -> Path:
    image.save(path, format=fmt)
    return path


@pytest.mark.parametrize(
    ("image", "fmt", "expected"),
    [
        (Image.new("L", (4, 4), 100), "PNG", (100, 100, 100)),
        (Image.new("1", (4, 4), 1), "PNG", (255, 255, 255)),
        (Image.new("RGB", (4, 4), (10, 20, 30)).quantize(4), "PNG", (10, 20, 30)),
        (Image.new("RGBA", (4, 4), (10, 20, 30, 0)), "PNG", (255, 255, 255)),
        (Image.new("RGBA", (4, 4), (10, 20, 30, 255)), "PNG", (10, 20, 30)),
        (Image.new("LA", (4, 4), (0, 0)), "PNG", (255, 255, 255)),
        (Image.new("CMYK", (4, 4), (0, 0, 0, 0)), "TIFF", (255, 255, 255)),
        (Image.new("CMYK", (4, 4), (0, 0, 0, 0)), "JPEG", (255, 255, 255)),
        (Image.new("I;16", (4, 4), 65535), "PNG", (255, 255, 255)),
        (Image.new("I;16", (4, 4), 32896), "PNG", (128, 128, 128)),
        (Image.new("F", (4, 4), 0.5), "TIFF", (128, 128, 128)),
    ],
    ids=[
        "L",
        "1",
        "P",
        "RGBA-transparent",
        "RGBA-opaque",
        "LA",
        "CMYK-tiff",
        "CMYK-jpeg",
        "I16-max",
        "I16-mid",
        "F",
    ],
)
def test_every_mode_becomes_rgb(
    tmp_path: Path, image: Image.Image, fmt: str, expected: tuple[int, int, int]
) -> None:
    path = _save(image, tmp_path / f"image.{fmt.lower()}", fmt)

    pixels = load_image(path)

    assert pixels.dtype == np.uint8
    assert pixels.shape == (4, 4, 3)
    np.testing.assert_allclose(pixels[0, 0], expected, atol=2)


def test_palette_with_transparent_index_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.info["transparency"] = 0
    path = _save(image, tmp_path / "p.png")

    assert load_image(path)[0, 0].tolist() == [255, 255, 255]


def test_garbage_file_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "not-an-image.jpg"
    path.write_bytes(b"this is text, not a JPEG")

    with pytest.raises(ImageDecodeError, match=r"not-an-image\.jpg") as caught:
        load_image(path)

    assert caught.value.path == path
    assert "not a recognised image format" in caught.value.reason


def test_truncated_jpeg_error_names_the_file(tmp_path: Path) -> None:
    full = _save(Image.new("RGB", (64, 64), (200, 10, 10)), tmp_path / "full.jpg", "JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[:200])

    with pytest.raises(ImageDecodeError, match=r"cut\.jpg"):
        load_image(cut)


def test_missing_file_error_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match=r"gone\.png: file not found"):
        load_image(tmp_path / "gone.png")


def test_center_crop_fits_the_shorter_side(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # a white band at the left, outside the central square
    path = _save(Image.fromarray(pixels), tmp_path / "wide.png")

    cropped = load_image(path, size=10)

    assert cropped.shape == (10, 10, 3)
    assert cropped.max() < 30


def test_squash_keeps_the_whole_image(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :10] = 255
    path = _save(Image.fromarray(pixels), tmp_path / "wide.png")

    squashed = load_image(path, size=10, fit="squash")

    assert squashed.shape == (10, 10, 3)
    assert squashed[:, 0].min() > 200


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    path = tmp_path / "rotated.jpg"
    image.save(path, format="JPEG", exif=exif)

    assert load_image(path).shape == (20, 10, 3)
