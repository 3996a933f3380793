"""Decoding one image file to RGB pixels with Pillow; no torch, so cache builders can use it in
light worker processes.

Every mode Pillow opens becomes 8-bit RGB:

* ``RGB`` unchanged; ``L``, ``1``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` through Pillow's
  conversions (Adobe-inverted CMYK JPEGs are handled by Pillow's decoder);
* with transparency (``RGBA``, ``LA``, ``PA``, ``P`` or ``L`` with a transparent colour): composited
  onto a white background, so fully transparent pixels do not show whatever colour they store;
* high bit depth (``I;16*``, ``I``, ``F``): rescaled to 0..255 (16-bit by ``>> 8``; 32-bit
  integers and floats by their own range) rather than clipped;
* the EXIF orientation is applied; multi-frame files (GIF, TIFF) use their first frame.

Anything that goes wrong becomes an :class:`ImageDecodeError` naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["Fit", "ImageDecodeError", "decode_image", "load_image", "to_rgb"]

Fit = Literal["center_crop", "squash"]
"""How an image becomes a ``size × size`` square: ``center_crop`` scales the shorter side to
``size`` and cuts the central square; ``squash`` resizes both sides to ``size`` (no pixel lost,
aspect ratio changed)."""


class ImageDecodeError(Exception):
    """An image file could not be read or decoded. The message names the file and the reason.

    Constructed from one message string (plus keyword attributes), so it survives being re-raised
    from a DataLoader worker process.
    """

    def __init__(self, message: str, *, path: Path | str | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)
        self.reason = reason

    @classmethod
    def for_file(cls, path: Path | str, reason: str) -> ImageDecodeError:
        return cls(f"cannot decode image {path}: {reason}", path=path, reason=reason)


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    array = np.asarray(image)
    if image.mode.startswith("I;16"):
        scaled = (array.astype(np.uint32) >> 8).astype(np.uint8)
    else:
        values = array.astype(np.float64)
        finite = values[np.isfinite(values)]
        low = float(finite.min()) if finite.size else 0.0
        high = float(finite.max()) if finite.size else 0.0
        if image.mode == "F" and low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0
        elif low >= 0.0 and high <= 255.0:
            low, high = 0.0, 255.0
        span = high - low if high > low else 1.0
        values = np.nan_to_num((values - low) / span, nan=0.0, posinf=1.0, neginf=0.0)
        scaled = np.clip(np.round(values * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit ``RGB`` (see the module docstring for the rules)."""
    mode = image.mode
    if mode == "RGB":
        return image
    has_alpha = mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in {"I", "F"}:
        return _high_depth_to_l(image).convert("RGB")
    if mode == "1":
        return image.convert("L").convert("RGB")
    return image.convert("RGB")


def _fit(image: Image.Image, size: int, fit: Fit) -> Image.Image:
    width, height = image.size
    if fit == "squash":
        return image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    # Resize and crop in one call: the box is the crop expressed in source pixels.
    box = (left / scale, top / scale, (left + size) / scale, (top + size) / scale)
    return image.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)


def decode_image(path: str | Path, *, min_side: int | None = None) -> Image.Image:
    """Open, fully decode and convert one image file to an ``RGB`` Pillow image.

    Args:
        path: the image file.
        min_side: when given, JPEGs are decoded at a reduced scale (1/2, 1/4, 1/8) as long as the
            shorter side stays at least this many pixels: much faster for large photos that are
            resized down anyway.

    Raises:
        ImageDecodeError: the file is missing, unreadable, not an image, truncated, too large
            (a decompression bomb) or in a mode that cannot be converted.
    """
    try:
        with warnings.catch_warnings():
            # An image over Pillow's pixel limit is refused like any other hostile file.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                if min_side is not None and opened.format == "JPEG":
                    opened.draft("RGB", (min_side, min_side))
                opened.load()
                image = ImageOps.exif_transpose(opened)
                return to_rgb(image)
    except FileNotFoundError:
        raise ImageDecodeError.for_file(path, "file not found") from None
    except UnidentifiedImageError:
        raise ImageDecodeError.for_file(path, "not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError.for_file(path, f"too many pixels: {error}") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as error:
        raise ImageDecodeError.for_file(path, f"{type(error).__name__}: {error}") from None


def load_image(
    path: str | Path, *, size: int | None = None, fit: Fit = "center_crop"
) -> NDArray[np.uint8]:
    """Decode ``path`` to RGB pixels, uint8 ``[H, W, 3]``; with ``size``, ``[size, size, 3]``.

    Raises:
        ImageDecodeError: see :func:`decode_image`.
    """
    image = decode_image(path, min_side=size)
    if size is not None and image.size != (size, size):
        image = _fit(image, size, fit)
    return np.asarray(image, dtype=np.uint8).copy()
