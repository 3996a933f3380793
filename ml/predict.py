"""Batched prediction over a uint8 image array (usually the decoded cache).

The fast path the GPU needs: contiguous rows are read from the memory map by a background thread
(into pinned memory on CUDA) while the device works on the previous batch; pixels travel as uint8
(4x fewer bytes than float) and are normalised on the device. Rows are NHWC, so the tensor
reaches the model already in the channels-last layout.

A head on embeddings (:class:`~ml.heads.TrainedHead`) predicts the same way from the cached
features of the same rows (an :class:`~ml.embeddings.EmbeddingArray` in the head's space) instead
of pixels.

Outputs per sample: the top-k class ids and probabilities, the probability of the given label,
and, on request, the full probability matrix (cleanlab needs it; for thousands of classes and
millions of images it is large, so it is off by default).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor

from ml.checkpoint import TrainedModel
from ml.embeddings import EmbeddingArray
from ml.heads import TrainedHead, head_logits

__all__ = [
    "Normaliser",
    "Predictions",
    "autocast",
    "iter_batches",
    "predict",
    "predict_logits",
    "predictions_from_probs",
    "resolve_device",
]


@dataclass(frozen=True)
class Predictions:
    """Per-sample predictions, row ``i`` for the ``i``-th predicted sample.

    Attributes:
        topk_ids: ``[N, k]`` int64 class ids, most probable first.
        topk_probs: ``[N, k]`` float32 their probabilities.
        given_prob: ``[N]`` float32 probability of each sample's given label (higher = the model
            agrees more with the label); NaN where the label is unknown (< 0); ``None`` when no
            labels were given.
        probs: ``[N, C]`` float32 full probabilities, when asked for.
    """

    topk_ids: NDArray[np.int64]
    topk_probs: NDArray[np.float32]
    given_prob: NDArray[np.float32] | None
    probs: NDArray[np.float32] | None

    def __len__(self) -> int:
        return int(self.topk_ids.shape[0])


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` → CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def iter_batches(
    images: NDArray[np.uint8],
    rows: NDArray[np.int64],
    batch_size: int,
    *,
    pin_memory: bool = False,
) -> Iterator[Tensor]:
    """uint8 batches ``[B, H, W, 3]`` of ``images[rows]``, in order, the next one read by a
    background thread while the caller works on the current one."""

    def read(start: int) -> Tensor:
        chunk = rows[start : start + batch_size]
        # One copy, straight from the memory map into (pinned) memory that the batch owns.
        shape = (chunk.shape[0], *images.shape[1:])
        batch = torch.empty(shape, dtype=torch.uint8, pin_memory=pin_memory)
        target = batch.numpy()
        first, last = int(chunk[0]), int(chunk[-1])
        if last - first == chunk.shape[0] - 1 and bool(np.all(np.diff(chunk) == 1)):
            np.copyto(target, images[first : last + 1])
        else:
            order = np.argsort(chunk, kind="stable")  # sorted reads: sequential on disk
            target[order] = images[chunk[order]]
        return batch

    starts = list(range(0, rows.shape[0], batch_size))
    if not starts:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, starts[0])
        for following in [*starts[1:], None]:
            batch = pending.result()
            if following is not None:
                pending = pool.submit(read, following)
            yield batch


class Normaliser:
    """Float pixels in 0..255, ``[B, 3, H, W]`` → ``(x / 255 - mean) / std``, with the
    statistics held on ``device`` once (not rebuilt for every batch)."""

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], device: torch.device | str
    ) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0

    def __call__(self, raw: Tensor) -> Tensor:
        return (raw - self.mean) / self.std


def _to_model_input(
    batch: Tensor,
    trained: TrainedModel,
    normaliser: Normaliser,
    device: torch.device,
    channels_last: bool,
) -> Tensor:
    """uint8 NHWC batch → normalised float ``[B, 3, S, S]`` on ``device``."""
    x = normaliser(batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float())
    if x.shape[-1] != trained.image_size or x.shape[-2] != trained.image_size:
        x = F.interpolate(
            x, size=(trained.image_size, trained.image_size), mode="bilinear", antialias=True
        )
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def autocast(device: torch.device) -> torch.autocast | nullcontext[None]:
    """bfloat16 autocast on CUDA; nothing (float32) elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def _logit_batches(
    trained: TrainedModel | TrainedHead,
    images: NDArray[Any],
    rows: NDArray[np.int64],
    *,
    batch_size: int,
    device: torch.device,
    channels_last: bool,
) -> Iterator[Tensor]:
    if isinstance(trained, TrainedHead):
        for start in range(0, rows.shape[0], batch_size):
            yield head_logits(
                trained, images, indices=rows[start : start + batch_size], device=device
            )
        return
    model = trained.model
    was_training = model.training
    model.eval()
    normaliser = Normaliser(trained.mean, trained.std, device)
    try:
        for batch in iter_batches(images, rows, batch_size, pin_memory=device.type == "cuda"):
            x = _to_model_input(batch, trained, normaliser, device, channels_last)
            with autocast(device):
                logits = model(x).float()
                if trained.tta_flip:
                    logits = (logits + model(x.flip(-1)).float()) / 2
            yield trained.adjust_logits(logits)
    finally:
        model.train(was_training)


