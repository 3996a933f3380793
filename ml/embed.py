"""Computing embeddings: a pretrained backbone's pooled features for every image that the
embedding cache (:mod:`ml.embeddings`) does not hold yet.

Images are decoded and fitted to the space's size in a pool of processes while the backbone works
on the previous chunk (on a GPU, the caller passes the decoded cache instead, so nothing is
decoded twice). Each chunk is stored as a part as soon as it is computed, so an embedding that is
killed resumes where it stopped: the rows already stored are not computed again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from ml.backbones import BACKBONES
from ml.cache import CacheBuildError, default_workers, process_pool
from ml.decode import Fit, ImageDecodeError, load_image
from ml.embeddings import (
    EmbeddingArray,
    EmbeddingSpace,
    EmbeddingStore,
    default_embeddings_dir,
    digests_from_hex,
)
from ml.logging import get_logger
from ml.models import create_model, data_config, resolve_weights
from ml.predict import Normaliser, autocast, resolve_device
from ml.recipes import ModelConfig, Recipe

__all__ = [
    "EmbedProgress",
    "EmbedStats",
    "Embedder",
    "embed_missing",
    "embeddings_for",
    "recipe_embeddings",
    "space_embeddings",
    "weights_sha256",
]

log = get_logger(__name__)

#: Images per stored part (and per progress report).
CHUNK_ROWS = 512

#: Called after every chunk with (done, total); returning True stops after that chunk.
EmbedProgress = Callable[[int, int], bool]

_HASHES: dict[tuple[str, int, int], str] = {}


def weights_sha256(path: Path) -> str:
    """SHA-256 of a weights file, remembered per (path, size, mtime) in this process."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        _HASHES[memo] = digest.hexdigest()
    return _HASHES[memo]


def _weights_identity(model: ModelConfig, weights: Path) -> str:
    """The SHA-256 that names the weights: the registry's (of the package's file) for a
    registry backbone, else the file's own."""
    architecture = model.name.split(".", 1)[0]
    if model.weights_file is None and architecture in BACKBONES:
        return BACKBONES[architecture].sha256
    return weights_sha256(weights)


@dataclass(frozen=True)
class EmbedStats:
    """What :func:`embed_missing` did: rows ``computed`` now, rows ``reused`` from the store,
    and the throughput of the computed ones."""

    computed: int
    reused: int
    seconds: float
    stopped: bool = False

    @property
    def images_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0


