"""The cleaning steps: ``crossval`` (out-of-fold predictions and three detectors side by side)
and ``pullback`` (rounds that move rejected samples back), on a manifest, in this process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ml.core.cleaning.confident import label_issues_among_present
from ml.core.cleaning.knn import knn_verdicts
from ml.core.cleaning.topk import label_rank_among_classes, pullback, topk_keep
from ml.core.folds import stratified_folds
from ml.crossval import OutOfFold, out_of_fold_predictions
from ml.embeddings import EmbeddingArray
from ml.manifest import Manifest
from ml.parallel import predict_rows, train
from ml.recipes import Recipe
from ml.runtime import LocalRuntime
from ml.steps.files import (
    StepError,
    StepInputs,
    default_k,
    format_topk,
    read_decisions,
    write_decisions,
    write_json,
)
from ml.training.interface import TrainingCallback

__all__ = ["CrossvalSummary", "PullbackRound", "Rule", "run_crossval", "run_pullback"]

Rule = Literal["topk", "cleanlab", "knn"]


@dataclass(frozen=True)
class CrossvalSummary:
    """Counts of a cross-validation step (also written to ``summary.json``)."""

    samples: int
    classes: int
    folds: int
    k: int
    kept: int
    rejected: int
    cleanlab_issues: int
    both_reject: int
    oof_accuracy: float
    rule: str = "topk"
    knn_rejected: int | None = None


@dataclass(frozen=True)
class _Verdicts:
    """Every detector's verdict per sample ``[N]``; ``kept``: the chosen rule's."""

    topk_kept: NDArray[np.bool_]
    ranks: NDArray[np.int64]
    issues: NDArray[np.bool_]
    quality: NDArray[np.float32]
    knn_kept: NDArray[np.bool_] | None
    agreement: NDArray[np.float32] | None
    kept: NDArray[np.bool_]


def run_crossval(
    manifest: Manifest,
    recipe: Recipe,
    out: str | Path,
    *,
    folds: int = 5,
    k: int | None = None,
    top_k: int = 5,
    seed: int = 0,
    rule: Rule = "topk",
    knn_k: int = 10,
    cache_dir: Path | None = None,
    device: str | None = None,
    callback: TrainingCallback | None = None,
) -> CrossvalSummary:
    """Out-of-fold predictions, then three detectors side by side: the top-k rule, confident
    learning, and (for a recipe on embeddings) kNN label agreement in embedding space.

    Args:
        folds: K.
        k: the top-k rule's k (default :func:`~ml.steps.files.default_k`); the kNN rule uses it
            too (kept when the label is among the neighbours' ``k`` most voted classes).
        top_k: how many classes to record per sample (at least ``k``).
        seed: seeds the fold split.
        rule: which detector sets ``status``: ``topk``, ``cleanlab`` or ``knn``.
        knn_k: neighbours per sample of the kNN detector.
    """
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    k = k or default_k(manifest.num_classes)
    inputs = StepInputs(manifest, cache_dir, device).for_recipe(recipe)
    fold_array = stratified_folds(manifest.labels, folds, seed)
    oof = out_of_fold_predictions(
        recipe,
        inputs,
        manifest.labels,
        fold_array,
        num_classes=manifest.num_classes,
        top_k=max(top_k, k),
        class_names=manifest.classes,
        device=device,
        checkpoint_root=out_dir / "models",
        callback=(lambda _fold: callback) if callback is not None else None,
    )
    verdicts = _detect(manifest, inputs, oof.probs, k=k, knn_k=knn_k, rule=rule, recipe=recipe)
    _save_oof(out_dir / "oof.npz", oof, fold_array, manifest.labels)
    write_decisions(out_dir / "decisions.csv", _decision_rows(manifest, oof, verdicts))
    summary = _summary(manifest, folds, k, rule, verdicts, oof)
    write_json(
        out_dir / "summary.json",
        {
            **summary.__dict__,
            "recipe": recipe.model_dump(mode="json"),
            "classes": list(manifest.classes),
            "fold_history": [[h.to_dict() for h in result.history] for result in oof.fold_results],
        },
    )
    return summary


def _summary(
    manifest: Manifest, folds: int, k: int, rule: Rule, verdicts: _Verdicts, oof: OutOfFold
) -> CrossvalSummary:
    kept, knn_kept = verdicts.kept, verdicts.knn_kept
    return CrossvalSummary(
        samples=len(manifest),
        classes=manifest.num_classes,
        folds=folds,
        k=k,
        kept=int(kept.sum()),
        rejected=int((~kept).sum()),
        cleanlab_issues=int(verdicts.issues.sum()),
        both_reject=int((~verdicts.topk_kept & verdicts.issues).sum()),
        oof_accuracy=float((oof.probs.argmax(axis=1) == manifest.labels).mean()),
        rule=rule,
        knn_rejected=None if knn_kept is None else int((~knn_kept).sum()),
    )


def _detect(
    manifest: Manifest,
    inputs: NDArray[Any],
    probs: NDArray[np.float32],
    *,
    k: int,
    knn_k: int,
    rule: Rule,
    recipe: Recipe,
) -> _Verdicts:
    """The top-k rule, confident learning and (on embeddings) kNN agreement on ``probs``."""
    labels = manifest.labels
    topk_kept = topk_keep(labels, probs, k=k)
    issues, quality = label_issues_among_present(labels, probs)
    knn_kept: NDArray[np.bool_] | None = None
    agreement: NDArray[np.float32] | None = None
    if isinstance(inputs, EmbeddingArray):
        knn_kept, agreement = knn_verdicts(
            inputs, labels, k=knn_k, top_k=k, num_classes=manifest.num_classes
        )
    elif rule == "knn":
        raise StepError(f"the kNN rule needs a recipe on embeddings; {recipe.name} is not one")
    kept = {"topk": topk_kept, "cleanlab": ~issues, "knn": knn_kept}[rule]
    assert kept is not None
    return _Verdicts(
        topk_kept=topk_kept,
        ranks=label_rank_among_classes(labels, probs),
        issues=issues,
        quality=quality,
        knn_kept=knn_kept,
        agreement=agreement,
        kept=kept,
    )


def _save_oof(
    path: Path, oof: OutOfFold, folds: NDArray[np.int64], labels: NDArray[np.int64]
) -> None:
    predictions = oof.predictions
    assert predictions.given_prob is not None
    np.savez_compressed(
        path,
        probs=oof.probs,
        topk_ids=predictions.topk_ids,
        topk_probs=predictions.topk_probs,
        given_prob=predictions.given_prob,
        folds=folds,
        labels=labels,
    )


def _decision_rows(manifest: Manifest, oof: OutOfFold, verdicts: _Verdicts) -> list[dict[str, Any]]:
    """One ``decisions.csv`` row per sample, in manifest order."""
    predictions = oof.predictions
    assert predictions.given_prob is not None
    rows = []
    for i, sample in enumerate(manifest.samples):
        classes_text, probs_text = format_topk(
            predictions.topk_ids[i], predictions.topk_probs[i], manifest.classes
        )
        knn_kept, agreement = verdicts.knn_kept, verdicts.agreement
        rows.append(
            {
                "sample_id": sample.sample_id,
                "path": str(sample.path),
                "label": manifest.classes[sample.label],
                "fold": int(oof.folds[i]),
                "given_prob": f"{float(predictions.given_prob[i]):.4f}",
                "label_rank": int(verdicts.ranks[i]),
                "topk_classes": classes_text,
                "topk_probs": probs_text,
                "topk_kept": int(verdicts.topk_kept[i]),
                "cleanlab_issue": int(verdicts.issues[i]),
                "cleanlab_quality": f"{float(verdicts.quality[i]):.4f}",
                "knn_agreement": "" if agreement is None else f"{float(agreement[i]):.4f}",
                "knn_kept": "" if knn_kept is None else int(knn_kept[i]),
                "status": "kept" if verdicts.kept[i] else "rejected",
                "pulled_back_round": "",
            }
        )
    return rows


@dataclass(frozen=True)
class PullbackRound:
    """One round: the recipe used, the kept set it trained on, how many came back."""

    round: int
    recipe: str
    trained_on: int
    predicted: int
    pulled_back: int


def run_pullback(
    manifest: Manifest,
    decisions: str | Path,
    recipes: Sequence[Recipe],
    out: str | Path,
    *,
    rounds: int = 2,
    k: int | None = None,
    cache_dir: Path | None = None,
    device: str | None = None,
    callback: TrainingCallback | None = None,
) -> list[PullbackRound]:
    """Pull-back rounds: train on the kept set, predict the rejected one, move back the samples
    whose label is now in their top-k; recipes are used in turn; stops early when a round pulls
    back nothing."""
    if not recipes:
        raise StepError("pull-back needs at least one recipe")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, kept = read_decisions(decisions, manifest)
    k = k or default_k(manifest.num_classes)
    sources = StepInputs(manifest, cache_dir, device)
    runtime = LocalRuntime(device, callback)
    history: list[PullbackRound] = []
    for number in range(1, rounds + 1):
        recipe = recipes[(number - 1) % len(recipes)]
        rejected = np.flatnonzero(~kept)
        if rejected.size == 0:
            break
        models = out_dir / "models" / f"round-{number}"
        probs = _train_and_predict(recipe, sources, kept, rejected, runtime, models)
        outcome = pullback(manifest.labels, kept, probs, k=k, indices=rejected)
        for index in outcome.pulled_back:
            rows[int(index)]["status"] = "kept"
            rows[int(index)]["pulled_back_round"] = str(number)
        pulled = int(outcome.pulled_back.size)
        history.append(
            PullbackRound(number, recipe.name, int(kept.sum()), int(rejected.size), pulled)
        )
        kept = outcome.kept
        if pulled == 0:
            break
    write_decisions(out_dir / "decisions.csv", [dict(row) for row in rows])
    summary = {"kept": int(kept.sum()), "rejected": int((~kept).sum())}
    write_json(out_dir / "summary.json", {"rounds": [r.__dict__ for r in history], **summary})
    return history


def _train_and_predict(
    recipe: Recipe,
    sources: StepInputs,
    kept: NDArray[np.bool_],
    rejected: NDArray[np.int64],
    runtime: LocalRuntime,
    checkpoint_dir: Path,
) -> NDArray[np.float32]:
    """One round's model, trained on the kept samples: its probabilities ``[R, C]`` of the
    rejected ones."""
    manifest = sources.manifest
    inputs = sources.for_recipe(recipe)
    result = train(
        recipe,
        inputs,
        np.flatnonzero(kept),
        manifest.labels,
        num_classes=manifest.num_classes,
        class_names=manifest.classes,
        runtime=runtime,
        checkpoint_dir=checkpoint_dir,
    )
    predicted = predict_rows(
        result.trained,
        inputs,
        rejected,
        None,
        top_k=1,
        keep_probs=True,
        batch_size=recipe.eval_batch_size,
        runtime=runtime,
        probs_dtype=np.float32,
    )
    assert predicted is not None and predicted.probs is not None
    return predicted.probs
