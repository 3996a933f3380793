"""Label-cleaning rules: pure functions over arrays.

Every rule takes the given labels ``[N]`` (int class ids) and model outputs for the same samples,
and returns per-sample masks or scores. Public functions validate their inputs and call a private
twin that computes. Conventions:

* ``kept`` masks: ``True`` = the sample keeps its label; ``rejected = ~kept``.
* ``label_rank`` (:func:`label_rank_among_classes`): how many other classes are at least as
  probable as the given label; 0 = the label is the top class; higher = more likely mislabeled.
* ``label_quality``: cleanlab's score in ``[0, 1]``; lower = more likely mislabeled.
* ``knn_agreement``: share of a sample's nearest neighbours carrying its label, in ``[0, 1]``;
  lower = more likely mislabeled.

Rules:

* :func:`topk_keep`: kept if the given label is among the top-k predicted classes of the
  out-of-fold probabilities (:func:`topk_keep_from_ids` for uploaded top-k ids);
* :func:`pullback`: after training on the kept set, move back every rejected sample whose given
  label is now in its top-k (never the other way);
* :func:`calibrated_pullback`: after people checked a random sample of the rejected set, move
  back the unchecked rejects in the score band where their verdicts say rejects are more often
  right than wrong;
* :func:`confident_learning`: cleanlab's ``find_label_issues`` on the same probabilities;
* :func:`knn_votes` / :func:`knn_agreement`: the labels of each sample's k nearest neighbours in
  embedding space (cosine), a third detector that needs no trained model; as a rule, the
  neighbours' vote shares go through :func:`topk_keep` like probabilities;
* :func:`rejection_quality`: precision / recall / F1 of a rejected set against known noise;
* :func:`final_training_targets`: what the final training learns from kept and rejected
  samples (rejected ones never through their given label).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "FilterBy",
    "FinalTargets",
    "PullbackResult",
    "RejectUse",
    "RejectionQuality",
    "calibrated_pullback",
    "confident_learning",
    "final_training_targets",
    "knn_agreement",
    "knn_votes",
    "label_quality",
    "label_rank_among_classes",
    "pullback",
    "pullback_from_ids",
    "rejection_quality",
    "topk_keep",
    "topk_keep_from_ids",
]

IntArray = NDArray[np.integer] | Sequence[int]
FloatMatrix = NDArray[np.floating]
RejectUse = Literal["drop", "soft", "relabel"]
FilterBy = Literal[
    "prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given"
]


def _labels(
    labels: IntArray, *, rows: int | None = None, num_classes: int | None = None
) -> NDArray[np.int64]:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"labels must be [N], got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"labels must be integer class ids, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if rows is not None and array.shape[0] != rows:
        raise ValueError(f"{array.shape[0]} labels for {rows} prediction rows")
    if array.size and array.min() < 0:
        raise ValueError("labels must be non-negative class ids")
    if num_classes is not None and array.size and array.max() >= num_classes:
        raise ValueError(f"label {int(array.max())} is outside the {num_classes} predicted classes")
    return array


def _probs(pred_probs: FloatMatrix) -> NDArray[np.float64]:
    matrix = np.asarray(pred_probs, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"pred_probs must be [N, C], got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("pred_probs contains NaN or infinite values")
    return matrix


def _k(k: int, num_classes: int) -> int:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return min(k, num_classes)


# --------------------------------------------------------------------------------------------
# Top-k
# --------------------------------------------------------------------------------------------


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
    probs = _probs(pred_probs)
    return _rank_among_classes(
        _labels(labels, rows=probs.shape[0], num_classes=probs.shape[1]), probs
    )


def topk_keep(labels: IntArray, pred_probs: FloatMatrix, *, k: int = 1) -> NDArray[np.bool_]:
    """The top-k rule: ``True`` (kept) where the given label is among the ``k`` most probable
    classes, ``False`` (rejected) otherwise. ``[N]`` bool.

    Args:
        labels: ``[N]`` given class ids.
        pred_probs: ``[N, C]`` out-of-fold probabilities.
        k: 1 for a few classes, about 5 for thousands.
    """
    probs = _probs(pred_probs)
    label_array = _labels(labels, rows=probs.shape[0], num_classes=probs.shape[1])
    kept: NDArray[np.bool_] = _rank_among_classes(label_array, probs) < _k(k, probs.shape[1])
    return kept


def _in_topk_ids(
    labels: NDArray[np.int64], topk_ids: NDArray[np.int64], k: int
) -> NDArray[np.bool_]:
    hits: NDArray[np.bool_] = (topk_ids[:, :k] == labels[:, None]).any(axis=1)
    return hits


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
    label_array = _labels(labels)
    ids = _topk_ids(topk_ids, label_array.shape[0])
    use = ids.shape[1] if k is None else k
    if not 1 <= use <= ids.shape[1]:
        raise ValueError(f"k must be between 1 and the {ids.shape[1]} ids given, got {use}")
    return _in_topk_ids(label_array, ids, use)


# --------------------------------------------------------------------------------------------
# Pull-back
# --------------------------------------------------------------------------------------------


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
    probs = _probs(pred_probs)
    label_array = _labels(labels, num_classes=probs.shape[1])
    mask = _kept_mask(kept, label_array.shape[0])
    chosen = _prediction_indices(indices, mask, probs.shape[0])
    confirmed = _rank_among_classes(label_array[chosen], probs) < _k(k, probs.shape[1])
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
    label_array = _labels(labels)
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


# --------------------------------------------------------------------------------------------
# kNN label agreement
# --------------------------------------------------------------------------------------------


def _unit_centred(features: NDArray[np.floating]) -> NDArray[np.float32]:
    """L2-normalised, centred, L2-normalised again (as the heads see embeddings)."""
    matrix = np.asarray(features, dtype=np.float32)
    matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    matrix = matrix - matrix.mean(axis=0, keepdims=True)
    result: NDArray[np.float32] = matrix / np.maximum(
        np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12
    )
    return result


def knn_votes(
    features: NDArray[np.floating],
    labels: IntArray,
    *,
    k: int = 10,
    num_classes: int | None = None,
    block_rows: int = 2048,
) -> NDArray[np.float32]:
    """How the ``k`` nearest neighbours of each sample (cosine similarity of the centred,
    normalised embeddings; the sample itself excluded) label it: vote shares ``[N, C]``, each
    row summing to 1.

    Args:
        features: ``[N, D]`` embeddings.
        labels: ``[N]`` given class ids.
        k: neighbours per sample (capped at ``N - 1``).
        num_classes: ``C`` (default: the largest label + 1).
        block_rows: rows of the ``[rows, N]`` similarity block computed at a time.
    """
    matrix = np.asarray(features)
    if matrix.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {matrix.shape}")
    label_array = _labels(labels, rows=matrix.shape[0])
    n = label_array.shape[0]
    if n < 2:
        raise ValueError("kNN needs at least two samples")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    classes = num_classes if num_classes is not None else int(label_array.max()) + 1
    if label_array.max() >= classes:
        raise ValueError(f"label {int(label_array.max())} is outside {classes} classes")
    k = min(k, n - 1)
    unit = _unit_centred(matrix)
    votes = np.zeros((n, classes), dtype=np.float32)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        similarity = unit[start:stop] @ unit.T
        similarity[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        neighbour_labels = label_array[neighbours]
        for column in range(k):
            np.add.at(votes, (np.arange(start, stop), neighbour_labels[:, column]), 1.0)
    votes /= k
    return votes


def knn_agreement(
    features: NDArray[np.floating], labels: IntArray, *, k: int = 10
) -> NDArray[np.float32]:
    """The share of each sample's ``k`` nearest neighbours that carry its given label, ``[N]``
    in ``[0, 1]``; lower = more likely mislabeled (see :func:`knn_votes`)."""
    label_array = _labels(labels)
    votes = knn_votes(features, label_array, k=k)
    agreement: NDArray[np.float32] = votes[np.arange(label_array.shape[0]), label_array]
    return agreement


# Confident learning (cleanlab)
# --------------------------------------------------------------------------------------------


def _cleanlab_inputs(
    labels: IntArray, pred_probs: FloatMatrix
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    probs = _probs(pred_probs)
    label_array = _labels(labels, rows=probs.shape[0], num_classes=probs.shape[1])
    if (probs < 0).any():
        raise ValueError("pred_probs must be probabilities (non-negative rows summing to 1)")
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("pred_probs rows must sum to 1")
    return label_array, probs / probs.sum(axis=1, keepdims=True)


def confident_learning(
    labels: IntArray,
    pred_probs: FloatMatrix,
    *,
    filter_by: FilterBy = "prune_by_noise_rate",
    **options: Any,
) -> NDArray[np.bool_]:
    """Confident learning (Northcutt et al., 2021) through ``cleanlab.filter.find_label_issues``
    on the same out-of-fold probabilities as the top-k rule. ``[N]`` bool, ``True`` = label issue
    (rejected): the opposite sense of :func:`topk_keep`.

    Args:
        labels: ``[N]`` class ids.
        pred_probs: ``[N, C]`` out-of-fold probabilities, rows summing to 1.
        filter_by: cleanlab's method.
        **options: passed to ``find_label_issues`` (e.g. ``frac_noise``,
            ``min_examples_per_class``).
    """
    label_array, probs = _cleanlab_inputs(labels, pred_probs)
    from cleanlab.filter import find_label_issues

    issues = find_label_issues(label_array, probs, filter_by=filter_by, **options)
    return np.asarray(issues, dtype=bool)


def label_quality(
    labels: IntArray, pred_probs: FloatMatrix, *, method: str = "self_confidence"
) -> NDArray[np.float64]:
    """cleanlab's label-quality score per sample, ``[N]`` in ``[0, 1]``; lower = more likely
    mislabeled (``cleanlab.rank.get_label_quality_scores``)."""
    label_array, probs = _cleanlab_inputs(labels, pred_probs)
    from cleanlab.rank import get_label_quality_scores

    return np.asarray(get_label_quality_scores(label_array, probs, method=method), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Evaluation against known noise
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RejectionQuality:
    """How well a rejected set matches the truly mislabeled samples.

    Attributes:
        precision: fraction of rejected samples that are mislabeled (1.0 if none rejected).
        recall: fraction of mislabeled samples that are rejected (1.0 if none mislabeled).
        f1: harmonic mean of the two (0 when both are 0).
        rejected, mislabeled, true_positives: counts.
    """

    precision: float
    recall: float
    f1: float
    rejected: int
    mislabeled: int
    true_positives: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rejection_quality(
    rejected: NDArray[np.bool_] | Sequence[bool], mislabeled: NDArray[np.bool_] | Sequence[bool]
) -> RejectionQuality:
    """Precision, recall and F1 of ``rejected`` ``[N]`` against ``mislabeled`` ``[N]``
    (given label != true label)."""
    r = np.asarray(rejected, dtype=bool)
    m = np.asarray(mislabeled, dtype=bool)
    if r.shape != m.shape or r.ndim != 1:
        raise ValueError(f"rejected {r.shape} and mislabeled {m.shape} must be equal [N] masks")
    tp = int((r & m).sum())
    precision = tp / int(r.sum()) if r.any() else 1.0
    recall = tp / int(m.sum()) if m.any() else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return RejectionQuality(precision, recall, f1, int(r.sum()), int(m.sum()), tp)


# --------------------------------------------------------------------------------------------
# What the final training learns
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinalTargets:
    """The final training's inputs besides the features.

    Attributes:
        labels: ``[N]`` the class each row trains on; -1 where a row learns only from ``soft``
            (or does not train).
        rows: ``[M]`` the training rows, ascending.
        soft: ``[N, C]`` target distributions for the rows labelled -1 (``None`` if none).
        weights: ``[N]`` loss weights (``None``: all 1).
        sources: how many rows each source contributed: ``kept``, ``soft``, ``relabelled``.
    """

    labels: NDArray[np.int64]
    rows: NDArray[np.int64]
    soft: NDArray[np.float32] | None
    weights: NDArray[np.float32] | None
    sources: dict[str, int]


def final_training_targets(
    labels: IntArray,
    kept: NDArray[np.bool_] | Sequence[bool],
    pred_probs: FloatMatrix | None,
    *,
    use: RejectUse = "drop",
    weight: float = 0.5,
    relabel_threshold: float = 0.9,
) -> FinalTargets:
    """What each sample contributes to the final training. Kept samples train on their labels
    (human labels already folded in by the caller). Rejected samples, by ``use``:

    * ``drop``: nothing;
    * ``soft``: the ensemble's out-of-fold distribution ``pred_probs[i]`` as a soft target, at
      loss weight ``weight``;
    * ``relabel``: the ensemble's top class, as a hard label, where its probability is at least
      ``relabel_threshold``; the others are dropped.

    A rejected sample's given label is never read: only ``kept`` and ``pred_probs`` decide what
    it contributes.

    Args:
        labels: ``[N]`` labels; only those of kept samples are used.
        kept: ``[N]`` the cleaning verdict.
        pred_probs: ``[N, C]`` out-of-fold probabilities (needed unless ``use`` is ``drop``).
    """
    kept_mask = np.asarray(kept, dtype=bool)
    given = np.asarray(labels, dtype=np.int64)
    if kept_mask.shape != given.shape or given.ndim != 1:
        raise ValueError(f"kept {kept_mask.shape} and labels {given.shape} must be equal [N]")
    train_labels = np.full(given.shape, -1, dtype=np.int64)
    train_labels[kept_mask] = given[kept_mask]
    rejected = np.flatnonzero(~kept_mask)
    sources = {"kept": int(kept_mask.sum()), "soft": 0, "relabelled": 0}
    if use == "drop" or rejected.size == 0:
        return FinalTargets(train_labels, np.flatnonzero(kept_mask), None, None, sources)
    if pred_probs is None:
        raise ValueError(f"using rejected samples ({use}) needs the out-of-fold probabilities")
    probs = _probs(pred_probs)
    if probs.shape[0] != given.shape[0]:
        raise ValueError(f"pred_probs has {probs.shape[0]} rows for {given.shape[0]} samples")
    if use == "soft":
        if not weight > 0.0:
            raise ValueError(f"the weight of soft targets must be positive, got {weight}")
        weights = np.ones(given.shape, dtype=np.float32)
        weights[rejected] = weight
        sources["soft"] = int(rejected.size)
        rows = np.arange(given.shape[0], dtype=np.int64)
        return FinalTargets(train_labels, rows, probs.astype(np.float32), weights, sources)
    if use != "relabel":
        raise ValueError(f"use must be drop, soft or relabel, got {use!r}")
    confident = rejected[probs[rejected].max(axis=1) >= relabel_threshold]
    train_labels[confident] = probs[confident].argmax(axis=1)
    sources["relabelled"] = int(confident.size)
    return FinalTargets(train_labels, np.flatnonzero(train_labels >= 0), None, None, sources)
