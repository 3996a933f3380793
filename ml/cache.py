"""The decoded cache: every image decoded once, fitted to the working size, kept as a
memory-mapped uint8 array ``[N, size, size, 3]`` on local disk.

The cleaning loop trains and predicts on the same images again and again (every epoch, fold and
pull-back round); decoding JPEGs each time is what keeps a GPU waiting, above all in prediction.
Row ``i`` of the array is ``paths[i]``.

**Key.** A cache is identified by the SHA-256 of the files' bytes (in order), the size, the fit
and the Pillow version (a different decoder may give different pixels), so a renamed copy of the
same images reuses it and a changed file does not. Pass the hashes when they are known (the
importer computes them); otherwise they are computed, in parallel.

**Files.** ``<key>.npy`` (a standard ``.npy`` file: ``np.load(path, mmap_mode="r")`` reads it)
and ``<key>.json`` (metadata, including one SHA-256 per chunk of rows for :meth:`verify`).

**Concurrency.** Builders write to uniquely named temporary files and rename them into place
(atomic on POSIX), array first, metadata last; a cache counts as present only when its metadata
exists and matches the array. Two processes building the same cache at once both succeed and
leave one valid cache (identical bytes); a killed build leaves only a temporary file.

Decoding runs in a pool of forked processes (spawned where the platform has no fork); this module
imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast, get_args

import numpy as np
import PIL

from ml.decode import Fit, ImageDecodeError, load_image
from ml.logging import get_logger

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CacheBuildError",
    "CacheCorruptError",
    "CacheMeta",
    "DecodedCache",
    "cache_key",
    "content_hash",
    "content_hashes",
    "decoded_cache",
    "default_workers",
    "open_decoded_cache",
    "process_pool",
]

log = get_logger(__name__)

CACHE_FORMAT_VERSION = 1
_HASH_BLOCK = 1 << 20


class CacheBuildError(Exception):
    """Some images could not be read or decoded; ``failures`` lists ``(row, path, reason)``."""

    def __init__(self, failures: list[tuple[int, str, str]]) -> None:
        shown = "; ".join(f"{path}: {reason}" for _, path, reason in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} image(s) could not be decoded: {shown}{more}")
        self.failures = failures


class CacheCorruptError(Exception):
    """A cache file does not match its metadata (wrong shape, bad chunk checksum)."""


@dataclass(frozen=True)
class CacheMeta:
    """What ``<key>.json`` holds.

    Attributes:
        chunk_sha256: SHA-256 of the raw bytes of rows ``[i * chunk_rows, (i + 1) * chunk_rows)``.
    """

    version: int
    key: str
    size: int
    fit: str
    count: int
    pillow: str
    chunk_rows: int
    chunk_sha256: list[str]
    created_at: str


class DecodedCache:
    """An opened cache: ``images`` is a read-only memory map, uint8 ``[N, size, size, 3]``.

    ``built`` tells whether this process built it (``False``: an existing cache was reused).
    """

    def __init__(self, path: Path, meta: CacheMeta, images: np.memmap, *, built: bool) -> None:
        self.path = path
        self.meta = meta
        self.images = images
        self.built = built

    def __len__(self) -> int:
        return self.meta.count

    @property
    def size(self) -> int:
        return self.meta.size

    def verify(self) -> None:
        """Re-hash every chunk of rows against the metadata (reads the whole array).

        Raises:
            CacheCorruptError: a chunk's bytes changed.
        """
        for chunk, expected in enumerate(self.meta.chunk_sha256):
            start = chunk * self.meta.chunk_rows
            rows = self.images[start : start + self.meta.chunk_rows]
            if hashlib.sha256(np.ascontiguousarray(rows).data).hexdigest() != expected:
                raise CacheCorruptError(
                    f"{self.path}: rows {start}..{start + rows.shape[0] - 1} do not match their "
                    "checksum; delete the file to rebuild it"
                )


def content_hash(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _hash_chunk(start: int, paths: list[str]) -> list[tuple[int, str | None, str]]:
    results: list[tuple[int, str | None, str]] = []
    for offset, path in enumerate(paths):
        try:
            results.append((start + offset, content_hash(path), ""))
        except OSError as error:
            results.append((start + offset, None, f"{type(error).__name__}: {error}"))
    return results


def _decode_chunk(
    array_path: str, count: int, size: int, fit: str, start: int, paths: list[str]
) -> tuple[int, str, list[tuple[int, str, str]]]:
    """Decode ``paths`` into rows ``start…`` of the temporary array; returns the chunk's digest
    and the failures ``(row, path, reason)``."""
    images = np.lib.format.open_memmap(array_path, mode="r+")
    if images.shape != (count, size, size, 3):
        raise CacheCorruptError(f"{array_path}: unexpected shape {images.shape}")
    failures: list[tuple[int, str, str]] = []
    for offset, path in enumerate(paths):
        try:
            images[start + offset] = load_image(path, size=size, fit=cast(Fit, fit))
        except ImageDecodeError as error:
            images[start + offset] = 0
            failures.append((start + offset, path, error.reason or str(error)))
    rows = images[start : start + len(paths)]
    digest = hashlib.sha256(np.ascontiguousarray(rows).data).hexdigest()
    images.flush()
    del images
    return start, digest, failures


def default_workers(count: int) -> int:
    """Decoding processes for ``count`` images: none (decode in this process) below 512, else
    one per CPU, at most 16."""
    if count < 512:
        return 0
    return max(1, min(os.cpu_count() or 1, 16))


def _chunks(paths: Sequence[str], rows: int) -> list[tuple[int, list[str]]]:
    return [(start, list(paths[start : start + rows])) for start in range(0, len(paths), rows)]


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes for Pillow and numpy work (forked where possible)."""
    # fork where there is one (as torch's DataLoader does): a spawned worker would re-import the
    # caller's __main__ module, torch and all, before decoding its first image. The workers
    # run only Pillow and numpy code, none of the parent's threads' libraries.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))


