"""The top-k rule and pull-back: a sample keeps its label when the label is among a model's k
most probable classes; a pull-back round moves back the rejects a model trained on the kept set
confirms that way; the calibrated pull-back moves back rejects where people's verdicts say
rejecting them is more often wrong than right.

``label_rank`` (:func:`label_rank_among_classes`): how many other classes are at least as
probable as the given label; 0 = the label is the top class; higher = more likely mislabeled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ml.core.cleaning.arrays import FloatMatrix, IntArray, check_k, check_labels, check_probs

__all__ = [
    "PullbackResult",
    "calibrated_pullback",
    "label_rank_among_classes",
    "label_ranks_in_topk",
    "pullback",
    "pullback_from_ids",
    "topk_keep",
    "topk_keep_from_ids",
    "topk_keep_from_ranks",
]


def _rank_among_classes(labels: NDArray[np.int64], probs: NDArray[np.float64]) -> NDArray[np.int64]:
    ranks = np.empty(labels.shape[0], dtype=np.int64)
    # In row blocks: the comparisons are [rows, C] temporaries.
    for start in range(0, labels.shape[0], 16384):
        block = probs[start : start + 16384]
        given = block[np.arange(block.shape[0]), labels[start : start + 16384]][:, None]
        # Ties count against the label (a class with the same probability ranks ahead), so a
        # uniform prediction never "confirms" a label.
        ranks[start : start + 16384] = (block >= given).sum(axis=1) - 1
    return ranks


def label_rank_among_classes(labels: IntArray, pred_probs: FloatMatrix) -> NDArray[np.int64]:
    """Rank of each sample's given label among all predicted classes by probability, ``[N]``.

    0 = the label is the top class; higher = more likely mislabeled. Ties with other classes
    count against the label.

    Args:
        labels: ``[N]`` class ids.
        pred_probs: ``[N, C]`` probabilities (or any scores ranked the same way), e.g.
            out-of-fold.
    """
    probs = check_probs(pred_probs)
    return _rank_among_classes(
        check_labels(labels, rows=probs.shape[0], num_classes=probs.shape[1]), probs
    )


def topk_keep(labels: IntArray, pred_probs: FloatMatrix, *, k: int = 1) -> NDArray[np.bool_]:
    """The top-k rule: ``True`` (kept) where the given label is among the ``k`` most probable
    classes, ``False`` (rejected) otherwise. ``[N]`` bool.

    Args:
        labels: ``[N]`` given class ids.
        pred_probs: ``[N, C]`` out-of-fold probabilities.
        k: 1 for a few classes, about 5 for thousands.
    """
    probs = check_probs(pred_probs)
    label_array = check_labels(labels, rows=probs.shape[0], num_classes=probs.shape[1])
    kept: NDArray[np.bool_] = _rank_among_classes(label_array, probs) < check_k(k, probs.shape[1])
    return kept


def label_ranks_in_topk(
    labels: IntArray, topk_ids: NDArray[np.integer] | Sequence[Sequence[int]]
) -> NDArray[np.int64]:
    """Each given label's position among its sample's uploaded top-K class ids ``[N, K]``
    (most probable first; 0 = the top class), -1 where it is not among them (the
    ``label_rank`` a pipeline sample stores). A label of -1, none, is never found. For the rank
    among all classes' probabilities see :func:`label_rank_among_classes`."""
    label_array = np.asarray(labels, dtype=np.int64)
    if label_array.ndim != 1:
        raise ValueError(f"labels must be [N], got shape {label_array.shape}")
    hits = _topk_ids(topk_ids, label_array.shape[0]) == label_array[:, None]
    ranks: NDArray[np.int64] = np.where(hits.any(axis=1), hits.argmax(axis=1), -1)
    return ranks.astype(np.int64)


def topk_keep_from_ranks(ranks: NDArray[np.integer], k: int) -> NDArray[np.bool_]:
    """The top-k rule on :func:`label_ranks_in_topk`: ``True`` (kept) where the label is among
    the first ``k`` ids."""
    kept: NDArray[np.bool_] = (ranks >= 0) & (ranks < k)
    return kept


