"""The embedding cache: pooled backbone features of every image, computed once per backbone and
kept as memory-mapped float16 on local disk.

Every model of the cleaning loop on the CPU (the junk model, the fold models, each pull-back
round, the final model) is a small head trained on these features, so the backbone's forward
pass, the whole cost, runs once per image and not once per round.

**Key.** An :class:`EmbeddingSpace` names what the numbers mean: the backbone architecture, the
SHA-256 of its weights, the input size, how the image was fitted to it, the normalisation and
whether features are averaged with the mirrored image. Its :attr:`~EmbeddingSpace.key` names a
directory; inside it, rows are addressed by the SHA-256 of the image file's bytes. A re-import,
a new round or a new pipeline over the same files reuses every row; a changed file has a new hash
and is the only one embedded again.

**Files.** ``<root>/<key>/space.json`` (the space), and parts written by whoever embedded
something: ``part-<id>.npy`` (float16 ``[M, D]``) and ``part-<id>.sha256.npy`` (uint8
``[M, 32]``). Both are written to temporary names and renamed into place, the hashes last, so a
part exists only once complete: a killed embedding loses at most the part it was writing, and
several processes may add parts to the same space at once (a row embedded twice is harmless; the
first part found wins). :meth:`EmbeddingStore.compact` merges many small parts into one.

This module imports no torch (:mod:`ml.embed` computes the features).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "EMBEDDING_FORMAT_VERSION",
    "EmbeddingArray",
    "EmbeddingSpace",
    "EmbeddingStore",
    "EmbeddingsMissing",
    "default_embeddings_dir",
    "digests_from_hex",
]

EMBEDDING_FORMAT_VERSION = 1


class EmbeddingsMissing(LookupError):
    """Rows asked for are not in the store; ``missing`` holds their positions in the request."""

    def __init__(self, missing: NDArray[np.int64], total: int) -> None:
        super().__init__(f"{missing.size} of {total} images have no embedding in this space yet")
        self.missing = missing


def default_embeddings_dir(cache_dir: Path | None = None) -> Path:
    """``$THRESHER_EMBEDDINGS_DIR``, else ``embeddings`` under ``cache_dir`` (a worker's cache
    directory), else ``~/.cache/thresher/embeddings``."""
    configured = os.environ.get("THRESHER_EMBEDDINGS_DIR")
    if configured:
        return Path(configured)
    if cache_dir is not None:
        return cache_dir / "embeddings"
    return Path.home() / ".cache" / "thresher" / "embeddings"


@dataclass(frozen=True)
class EmbeddingSpace:
    """What identifies an embedding (see the module docstring).

    Attributes:
        backbone: the timm architecture.
        weights_sha256: SHA-256 of the weights file the backbone was loaded from.
        image_size: input side in pixels.
        fit: how the image became a square (:data:`ml.decode.Fit`).
        mean, std: the input normalisation, in 0..1 units.
        flip: features are the mean of the image's and its mirror image's.
        pool: how the feature map became a vector (timm's global pooling).
    """

    backbone: str
    weights_sha256: str
    image_size: int
    fit: str = "center_crop"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    flip: bool = True
    pool: str = "avg"

    @property
    def key(self) -> str:
        """A short stable name for the space (hex)."""
        payload = json.dumps(
            {"format": EMBEDDING_FORMAT_VERSION, **asdict(self)}, sort_keys=True
        ).encode()
        return hashlib.sha256(payload).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbeddingSpace:
        values = {k: v for k, v in data.items() if k != "key"}
        values["mean"] = tuple(values.get("mean", cls.mean))
        values["std"] = tuple(values.get("std", cls.std))
        return cls(**values)


def digests_from_hex(hashes: Sequence[str]) -> NDArray[np.uint8]:
    """Hex SHA-256 strings → uint8 ``[N, 32]``."""
    joined = b"".join(bytes.fromhex(h) for h in hashes)
    return np.frombuffer(joined, dtype=np.uint8).reshape(len(hashes), 32).copy()


def _as_digests(hashes: Sequence[str] | NDArray[np.uint8]) -> NDArray[np.uint8]:
    if isinstance(hashes, np.ndarray):
        if hashes.dtype != np.uint8 or hashes.ndim != 2 or hashes.shape[1] != 32:
            raise ValueError(f"digests must be uint8 [N, 32], got {hashes.dtype} {hashes.shape}")
        return hashes
    return digests_from_hex(hashes)


class EmbeddingArray(np.ndarray):
    """Features ``[N, D]`` that know their :class:`EmbeddingSpace` (``.space``), so that
    training and prediction can tell them from decoded images and check that a head reads the
    space it was trained on. Slices and row selections keep the space."""

    space: EmbeddingSpace

    def __new__(cls, values: NDArray[Any], space: EmbeddingSpace) -> EmbeddingArray:
        array = np.asarray(values).view(cls)
        array.space = space
        return array

    def __array_finalize__(self, obj: Any) -> None:
        if obj is not None:
            self.space = getattr(obj, "space", None)  # type: ignore[assignment]


class EmbeddingStore:
    """The rows of one embedding space under ``root`` (see the module docstring)."""

    def __init__(self, root: str | Path, space: EmbeddingSpace) -> None:
        self.space = space
        self.directory = Path(root) / space.key
        self._parts: dict[str, NDArray[np.float16]] = {}
        self._index: dict[bytes, tuple[str, int]] = {}
        self.dim: int | None = None

    def _ensure_directory(self) -> None:
        if self.directory.is_dir():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = self.directory / "space.json"
        if not meta.is_file():
            _write_atomically(meta, json.dumps(self.space.to_dict(), indent=1).encode())

    def refresh(self) -> None:
        """Pick up parts written since the last look (by this or another process)."""
        if not self.directory.is_dir():
            return
        for digests_path in sorted(self.directory.glob("part-*.sha256.npy")):
            name = digests_path.name.removesuffix(".sha256.npy")
            if name in self._parts:
                continue
            features_path = self.directory / f"{name}.npy"
            if not features_path.is_file():
                continue  # being compacted away
            features = np.load(features_path, mmap_mode="r")
            digests = np.load(digests_path)
            if features.ndim != 2 or digests.shape != (features.shape[0], 32):
                continue  # not a part this version wrote; ignored
            if self.dim is None:
                self.dim = int(features.shape[1])
            elif features.shape[1] != self.dim:
                raise ValueError(f"{features_path} has width {features.shape[1]}, not {self.dim}")
            self._parts[name] = features
            for row, digest in enumerate(digests):
                self._index.setdefault(digest.tobytes(), (name, row))

    def __len__(self) -> int:
        self.refresh()
        return len(self._index)

    def missing(self, hashes: Sequence[str] | NDArray[np.uint8]) -> NDArray[np.int64]:
        """Positions in ``hashes`` with no row yet, ascending."""
        self.refresh()
        digests = _as_digests(hashes)
        absent = [i for i, d in enumerate(digests) if d.tobytes() not in self._index]
        return np.asarray(absent, dtype=np.int64)

    def gather(self, hashes: Sequence[str] | NDArray[np.uint8]) -> EmbeddingArray:
        """The rows of ``hashes``, float16 ``[N, D]`` with their space (a copy, in request
        order).

        Raises:
            EmbeddingsMissing: some are not embedded yet (``missing`` says which).
        """
        digests = _as_digests(hashes)
        absent = self.missing(digests)
        if absent.size:
            raise EmbeddingsMissing(absent, int(digests.shape[0]))
        if self.dim is None:
            return EmbeddingArray(np.zeros((0, 0), dtype=np.float16), self.space)
        out = np.empty((digests.shape[0], self.dim), dtype=np.float16)
        by_part: dict[str, tuple[list[int], list[int]]] = {}
        for position, digest in enumerate(digests):
            name, row = self._index[digest.tobytes()]
            targets, rows = by_part.setdefault(name, ([], []))
            targets.append(position)
            rows.append(row)
        for name, (targets, rows) in by_part.items():
            order = np.argsort(rows, kind="stable")  # sequential reads of the memory map
            source_rows = np.asarray(rows)[order]
            out[np.asarray(targets)[order]] = self._parts[name][source_rows]
        return EmbeddingArray(out, self.space)

    def put(self, hashes: Sequence[str] | NDArray[np.uint8], features: NDArray[Any]) -> Path:
        """Add rows as one new part; returns its path.

        Args:
            hashes: ``[M]`` image SHA-256s (hex or raw ``[M, 32]``).
            features: ``[M, D]``, stored as float16.
        """
        digests = _as_digests(hashes)
        values = np.asarray(features)
        if values.ndim != 2 or values.shape[0] != digests.shape[0]:
            raise ValueError(f"features {values.shape} do not match {digests.shape[0]} hashes")
        if not np.isfinite(values).all():
            raise ValueError("features must be finite")
        self._ensure_directory()
        name = f"part-{uuid.uuid4().hex}"
        features_path = self.directory / f"{name}.npy"
        _save_atomically(features_path, values.astype(np.float16))
        _save_atomically(self.directory / f"{name}.sha256.npy", digests)
        return features_path

    def compact(self, *, min_parts: int = 16) -> bool:
        """Merge every part into one when there are at least ``min_parts``; returns whether it
        did. Readers that opened the old parts keep their memory maps (POSIX unlink)."""
        self.refresh()
        if len(self._parts) < min_parts:
            return False
        digests = np.stack([np.frombuffer(d, dtype=np.uint8) for d in self._index])
        merged = self.gather(digests)
        old = list(self._parts)
        self.put(digests, merged)
        for name in old:
            (self.directory / f"{name}.sha256.npy").unlink(missing_ok=True)
            (self.directory / f"{name}.npy").unlink(missing_ok=True)
        self._parts.clear()
        self._index.clear()
        self.refresh()
        return True


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_bytes(data)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def _save_atomically(path: Path, array: NDArray[Any]) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("wb") as handle:
            np.save(handle, array, allow_pickle=False)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
