"""Sample images for the browser: originals, and thumbnails cached on disk by content hash.

Lookups take a session; the image work does not, so a caller can end its transaction before
decoding (on SQLite every transaction holds the write lock).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from sqlalchemy.orm import Session

from app.errors import AppError, Invalid, NotFound
from app.logging import get_logger
from app.media import repository
from app.web.urls import THUMBNAIL_VERSION_CHARS

log = get_logger(__name__)

THUMBNAIL_QUALITY = 85
#: A thumbnail URL that names its content (``?v=`` a prefix of the file's SHA-256, as
#: :func:`app.web.urls.thumbnail_url` builds them) may be kept for good ...
THUMBNAIL_CACHE_CONTROL = "private, max-age=31536000, immutable"
#: ... one that does not (no ``v``, or another content's) is revalidated on every use, so a
#: re-imported, changed file never shows its old image (the ETag answers 304 while it is same).
UNVERSIONED_THUMBNAIL_CACHE_CONTROL = "private, no-cache"
#: Originals live at a path that a re-import may point at new content: revalidate after an hour.
ORIGINAL_CACHE_CONTROL = "private, max-age=3600"

_MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",  # a JPEG with extra frames; browsers show the first
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "ICO": "image/x-icon",
    "AVIF": "image/avif",
}
_TRANSPARENT_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class SampleUnavailable(AppError):
    status_code = 404
    code = "sample_unavailable"


class OutsideRoot(AppError):
    status_code = 403
    code = "outside_dataset_root"


class FileChanged(AppError):
    status_code = 409
    code = "file_changed"


@dataclass(frozen=True)
class SampleFile:
    """Where a usable sample's image is, and what the import recorded about it."""

    sample_id: int
    root: Path
    relative_path: str
    sha256: str
    byte_size: int | None
    media_type: str

    @property
    def original_etag(self) -> str:
        return f'"{self.sha256}"'

    def thumbnail_etag(self, size: int) -> str:
        return f'"{self.sha256}-{size}"'


def thumbnail_cache_control(file: SampleFile, version: str | None) -> str:
    """How long a browser may keep the thumbnail it asked for with ``?v=version``."""
    names_content = (
        version is not None
        and len(version) >= THUMBNAIL_VERSION_CHARS
        and file.sha256.startswith(version)
    )
    return THUMBNAIL_CACHE_CONTROL if names_content else UNVERSIONED_THUMBNAIL_CACHE_CONTROL


def find_sample_file(session: Session, sample_id: int) -> SampleFile:
    """The sample's file. Raises NotFound for an unknown id, SampleUnavailable for a sample
    without a usable image (an import issue, or gone from the source at the last import)."""
    found = repository.get_sample_and_root(session, sample_id)
    if found is None:
        raise NotFound(f"no sample with id {sample_id}")
    sample, root = found
    if sample.error is not None:
        detail = f" ({sample.error_detail})" if sample.error_detail else ""
        raise SampleUnavailable(
            f"sample {sample_id} has no usable image: {sample.error.value}{detail}",
            reason=sample.error.value,
        )
    if sample.missing:
        raise SampleUnavailable(
            f"sample {sample_id} was missing from its dataset at the last import",
            reason="missing_file",
        )
    if sample.sha256 is None:
        raise SampleUnavailable(f"sample {sample_id} has not been probed yet")
    return SampleFile(
        sample_id=sample.id,
        root=Path(root),
        relative_path=sample.path,
        sha256=sample.sha256,
        byte_size=sample.byte_size,
        media_type=media_type_for(sample.image_format),
    )


def media_type_for(image_format: str | None) -> str:
    """The Content-Type for a Pillow format name."""
    if image_format is None:
        return "application/octet-stream"
    name = image_format.upper()
    if name in _MEDIA_TYPES:
        return _MEDIA_TYPES[name]
    Image.init()
    return Image.MIME.get(name, "application/octet-stream")