def _check_inputs(trained: TrainedModel | TrainedHead, images: NDArray[Any]) -> None:
    if isinstance(trained, TrainedHead):
        if not isinstance(images, EmbeddingArray) or images.ndim != 2:
            raise ValueError(
                "a head on embeddings predicts from their features: give an EmbeddingArray "
                f"[N, D], not {type(images).__name__} {images.shape}"
            )
        if images.space != trained.space:
            raise ValueError(
                f"the features are of embedding space {images.space.key}, the head reads "
                f"{trained.space.key} ({trained.space.backbone} at {trained.space.image_size} px)"
            )
        return
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}")


def _rows(
    trained: TrainedModel | TrainedHead,
    images: NDArray[Any],
    indices: Sequence[int] | NDArray[np.integer] | None,
) -> NDArray[np.int64]:
    _check_inputs(trained, images)
    if indices is None:
        return np.arange(images.shape[0], dtype=np.int64)
    rows = np.asarray(indices, dtype=np.int64)
    if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= images.shape[0])):
        raise ValueError(f"indices must be a [M] vector of rows in [0, {images.shape[0]})")
    return rows


def predict_logits(
    trained: TrainedModel | TrainedHead,
    images: NDArray[Any],
    *,
    indices: Sequence[int] | NDArray[np.integer] | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    channels_last: bool = True,
) -> Tensor:
    """Adjusted logits (see :meth:`TrainedModel.adjust_logits`) of ``images[indices]``,
    float32 ``[M, C]`` on the CPU."""
    rows = _rows(trained, images, indices)
    target = resolve_device(device)
    trained.model.to(target)
    chunks = [
        logits.cpu()
        for logits in _logit_batches(
            trained, images, rows, batch_size=batch_size, device=target, channels_last=channels_last
        )
    ]
    if not chunks:
        return torch.empty(0, trained.num_classes)
    return torch.cat(chunks)


def predictions_from_probs(
    probs: NDArray[np.floating] | Tensor,
    labels: NDArray[np.integer] | Sequence[int] | None,
    *,
    top_k: int,
    keep_probs: bool = True,
) -> Predictions:
    """:class:`Predictions` from a probability matrix ``[N, C]`` and optional labels ``[N]``."""
    matrix = torch.as_tensor(np.asarray(probs, dtype=np.float32))
    if matrix.ndim != 2:
        raise ValueError(f"expected probabilities [N, C], got shape {tuple(matrix.shape)}")
    k = min(top_k, matrix.shape[1])
    values, ids = torch.topk(matrix, k, dim=1)
    given = None
    if labels is not None:
        label_array = np.asarray(labels, dtype=np.int64)
        if label_array.shape != (matrix.shape[0],):
            raise ValueError(f"labels {label_array.shape} do not match {matrix.shape[0]} rows")
        known = label_array >= 0
        given = np.full(label_array.shape, np.nan, dtype=np.float32)
        given[known] = matrix.numpy()[np.flatnonzero(known), label_array[known]]
    return Predictions(
        topk_ids=ids.numpy().astype(np.int64),
        topk_probs=values.numpy().astype(np.float32),
        given_prob=given,
        probs=matrix.numpy() if keep_probs else None,
    )