def content_hashes(paths: Sequence[str | Path], *, workers: int | None = None) -> list[str]:
    """SHA-256 of every file, in order, computed by ``workers`` processes (0: in this one).

    Raises:
        CacheBuildError: a file cannot be read (every such file is listed).
    """
    names = [str(p) for p in paths]
    workers = default_workers(len(names)) if workers is None else workers
    chunks = _chunks(names, 1024)
    if workers == 0:
        results = [r for start, chunk in chunks for r in _hash_chunk(start, chunk)]
    else:
        with process_pool(workers) as pool:
            futures = [pool.submit(_hash_chunk, start, chunk) for start, chunk in chunks]
            results = [r for future in futures for r in future.result()]
    failures = [(row, names[row], reason) for row, digest, reason in results if digest is None]
    if failures:
        raise CacheBuildError(failures)
    return [cast(str, digest) for _, digest, _ in results]


def cache_key(hashes: Sequence[str], *, size: int, fit: Fit) -> str:
    """The cache's name: SHA-256 over the format version, Pillow version, size, fit and the
    files' content hashes in order."""
    digest = hashlib.sha256(
        f"thresher-decoded-cache v{CACHE_FORMAT_VERSION} pillow {PIL.__version__} "
        f"size {size} fit {fit}\n".encode()
    )
    for value in hashes:
        digest.update(value.encode("ascii"))
        digest.update(b"\n")
    return digest.hexdigest()


def _paths_for(cache_dir: Path, key: str) -> tuple[Path, Path]:
    return cache_dir / f"{key}.npy", cache_dir / f"{key}.json"