def _in_topk_ids(
    labels: NDArray[np.int64], topk_ids: NDArray[np.int64], k: int
) -> NDArray[np.bool_]:
    return topk_keep_from_ranks(label_ranks_in_topk(labels, topk_ids), k)


def _topk_ids(
    topk_ids: NDArray[np.integer] | Sequence[Sequence[int]], rows: int | None = None
) -> NDArray[np.int64]:
    ids = np.asarray(topk_ids)
    if ids.ndim != 2:
        raise ValueError(f"topk_ids must be [N, K], got shape {ids.shape}")
    if rows is not None and ids.shape[0] != rows:
        raise ValueError(f"{ids.shape[0]} top-k rows for {rows} samples")
    return ids.astype(np.int64)


def topk_keep_from_ids(
    labels: IntArray, topk_ids: NDArray[np.integer], *, k: int | None = None
) -> NDArray[np.bool_]:
    """The top-k rule on uploaded top-K class ids ``[N, K]`` (most probable first), using the
    first ``k <= K`` of them (default all). ``[N]`` bool, ``True`` = kept."""
    label_array = check_labels(labels)
    ids = _topk_ids(topk_ids, label_array.shape[0])
    use = ids.shape[1] if k is None else k
    if not 1 <= use <= ids.shape[1]:
        raise ValueError(f"k must be between 1 and the {ids.shape[1]} ids given, got {use}")
    return _in_topk_ids(label_array, ids, use)


@dataclass(frozen=True)
class PullbackResult:
    """One pull-back round.

    Attributes:
        kept: ``[N]`` bool, the kept set after the round (a superset of the one before).
        pulled_back: ``[P]`` int64 indices of the samples moved from rejected to kept.
    """

    kept: NDArray[np.bool_]
    pulled_back: NDArray[np.int64]


def _kept_mask(kept: NDArray[np.bool_] | Sequence[bool], rows: int) -> NDArray[np.bool_]:
    mask = np.asarray(kept)
    if mask.dtype != np.bool_ or mask.shape != (rows,):
        raise ValueError(f"kept must be a bool mask [{rows}], got {mask.dtype} {mask.shape}")
    return mask


def _pullback(
    kept: NDArray[np.bool_], indices: NDArray[np.int64], confirmed: NDArray[np.bool_]
) -> PullbackResult:
    candidates = ~kept[indices]
    moved = np.unique(indices[candidates & confirmed])
    new_kept = kept.copy()
    new_kept[moved] = True
    return PullbackResult(kept=new_kept, pulled_back=moved.astype(np.int64))


def _prediction_indices(
    indices: IntArray | None, kept: NDArray[np.bool_], rows: int
) -> NDArray[np.int64]:
    chosen = np.flatnonzero(~kept) if indices is None else np.asarray(indices, dtype=np.int64)
    if chosen.ndim != 1 or chosen.shape[0] != rows:
        raise ValueError(f"indices {chosen.shape} do not match {rows} prediction rows")
    if chosen.size and (chosen.min() < 0 or chosen.max() >= kept.shape[0]):
        raise ValueError(f"indices must lie in [0, {kept.shape[0]})")
    return chosen


def pullback(
    labels: IntArray,
    kept: NDArray[np.bool_],
    pred_probs: FloatMatrix,
    *,
    k: int = 1,
    indices: IntArray | None = None,
) -> PullbackResult:
    """A pull-back round: move back to the kept set every rejected sample whose given label is
    in the top-k of a model trained on the kept set. Kept samples never leave.

    Args:
        labels: ``[N]`` given class ids of the whole dataset.
        kept: ``[N]`` bool, the kept set the model was trained on.
        pred_probs: ``[M, C]`` that model's probabilities for the samples ``indices``.
        k: as in :func:`topk_keep`.
        indices: ``[M]`` which samples ``pred_probs`` rows are; default: the rejected samples
            (``np.flatnonzero(~kept)``), in order. Rows of kept samples are ignored.
    """
    probs = check_probs(pred_probs)
    label_array = check_labels(labels, num_classes=probs.shape[1])
    mask = _kept_mask(kept, label_array.shape[0])
    chosen = _prediction_indices(indices, mask, probs.shape[0])
    confirmed = _rank_among_classes(label_array[chosen], probs) < check_k(k, probs.shape[1])
    return _pullback(mask, chosen, confirmed)


