"""The junk classifier: a binary model trained on human junk/normal labels that scores every
image with p(junk), and the numbers around it.

Class 0 is *normal*, class 1 is *junk*; every score here is p(junk) in ``[0, 1]``, higher = more
likely junk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ml.checkpoint import TrainedModel
from ml.heads import TrainedHead
from ml.parallel import predict_rows, train
from ml.recipes import Recipe
from ml.runtime import LocalRuntime, Runtime
from ml.training.interface import EvalSet, TrainResult

__all__ = [
    "JUNK_CLASSES",
    "junk_labels",
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


def junk_labels(
    class_names: Sequence[str], labels: NDArray[np.integer] | Sequence[int]
) -> NDArray[np.int64]:
    """``labels`` ``[N]`` (indices into ``class_names``; -1: unlabelled) as the junk model's
    classes (:data:`JUNK_CLASSES`; -1 stays -1).

    Raises:
        ValueError: a class is neither ``junk`` nor ``normal``.
    """
    position = {name: i for i, name in enumerate(JUNK_CLASSES)}
    unknown = sorted(set(class_names) - set(position))
    if unknown:
        raise ValueError(
            f"junk labels must be {JUNK_CLASSES[1]!r} or {JUNK_CLASSES[0]!r}, found {unknown}"
        )
    mapping = np.asarray([position[name] for name in class_names] + [-1], dtype=np.int64)
    given = np.asarray(labels, dtype=np.int64)
    result: NDArray[np.int64] = mapping[np.where(given >= 0, given, mapping.shape[0] - 1)]
    return result


def train_junk_classifier(
    recipe: Recipe,
    images: NDArray[Any],
    is_junk: NDArray[np.integer] | NDArray[np.bool_] | Sequence[int] | Sequence[bool],
    *,
    indices: NDArray[np.integer] | Sequence[int] | None = None,
    val: EvalSet | None = None,
    runtime: Runtime | None = None,
    checkpoint_dir: str | Path | None = None,
) -> TrainResult:
    """Train the binary junk model.

    Args:
        recipe: e.g. ``junk-binary`` (balanced sampling suits the few junk labels).
        images: uint8 ``[N, H, W, 3]`` (or the rows' embeddings for a recipe with a head).
        is_junk: ``[N]``: 1/True junk, 0/False normal, -1 not labelled by a person.
        indices: the human-labelled rows to train on; default: every row labelled 0 or 1.
        runtime: where it runs (default: this process, CUDA when there is one).

    Raises:
        JobStopped: the runtime said to stop.
    """
    labels = _binary(is_junk)
    rows = np.flatnonzero(labels >= 0) if indices is None else np.asarray(indices, dtype=np.int64)
    if (labels[rows] < 0).any():
        raise ValueError("indices include samples without a junk/normal label")
    if np.unique(labels[rows]).size < 2:
        raise ValueError("need both junk and normal examples to train the junk classifier")
    return train(
        recipe,
        images,
        rows.astype(np.int64),
        labels,
        num_classes=2,
        class_names=JUNK_CLASSES,
        runtime=runtime or LocalRuntime(),
        checkpoint_dir=checkpoint_dir,
        val=val,
    )


def score_junk(
    trained: TrainedModel | TrainedHead,
    images: NDArray[Any],
    *,
    indices: NDArray[np.integer] | Sequence[int] | None = None,
    batch_size: int = 256,
    runtime: Runtime | None = None,
) -> NDArray[np.float32] | None:
    """p(junk) of ``images[indices]`` (default all rows), ``[M]`` float32; higher = junkier.
    None on the ranks but 0 of a multi-process run.

    Raises:
        JobStopped: the runtime said to stop.
    """
    if trained.num_classes != 2:
        raise ValueError(f"a junk model has 2 classes, this one has {trained.num_classes}")
    rows = np.arange(len(images)) if indices is None else np.asarray(indices)
    predicted = predict_rows(
        trained,
        images,
        rows.astype(np.int64),
        None,
        top_k=2,
        keep_probs=False,
        batch_size=batch_size,
        runtime=runtime or LocalRuntime(),
    )
    if predicted is None:
        return None
    junk_column = predicted.topk_ids == JUNK_CLASSES.index("junk")
    scores: NDArray[np.float32] = np.where(junk_column, predicted.topk_probs, 0.0).sum(axis=1)
    return np.clip(scores, 0.0, 1.0).astype(np.float32)


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