def predict(
    trained: TrainedModel | TrainedHead,
    images: NDArray[Any],
    *,
    indices: Sequence[int] | NDArray[np.integer] | None = None,
    labels: Sequence[int] | NDArray[np.integer] | None = None,
    top_k: int = 5,
    return_probs: bool = False,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    channels_last: bool = True,
) -> Predictions:
    """Predict ``images[indices]`` (default: every row).

    Args:
        trained: the model and how to use it.
        images: uint8 ``[N, H, W, 3]``, resized on the device when ``H`` is not the model's
            size; for a head, the rows' features (an :class:`~ml.embeddings.EmbeddingArray`).
        indices: rows to predict, ``[M]``; outputs follow this order.
        labels: given label of each predicted sample, ``[M]`` (``-1``: unknown), for
            ``given_prob``.
        top_k: how many classes to keep per sample (capped at ``C``).
        return_probs: also return the ``[M, C]`` probability matrix.
        device: default CUDA when available.

    Returns:
        :class:`Predictions` with ``M`` rows.
    """
    rows = _rows(trained, images, indices)
    if top_k < 1:
        raise ValueError(f"top_k must be positive, got {top_k}")
    label_array = None if labels is None else np.asarray(labels, dtype=np.int64)
    if label_array is not None and label_array.shape != rows.shape:
        raise ValueError(f"labels {label_array.shape} do not match {rows.shape[0]} samples")
    target = resolve_device(device)
    trained.model.to(target)
    batches = _logit_batches(
        trained, images, rows, batch_size=batch_size, device=target, channels_last=channels_last
    )
    k = min(top_k, trained.num_classes)
    return _gather(batches, label_array, k, trained.num_classes, return_probs, target)


def _gather(
    batches: Iterator[Tensor],
    labels: NDArray[np.int64] | None,
    k: int,
    num_classes: int,
    return_probs: bool,
    device: torch.device,
) -> Predictions:
    """:class:`Predictions` from adjusted logits ``[B, C]`` batch by batch, each reduced on
    ``device`` to what is kept (top-``k``, the given label's probability, the probabilities
    when asked for) before it moves to the CPU. ``labels`` ``[M]`` follow the batches' rows."""
    ids, values, given, full = [], [], [], []
    position = 0
    for logits in batches:
        probs = logits.softmax(dim=1)
        top_values, top_ids = torch.topk(probs, k, dim=1)
        ids.append(top_ids.cpu())
        values.append(top_values.cpu())
        if labels is not None:
            batch_labels = torch.from_numpy(labels[position : position + probs.shape[0]])
            picked = probs.gather(1, batch_labels.clamp(min=0).to(device).view(-1, 1)).squeeze(1)
            picked = torch.where(batch_labels.to(device) >= 0, picked, torch.nan)
            given.append(picked.cpu())
        if return_probs:
            full.append(probs.cpu())
        position += probs.shape[0]
    empty_k = torch.empty(0, k)
    return Predictions(
        topk_ids=torch.cat(ids).numpy().astype(np.int64) if ids else np.empty((0, k), np.int64),
        topk_probs=(torch.cat(values) if values else empty_k).numpy().astype(np.float32),
        given_prob=None
        if labels is None
        else (torch.cat(given) if given else torch.empty(0)).numpy().astype(np.float32),
        probs=(torch.cat(full) if full else torch.empty(0, num_classes)).numpy()
        if return_probs
        else None,
    )
