"""Probing image files: the facts an import stores, or why the file is unusable.

Pure functions with no database access, run in worker processes of a process pool
(``probe_chunk``). A probe never raises for a bad file: every problem comes back as an
``IssueReason`` with a human-readable detail.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, NamedTuple

from PIL import Image, UnidentifiedImageError

from app.datasets.files import NotARegularFile, open_regular_file
from app.models.dataset import IssueReason

__all__ = [
    "ACCEPTED_FORMATS",
    "ProbeResult",
    "escape_text",
    "failed_probe",
    "init_worker",
    "probe_chunk",
    "probe_file",
]

#: Pillow format names we import. GIF and multi-page TIFF count by their first frame.
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"})

#: Files up to this size are read whole, hashed and decoded from memory; larger ones are
#: decoded from the file and hashed in chunks (so a pool worker never holds more than this).
_IN_MEMORY_BYTES = 32 << 20
#: The read size for hashing large files (1 MiB reads cost far fewer syscalls than 256 KiB).
_CHUNK_BYTES = 1 << 20
_SIGNATURE_BYTES = 16

# Image formats Pillow cannot identify, told apart from "not an image" by their magic bytes.
_FOREIGN_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (0, b"%PDF", "PDF"),
    (0, b"8BPS", "PSD"),
)


class ProbeResult(NamedTuple):
    """What one probe found. Image fields are None when ``error`` is set.

    ``byte_size`` and ``mtime_ns`` are filled whenever the file could be stat'ed, so that a later
    import can tell whether it changed.
    """

    byte_size: int | None
    mtime_ns: int | None
    sha256: str | None
    width: int | None
    height: int | None
    mode: str | None
    channels: int | None
    image_format: str | None
    error: IssueReason | None
    detail: str | None


def escape_text(text: str) -> str:
    """``text`` made storable in any database: undecodable bytes and NULs escaped as ``\\xNN``.

    File names that are not valid UTF-8 arrive as surrogate escapes (PEP 383), which PostgreSQL
    cannot store; they become ``\\xff``-style escapes here.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    return text


def init_worker(max_pixels: int) -> None:
    """Pool initializer: the pixel limit, and the warning filters ``probe_file`` sets per call.

    Pillow's other warnings (odd EXIF and the like) say nothing about decodability and would
    only fill the worker's stderr.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    _quiet_pillow()


def _quiet_pillow() -> None:
    warnings.simplefilter("ignore")
    # Over the limit Pillow warns (up to 2×) or raises; both mean "too many pixels" here.
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def probe_chunk(paths: Sequence[str], max_pixels: int) -> list[ProbeResult]:
    """Probes ``paths`` in order: the unit of work of a pool worker set up by ``init_worker``."""
    return [_probe(path, max_pixels) for path in paths]


def failed_probe(
    reason: IssueReason,
    detail: str | None,
    *,
    byte_size: int | None = None,
    mtime_ns: int | None = None,
) -> ProbeResult:
    """A probe that found ``reason``: no image facts, size and mtime where they are known."""
    return ProbeResult(byte_size, mtime_ns, None, None, None, None, None, None, reason, detail)


def probe_file(path: str, *, max_pixels: int) -> ProbeResult:
    """Size, mtime, SHA-256 of the bytes, and a full decode with Pillow of ``path``.

    Never opens anything but a regular file (a FIFO would block, a device could be endless;
    see ``open_regular_file``). Memory stays bounded whatever the file's size: a file up to
    32 MiB is read once; a larger one is decoded from disk and hashed in chunks, and one that
    is not an image is refused from its first bytes. Images wider × higher than ``max_pixels``
    are refused from their header, before decoding.
    Safe to call in any process: no warning escapes and no global setting is changed (so
    Pillow's own process-wide limit, which ``init_worker`` sets in pool workers, still applies
    here as well: a ``max_pixels`` above twice that limit is capped by it).
    """
    with warnings.catch_warnings():
        _quiet_pillow()
        return _probe(path, max_pixels)


def _probe(path: str, max_pixels: int) -> ProbeResult:
    try:
        file = open_regular_file(path)
    except NotARegularFile as exc:
        return failed_probe(IssueReason.NOT_A_FILE, str(exc))
    except FileNotFoundError:
        if Path(path).is_symlink():
            return failed_probe(IssueReason.BROKEN_SYMLINK, "the symlink's target does not exist")
        return failed_probe(IssueReason.MISSING_FILE, "no such file")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return failed_probe(IssueReason.BROKEN_SYMLINK, "symlink loop")
        return _with_stat(path, failed_probe(IssueReason.UNREADABLE, _os_error_text(exc)))
    with file:
        try:
            return _probe_open(file, max_pixels)
        except OSError as exc:
            return _with_stat(path, failed_probe(IssueReason.UNREADABLE, _os_error_text(exc)))


def _probe_open(file: io.BufferedReader, max_pixels: int) -> ProbeResult:
    """Files up to ``_IN_MEMORY_BYTES`` are read once, hashed and decoded from memory; a larger
    one is decoded from the file (Pillow reads its header, and its pixels only when the header
    passes), then hashed in chunks: a file that is no image is refused without reading it all."""
    info = os.fstat(file.fileno())
    mtime_ns = info.st_mtime_ns
    data = _read_whole(file, info.st_size) if info.st_size <= _IN_MEMORY_BYTES else None
    if data is not None:
        if not data:
            return failed_probe(
                IssueReason.EMPTY_FILE, "the file is empty", byte_size=0, mtime_ns=mtime_ns
            )
        digest, size = hashlib.sha256(data).hexdigest(), len(data)
        found = _decode(io.BytesIO(data), max_pixels=max_pixels)
    else:
        file.seek(0)
        found = _decode(file, max_pixels=max_pixels)
        if isinstance(found, ProbeResult):
            return found._replace(byte_size=info.st_size, mtime_ns=mtime_ns)
        digest, size = _sha256_of(file)
    if isinstance(found, ProbeResult):
        return found._replace(byte_size=size, mtime_ns=mtime_ns)
    width, height, mode, channels, image_format = found
    return ProbeResult(
        size, mtime_ns, digest, width, height, mode, channels, image_format, None, None
    )


def _read_whole(file: io.BufferedReader, size: int) -> bytes | None:
    """The file's bytes, or None when it grew past ``_IN_MEMORY_BYTES`` since its stat."""
    # One byte more than the size: a short read means the end (one call for most files).
    data = file.read(size + 1)
    if len(data) <= size:
        return data
    chunks = [data]
    total = len(data)
    while block := file.read(_CHUNK_BYTES):
        chunks.append(block)
        total += len(block)
        if total > _IN_MEMORY_BYTES:
            return None
    return b"".join(chunks)