class Embedder:
    """A backbone in eval mode that turns uint8 ``[B, S, S, 3]`` batches into pooled features
    ``[B, D]`` (averaged with the mirror image when the space says so)."""

    def __init__(
        self,
        model: ModelConfig,
        *,
        image_size: int,
        flip: bool,
        device: str | torch.device | None = None,
    ) -> None:
        """Load the backbone of ``model`` (classifier removed).

        Raises:
            ValueError: the config asks for no pretrained weights (random features mean
                nothing).
            WeightsMissing: the weights are not on this machine.
        """
        weights = resolve_weights(
            model.name, pretrained=model.pretrained, weights_file=model.weights_file
        )
        if weights is None:
            raise ValueError(
                f"embeddings need pretrained weights: set model.pretrained: true or "
                f"model.weights_file for {model.name}"
            )
        self.device = resolve_device(device)
        self.model: nn.Module = create_model(
            model.name, num_classes=0, weights_file=weights, **model.kwargs
        )
        self.model.eval().to(self.device)
        self.model.to(memory_format=torch.channels_last)
        normalisation = data_config(self.model)
        self.space = EmbeddingSpace(
            backbone=model.name,
            weights_sha256=_weights_identity(model, weights),
            image_size=image_size,
            mean=cast(tuple[float, float, float], normalisation["mean"]),
            std=cast(tuple[float, float, float], normalisation["std"]),
            flip=flip,
        )
        self.normalise = Normaliser(self.space.mean, self.space.std, self.device)
        # Small batches on the CPU: large ones only add page faults for the activations.
        self.batch_size = 256 if self.device.type == "cuda" else 32

    @torch.inference_mode()
    def __call__(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Features of uint8 ``[N, S, S, 3]`` images, float32 ``[N, D]``."""
        parts = [
            self._batch(images[start : start + self.batch_size])
            for start in range(0, images.shape[0], self.batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def _batch(self, batch: NDArray[np.uint8]) -> NDArray[np.float32]:
        pixels = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        x = self.normalise(pixels.permute(0, 3, 1, 2).float())
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device):
            features = self.model(x).float()
            if self.space.flip:
                features = (features + self.model(torch.flip(x, dims=[3])).float()) / 2
        result: NDArray[np.float32] = features.cpu().numpy()
        return result


def _decode_rows(
    paths: list[str], size: int, fit: str
) -> tuple[NDArray[np.uint8], list[tuple[int, str, str]]]:
    images = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    failures: list[tuple[int, str, str]] = []
    for row, path in enumerate(paths):
        try:
            images[row] = load_image(path, size=size, fit=cast(Fit, fit))
        except ImageDecodeError as error:
            failures.append((row, path, error.reason or str(error)))
    return images, failures


def _chunks_of_pixels(
    paths: Sequence[str],
    rows: NDArray[np.int64],
    space: EmbeddingSpace,
    decoded: NDArray[np.uint8] | None,
    workers: int,
) -> Iterator[tuple[NDArray[np.int64], NDArray[np.uint8]]]:
    """``(rows, pixels)`` per chunk of ``rows``; the next chunk is decoded while the caller
    embeds the current one."""
    chunks = [rows[i : i + CHUNK_ROWS] for i in range(0, rows.size, CHUNK_ROWS)]
    if decoded is not None:
        for chunk in chunks:
            yield chunk, np.asarray(decoded[chunk])
        return
    if workers == 0:
        for chunk in chunks:
            pixels, failures = _decode_rows([paths[i] for i in chunk], space.image_size, space.fit)
            _raise_failures(failures, chunk)
            yield chunk, pixels
        return
    with process_pool(workers) as pool:
        pending: dict[int, Future[tuple[NDArray[np.uint8], list[tuple[int, str, str]]]]] = {}
        submitted = 0
        for index, chunk in enumerate(chunks):
            # Keep the pool one chunk per process ahead of the backbone.
            while submitted < len(chunks) and submitted <= index + workers:
                part = [paths[i] for i in chunks[submitted]]
                pending[submitted] = pool.submit(_decode_rows, part, space.image_size, space.fit)
                submitted += 1
            pixels, failures = pending.pop(index).result()
            _raise_failures(failures, chunk)
            yield chunk, pixels


def _raise_failures(failures: list[tuple[int, str, str]], chunk: NDArray[np.int64]) -> None:
    if failures:
        raise CacheBuildError([(int(chunk[row]), path, reason) for row, path, reason in failures])


def _check_inputs(
    store: EmbeddingStore,
    embedder: Embedder,
    paths: Sequence[str | Path],
    hashes: Sequence[str],
    decoded: NDArray[np.uint8] | None,
) -> None:
    if len(paths) != len(hashes):
        raise ValueError(f"{len(hashes)} hashes for {len(paths)} paths")
    if store.space != embedder.space:
        raise ValueError("the store and the embedder are of different embedding spaces")
    size = store.space.image_size
    if decoded is not None and decoded.shape[1:] != (size, size, 3):
        raise ValueError(f"decoded images {decoded.shape} are not at the space's size")


def embed_missing(
    store: EmbeddingStore,
    embedder: Embedder,
    paths: Sequence[str | Path],
    hashes: Sequence[str],
    *,
    decoded: NDArray[np.uint8] | None = None,
    workers: int | None = None,
    progress: EmbedProgress | None = None,
) -> EmbedStats:
    """Embed the images whose hashes the store lacks, storing each chunk as it is done.

    Args:
        paths: image files, row ``i`` has content hash ``hashes[i]``.
        decoded: the images already decoded at the space's size, uint8 ``[N, S, S, 3]`` (the
            decoded cache, on a GPU); otherwise they are decoded here by ``workers`` processes
            (default: one per CPU, none for small sets).
        progress: ``(done, total)`` after each chunk, over the images that were missing; True
            stops after the chunk (:attr:`EmbedStats.stopped`).

    Raises:
        CacheBuildError: an image cannot be decoded (every failure of its chunk is listed).
    """
    _check_inputs(store, embedder, paths, hashes, decoded)
    names = [str(p) for p in paths]
    digests = digests_from_hex(hashes)
    missing = store.missing(digests)
    # The same file listed twice is embedded once.
    _, first = np.unique(digests[missing], axis=0, return_index=True)
    todo = missing[np.sort(first)]
    reused = len(names) - int(missing.size)
    started = time.perf_counter()
    if todo.size == 0:
        return EmbedStats(computed=0, reused=reused, seconds=0.0)
    workers = default_workers(int(todo.size)) if workers is None else workers
    done = 0
    for chunk, pixels in _chunks_of_pixels(names, todo, store.space, decoded, workers):
        store.put(digests[chunk], embedder(pixels))
        done += int(chunk.size)
        if progress is not None and progress(done, int(todo.size)) and done < todo.size:
            seconds = time.perf_counter() - started
            log.info("ml.embed.stopped", done=done, of=int(todo.size))
            return EmbedStats(computed=done, reused=reused, seconds=seconds, stopped=True)
    seconds = time.perf_counter() - started
    log.info(
        "ml.embed.done",
        space=store.space.key[:12],
        computed=done,
        reused=reused,
        img_per_s=round(done / max(seconds, 1e-9), 1),
    )
    return EmbedStats(computed=done, reused=reused, seconds=seconds)


def embeddings_for(
    model: ModelConfig,
    paths: Sequence[str | Path],
    hashes: Sequence[str],
    *,
    image_size: int,
    flip: bool,
    root: str | Path | None = None,
    device: str | torch.device | None = None,
    decoded: NDArray[np.uint8] | None = None,
    progress: EmbedProgress | None = None,
) -> EmbeddingArray:
    """The embeddings of ``paths`` (row ``i`` = ``paths[i]``), computing the missing ones.

    Args:
        model: the backbone (pretrained weights required).
        root: the embedding cache (default :func:`~ml.embeddings.default_embeddings_dir`).
        Others: as for :func:`embed_missing`.

    Raises:
        EmbeddingsMissing: ``progress`` asked to stop before every row was embedded.
        WeightsMissing: the backbone's weights are not on this machine.
    """
    embedder = Embedder(model, image_size=image_size, flip=flip, device=device)
    store = EmbeddingStore(root or default_embeddings_dir(), embedder.space)
    embed_missing(store, embedder, paths, hashes, decoded=decoded, progress=progress)
    return store.gather(hashes)


def recipe_embeddings(
    recipe: Recipe,
    paths: Sequence[str | Path],
    hashes: Sequence[str],
    **options: Any,
) -> EmbeddingArray:
    """:func:`embeddings_for` the backbone, size and flip of a recipe with a head."""
    if recipe.head is None:
        raise ValueError(f"recipe {recipe.name} trains the whole network, not a head")
    return embeddings_for(
        recipe.model,
        paths,
        hashes,
        image_size=recipe.image_size,
        flip=recipe.tta_flip,
        **options,
    )


def space_embeddings(
    space: EmbeddingSpace,
    paths: Sequence[str | Path],
    hashes: Sequence[str],
    *,
    root: str | Path | None = None,
    device: str | torch.device | None = None,
) -> EmbeddingArray:
    """The embeddings of ``paths`` in ``space`` (what a trained head reads): from the cache, and
    the missing rows computed with the space's backbone when its weights are here.

    Raises:
        ValueError: rows are missing and this machine's weights for the backbone are not the
            ones the space was made with.
    """
    store = EmbeddingStore(root or default_embeddings_dir(), space)
    if store.missing(digests_from_hex(hashes)).size:
        model = ModelConfig(name=space.backbone, pretrained=True)
        embedder = Embedder(model, image_size=space.image_size, flip=space.flip, device=device)
        if embedder.space != space:
            raise ValueError(
                f"the model reads {space.backbone} embeddings made with weights "
                f"{space.weights_sha256[:12]}…, but this machine's weights are "
                f"{embedder.space.weights_sha256[:12]}…: embed with the same weights first"
            )
        embed_missing(store, embedder, paths, hashes)
    return store.gather(hashes)