def check_thumbnail_size(size: int, *, allowed: tuple[int, ...]) -> None:
    if size not in allowed:
        sizes = ", ".join(str(s) for s in allowed)
        raise Invalid(f"thumbnail size {size} is not offered; use one of {sizes}")


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names ``etag`` (weak comparison, as RFC 9110 asks)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def original_path(file: SampleFile) -> Path:
    """The image's real path, after checking it still lies inside the dataset root and still
    has the size the import recorded. Symlinks are resolved, so serve this path, not another."""
    try:
        root = file.root.resolve(strict=True)
        resolved = (file.root / file.relative_path).resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # missing, broken link, link loop
        raise SampleUnavailable(
            f"the file of sample {file.sample_id} is missing: {file.relative_path}",
            reason="missing_file",
        ) from exc
    if not resolved.is_relative_to(root):
        log.warning("media.original.outside_root", sample_id=file.sample_id)
        raise OutsideRoot(
            f"the file of sample {file.sample_id} now resolves outside the dataset root"
        )
    try:
        stat = resolved.stat()
    except OSError as exc:
        raise SampleUnavailable(f"the file of sample {file.sample_id} cannot be read") from exc
    if not resolved.is_file():
        raise SampleUnavailable(f"the path of sample {file.sample_id} is not a file")
    if file.byte_size is not None and stat.st_size != file.byte_size:
        raise FileChanged(
            f"the file of sample {file.sample_id} changed since it was imported; re-run the import"
        )
    return resolved


def thumbnail_cache_path(cache_dir: Path, sha256: str, size: int) -> Path:
    """``<cache_dir>/ab/cd/<sha256>_<size>.jpg``: sharded so no directory grows huge."""
    return cache_dir / sha256[:2] / sha256[2:4] / f"{sha256}_{size}.jpg"


def get_thumbnail(file: SampleFile, *, size: int, cache_dir: Path) -> bytes:
    """The JPEG thumbnail (longest side ``size`` px) from the cache, made and cached if absent.

    A cached thumbnail is served without touching the original: it was made from the content
    the import hashed.
    """
    cached = thumbnail_cache_path(cache_dir, file.sha256, size)
    try:
        return cached.read_bytes()
    except FileNotFoundError:
        pass
    source = original_path(file)
    try:
        data = make_thumbnail(source, size)
    except _DECODE_ERRORS as exc:
        log.warning("media.thumbnail.failed", sample_id=file.sample_id, error=str(exc))
        raise SampleUnavailable(
            f"the image of sample {file.sample_id} could not be decoded: {exc}"
        ) from exc
    _write_atomically(cached, data)
    log.info("media.thumbnail.created", sample_id=file.sample_id, size=size, bytes=len(data))
    return data


def make_thumbnail(path: Path, size: int) -> bytes:
    """A baseline RGB JPEG of the image at ``path``, upright per EXIF, longest side ``size``."""
    with Image.open(path) as image:
        # JPEG only: decode at 1/2, 1/4 or 1/8 scale, as long as both sides stay >= size.
        image.draft("RGB", (size, size))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        rgb = _to_rgb(image)
    width, height = rgb.size
    scale = size / max(width, height)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    if target != rgb.size:
        if scale < 1:
            rgb = rgb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        else:
            rgb = rgb.resize(target, Image.Resampling.BICUBIC)
    out = BytesIO()
    rgb.save(out, "JPEG", quality=THUMBNAIL_QUALITY)
    return out.getvalue()


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; transparency over white, high bit depths stretched."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        span = high - low or 1.0
        gray = ((values - low) * (255.0 / span)).clip(0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode in _TRANSPARENT_MODES or "transparency" in image.info:
        if image.mode == "La":
            image = image.convert("LA")
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _write_atomically(path: Path, data: bytes) -> None:
    """Writes a private temporary file next to ``path`` and renames it into place, so a
    concurrent reader sees either no file or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        Path(tmp_name).replace(path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