def _sha256_of(file: io.BufferedReader) -> tuple[str, int]:
    """SHA-256 of the whole file, read from the start in chunks, and the number of bytes."""
    file.seek(0)
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK_BYTES)
    view = memoryview(buffer)
    size = 0
    while count := file.readinto(buffer):
        digest.update(view[:count])
        size += count
    return digest.hexdigest(), size


_ImageFacts = tuple[int, int, str, int, str]


def _decode(source: IO[bytes], *, max_pixels: int) -> _ImageFacts | ProbeResult:
    """Pillow facts of the image in ``source`` after a full decode, or a failure."""
    try:
        image = Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return _too_many_pixels(exc, max_pixels)
    except UnidentifiedImageError:
        return _unidentified(source)
    except Exception as exc:
        return _decode_failure(exc)
    with image:
        image_format = image.format or "unknown"
        if image_format not in ACCEPTED_FORMATS:
            return failed_probe(
                IssueReason.UNSUPPORTED_FORMAT,
                f"{image_format} images are not accepted "
                f"(accepted: {', '.join(sorted(ACCEPTED_FORMATS))})",
            )
        width, height = image.size
        if width * height > max_pixels:
            return failed_probe(
                IssueReason.TOO_MANY_PIXELS,
                f"{width}×{height} = {width * height:,} pixels, over the limit of "
                f"{max_pixels:,} (a possible decompression bomb; not decoded)",
            )
        if width <= 0 or height <= 0:
            return failed_probe(IssueReason.CORRUPT, f"invalid size {width}×{height}")
        try:
            image.load()
        except Exception as exc:
            return _decode_failure(exc)
        return width, height, image.mode, len(image.getbands()), image_format


def _too_many_pixels(exc: Warning | Exception, max_pixels: int) -> ProbeResult:
    declared = re.search(r"\((\d+) pixels\)", str(exc))
    count = f"{int(declared.group(1)):,}" if declared else "too many"
    return failed_probe(
        IssueReason.TOO_MANY_PIXELS,
        f"the header declares {count} pixels, over the limit of {max_pixels:,} "
        "(a possible decompression bomb; not decoded)",
    )


def _unidentified(source: IO[bytes]) -> ProbeResult:
    source.seek(0)
    data = source.read(_SIGNATURE_BYTES)
    for offset, magic, name in _FOREIGN_SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return failed_probe(
                IssueReason.UNSUPPORTED_FORMAT,
                f"{name} is not accepted (accepted: {', '.join(sorted(ACCEPTED_FORMATS))})",
            )
    return failed_probe(IssueReason.NOT_AN_IMAGE, "not an image Pillow can identify")


def _decode_failure(exc: BaseException) -> ProbeResult:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
        return failed_probe(IssueReason.TRUNCATED, text)
    if isinstance(exc, Image.DecompressionBombError):
        return failed_probe(IssueReason.TOO_MANY_PIXELS, text)
    if isinstance(exc, MemoryError):
        return failed_probe(IssueReason.TOO_MANY_PIXELS, "out of memory while decoding")
    return failed_probe(IssueReason.CORRUPT, text)


def _with_stat(path: str, failure: ProbeResult) -> ProbeResult:
    """``failure`` with the file's size and mtime, when a stat can tell them."""
    try:
        info = os.stat(path)  # noqa: PTH116 - the hot path: no Path object per file
    except OSError:
        return failure
    return failure._replace(byte_size=info.st_size, mtime_ns=info.st_mtime_ns)


def _os_error_text(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