def pullback_from_ids(
    labels: IntArray,
    kept: NDArray[np.bool_],
    topk_ids: NDArray[np.integer],
    *,
    k: int | None = None,
    indices: IntArray | None = None,
) -> PullbackResult:
    """:func:`pullback` on top-K class ids ``[M, K]`` instead of probabilities."""
    label_array = check_labels(labels)
    mask = _kept_mask(kept, label_array.shape[0])
    ids = _topk_ids(topk_ids)
    chosen = _prediction_indices(indices, mask, ids.shape[0])
    use = ids.shape[1] if k is None else k
    if not 1 <= use <= ids.shape[1]:
        raise ValueError(f"k must be between 1 and the {ids.shape[1]} ids given, got {use}")
    return _pullback(mask, chosen, _in_topk_ids(label_array[chosen], ids, use))


def calibrated_pullback(
    judged_scores: NDArray[np.floating],
    judged_wrong: NDArray[np.bool_],
    scores: NDArray[np.floating],
    *,
    max_wrong: float = 0.5,
    min_judged: int = 20,
    min_band: int = 10,
) -> NDArray[np.bool_]:
    """Which rejected samples to move back, from people's verdicts on a random sample of the
    rejected set.

    ``score`` is a model's probability of the sample's given label (higher = the label more
    likely right). The share of rejects whose label is wrong is fitted against it on the judged
    sample (isotonic, non-increasing), and the unjudged rejects whose fitted share is under
    ``max_wrong`` come back: where rejects are mostly right, rejecting them costs more clean
    samples than it removes wrong ones. With low noise that band is wide; with high noise it is
    usually empty, so the rule adapts to the noise level the people measured.

    Args:
        judged_scores: ``[J]`` scores of the rejects people checked.
        judged_wrong: ``[J]`` their verdict: ``True`` = the given label was wrong (relabelled
            or junk), ``False`` = it was right.
        scores: ``[M]`` scores of the unjudged rejects.
        max_wrong: move back where the fitted share of wrong labels is below this.
        min_judged: with fewer judged samples (or verdicts of one kind only, which say nothing
            about where the share changes), nothing moves.
        min_band: nothing moves unless at least this many judged samples lie in the band that
            would: a fit's last few points say little.

    Returns:
        ``[M]`` bool, ``True`` = move back.
    """
    judged = np.asarray(judged_scores, dtype=np.float64)
    wrong = np.asarray(judged_wrong)
    rest = np.asarray(scores, dtype=np.float64)
    if judged.ndim != 1 or wrong.shape != judged.shape or wrong.dtype != np.bool_:
        raise ValueError(f"judged scores {judged.shape} and bool verdicts must be equal [J]")
    if rest.ndim != 1:
        raise ValueError(f"scores must be [M], got {rest.shape}")
    if not (np.isfinite(judged).all() and np.isfinite(rest).all()):
        raise ValueError("scores must be finite")
    if not 0.0 < max_wrong <= 1.0:
        raise ValueError(f"max_wrong must be in (0, 1], got {max_wrong}")
    if judged.size < min_judged or wrong.all() or not wrong.any():
        return np.zeros(rest.shape, dtype=bool)
    from sklearn.isotonic import IsotonicRegression

    fit = IsotonicRegression(increasing=False, out_of_bounds="clip")
    fit.fit(judged, wrong.astype(np.float64))
    if int((fit.predict(judged) < max_wrong).sum()) < min_band:
        return np.zeros(rest.shape, dtype=bool)
    result: NDArray[np.bool_] = fit.predict(rest) < max_wrong
    return result