def open_decoded_cache(cache_dir: str | Path, key: str) -> DecodedCache | None:
    """Open the cache ``key`` if it exists and its array matches its metadata, else ``None``
    (a mismatch is logged; the next build replaces the files)."""
    array_path, meta_path = _paths_for(Path(cache_dir), key)
    if not meta_path.is_file() or not array_path.is_file():
        return None
    try:
        meta = CacheMeta(**json.loads(meta_path.read_text(encoding="utf-8")))
        images = np.load(array_path, mmap_mode="r")
    except (OSError, ValueError, TypeError) as error:
        log.warning("ml.cache.invalid", path=array_path, error=error)
        return None
    expected = (meta.count, meta.size, meta.size, 3)
    if (
        meta.version != CACHE_FORMAT_VERSION
        or meta.key != key
        or images.shape != expected
        or images.dtype != np.uint8
        or len(meta.chunk_sha256) != -(-meta.count // meta.chunk_rows)
    ):
        log.warning("ml.cache.invalid", path=array_path, shape=images.shape, meta=meta)
        return None
    return DecodedCache(array_path, meta, images, built=False)


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    temporary.replace(path)


def decoded_cache(
    paths: Sequence[str | Path],
    *,
    size: int,
    cache_dir: str | Path,
    fit: Fit = "center_crop",
    hashes: Sequence[str] | None = None,
    workers: int | None = None,
    chunk_rows: int = 1024,
) -> DecodedCache:
    """Open the decoded cache of ``paths`` at ``size``, building it first if needed.

    Args:
        paths: image files; row ``i`` of the cache is ``paths[i]``.
        size: side of the square each image is fitted to (see :data:`ml.decode.Fit`).
        cache_dir: where caches live (created if missing); use local disk.
        hashes: SHA-256 of each file when already known (skips hashing).
        workers: decoding processes; ``0`` decodes in this process; default: up to 16 (one per
            CPU), or 0 for fewer than 512 images.
        chunk_rows: rows per work item and per checksum.

    Raises:
        CacheBuildError: some files cannot be read or decoded; every one is listed with its
            reason, and no cache is left behind.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if fit not in get_args(Fit):
        raise ValueError(f"fit must be one of {get_args(Fit)}, got {fit!r}")
    if not paths:
        raise ValueError("no images to cache")
    names = [str(p) for p in paths]
    workers = default_workers(len(names)) if workers is None else workers
    if hashes is None:
        hashes = content_hashes(names, workers=workers)
    elif len(hashes) != len(names):
        raise ValueError(f"{len(hashes)} hashes for {len(names)} paths")
    key = cache_key(hashes, size=size, fit=fit)
    directory = Path(cache_dir)
    existing = open_decoded_cache(directory, key)
    if existing is not None:
        log.info("ml.cache.reused", key=key[:12], count=existing.meta.count)
        return existing
    _build(directory, key, names, size=size, fit=fit, workers=workers, chunk_rows=chunk_rows)
    opened = open_decoded_cache(directory, key)
    if opened is None:
        array_path, _ = _paths_for(directory, key)
        raise CacheCorruptError(f"{array_path}: the cache just built does not validate")
    return DecodedCache(opened.path, opened.meta, opened.images, built=True)


def _build(
    directory: Path,
    key: str,
    names: list[str],
    *,
    size: int,
    fit: Fit,
    workers: int,
    chunk_rows: int,
) -> None:
    """Decode ``names`` into a temporary array, then rename it and its metadata into place
    (array first, metadata last); a failed build leaves nothing behind."""
    directory.mkdir(parents=True, exist_ok=True)
    array_path, meta_path = _paths_for(directory, key)
    temporary = directory / f".{key}.{uuid.uuid4().hex}.npy.tmp"
    count = len(names)
    try:
        np.lib.format.open_memmap(
            temporary, mode="w+", dtype=np.uint8, shape=(count, size, size, 3)
        ).flush()
        meta = CacheMeta(
            version=CACHE_FORMAT_VERSION,
            key=key,
            size=size,
            fit=fit,
            count=count,
            pillow=PIL.__version__,
            chunk_rows=chunk_rows,
            chunk_sha256=_decode_into(temporary, names, size, fit, workers, chunk_rows),
            created_at=datetime.now(UTC).isoformat(),
        )
        temporary.replace(array_path)
        _write_json_atomically(meta_path, asdict(meta))
    finally:
        temporary.unlink(missing_ok=True)
    log.info("ml.cache.built", key=key[:12], count=count, size=size)


def _decode_into(
    array_path: Path, names: list[str], size: int, fit: Fit, workers: int, chunk_rows: int
) -> list[str]:
    """Decode ``names`` into the rows of the array file, ``chunk_rows`` at a time by
    ``workers`` processes; returns each chunk's SHA-256, in order.

    Raises:
        CacheBuildError: some images cannot be decoded (all of them listed).
    """
    count = len(names)
    chunks = _chunks(names, chunk_rows)
    args = [(str(array_path), count, size, fit, start, chunk) for start, chunk in chunks]
    if workers == 0:
        results = [_decode_chunk(*a) for a in args]
    else:
        with process_pool(workers) as pool:
            results = [f.result() for f in [pool.submit(_decode_chunk, *a) for a in args]]
    failures = sorted(f for _, _, chunk_failures in results for f in chunk_failures)
    if failures:
        raise CacheBuildError(failures)
    return [digest for _, digest, _ in sorted(results)]
