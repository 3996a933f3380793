"""The junk classifier: a binary model trained on human junk/normal labels that scores every
image with p(junk), and the numbers around it.

Class 0 is *normal*, class 1 is *junk*; every score here is p(junk) in ``[0, 1]``, higher = more
likely junk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from ml.checkpoint import TrainedModel
from ml.heads import TrainedHead
from ml.predict import predict
from ml.recipes import Recipe
from ml.train import EvalSet, ProgressCallback, TrainResult, train_model

__all__ = [
    "JUNK_CLASSES",
    "junk_rate_upper_bound",
    "junk_review_queue",
    "score_junk",
    "train_junk_classifier",
]

JUNK_CLASSES = ("normal", "junk")


def _binary(
    values: NDArray[np.integer] | NDArray[np.bool_] | Sequence[int] | Sequence[bool],
) -> NDArray[np.int64]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"junk labels must be [N], got shape {array.shape}")
    if array.dtype == np.bool_:
        return array.astype(np.int64)
    if array.size and not np.isin(array, (-1, 0, 1)).all():
        raise ValueError("junk labels must be 0 (normal), 1 (junk) or -1 (unlabelled)")
    return array.astype(np.int64)


def train_junk_classifier(
    recipe: Recipe,
    images: NDArray[np.uint8],
    is_junk: NDArray[np.integer] | NDArray[np.bool_] | Sequence[int] | Sequence[bool],
    *,
    indices: NDArray[np.integer] | Sequence[int] | None = None,
    val: EvalSet | None = None,
    device: str | torch.device | None = None,
    checkpoint_dir: str | Path | None = None,
    callback: ProgressCallback | None = None,
) -> TrainResult:
    """Train the binary junk model.

    Args:
        recipe: e.g. ``junk-binary`` (balanced sampling suits the few junk labels).
        images: uint8 ``[N, H, W, 3]``.
        is_junk: ``[N]``: 1/True junk, 0/False normal, -1 not labelled by a person.
        indices: the human-labelled rows to train on; default: every row labelled 0 or 1.
    """
    labels = _binary(is_junk)
    rows = np.flatnonzero(labels >= 0) if indices is None else np.asarray(indices, dtype=np.int64)
    if (labels[rows] < 0).any():
        raise ValueError("indices include samples without a junk/normal label")
    if np.unique(labels[rows]).size < 2:
        raise ValueError("need both junk and normal examples to train the junk classifier")
    return train_model(
        recipe,
        images,
        labels,
        num_classes=2,
        indices=rows,
        class_names=JUNK_CLASSES,
        val=val,
        device=device,
        checkpoint_dir=checkpoint_dir,
        callback=callback,
    )


def score_junk(
    trained: TrainedModel | TrainedHead,
    images: NDArray[np.uint8],
    *,
    indices: NDArray[np.integer] | Sequence[int] | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> NDArray[np.float32]:
    """p(junk) of ``images[indices]`` (default all rows), ``[M]`` float32; higher = junkier."""
    if trained.num_classes != 2:
        raise ValueError(f"a junk model has 2 classes, this one has {trained.num_classes}")
    predictions = predict(
        trained,
        images,
        indices=indices,
        top_k=1,
        return_probs=True,
        batch_size=batch_size,
        device=device,
    )
    assert predictions.probs is not None
    scores: NDArray[np.float32] = predictions.probs[:, 1].astype(np.float32)
    return scores


def junk_review_queue(p_junk: NDArray[np.floating], *, threshold: float = 0.9) -> NDArray[np.int64]:
    """Indices of the samples to send to annotators: ``p_junk >= threshold``, most likely junk
    first (ties by index). ``p_junk`` is ``[N]``."""
    scores = np.asarray(p_junk, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"p_junk must be [N], got shape {scores.shape}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    chosen = np.flatnonzero(scores >= threshold)
    order = np.lexsort((chosen, -scores[chosen]))
    queue: NDArray[np.int64] = chosen[order].astype(np.int64)
    return queue


def junk_rate_upper_bound(junk_found: int, audited: int, *, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on the junk rate of what is left, after a random
    audit of ``audited`` samples found ``junk_found`` junk.

    The junk stage stops when this bound is under 1%: e.g. 0 junk in 300 audited samples gives
    about 0.0099 at 95% confidence.
    """
    if audited <= 0 or not 0 <= junk_found <= audited:
        raise ValueError(
            f"need 0 <= junk_found <= audited and audited > 0, got {junk_found}/{audited}"
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if junk_found == audited:
        return 1.0
    # The bound is the rate p at which seeing <= junk_found junk has probability 1 - confidence;
    # the binomial CDF falls as p grows, so bisect.
    low, high = junk_found / audited, 1.0
    for _ in range(100):
        middle = (low + high) / 2
        if _binomial_cdf(junk_found, audited, middle) > 1.0 - confidence:
            low = middle
        else:
            high = middle
    return high


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n = math.lgamma(n + 1)
    terms = [
        log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        for i in range(k + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))
