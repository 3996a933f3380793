"""Workflow steps on a manifest, writing their results to a directory: what ``thresher ml …``
runs, and what a worker job can call.

Each step decodes the manifest once into the decoded cache (:mod:`ml.cache`), runs the library,
and writes plain files:

* ``crossval``: ``oof.npz`` (out-of-fold ``probs [N, C]``, ``topk_ids``/``topk_probs [N, k]``,
  ``given_prob [N]``, ``folds``, ``labels``), ``decisions.csv`` (one row per sample: top-k rule
  and cleanlab verdicts, ``status`` kept/rejected), ``summary.json``, the fold models under
  ``models/fold-<f>/``;
* ``pullback``: an updated ``decisions.csv`` (``status`` and ``pulled_back_round``) and
  ``summary.json`` with each round's count;
* ``train``: the run directory (checkpoints) and ``history.json``;
* ``predict``: ``predictions.csv`` (top-k classes and probabilities, given label's probability)
  and optionally ``probs.npy``;
* ``junk_train`` / ``junk_score``: the junk model; ``junk_scores.csv`` with p(junk) and the
  review queue.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ml.cache import DecodedCache, decoded_cache
from ml.checkpoint import load_trained_model
from ml.cleaning import (
    confident_learning,
    label_quality,
    label_rank,
    pullback,
    topk_keep,
)
from ml.crossval import out_of_fold_predictions
from ml.data import stratified_folds
from ml.junk import JUNK_CLASSES, junk_review_queue, score_junk, train_junk_classifier
from ml.manifest import Manifest
from ml.predict import predict
from ml.recipes import Recipe, dump_recipe
from ml.train import EvalSet, ProgressCallback, train_model

__all__ = [
    "DECISION_FIELDS",
    "CrossvalSummary",
    "PullbackRound",
    "StepError",
    "default_cache_dir",
    "default_k",
    "read_decisions",
    "run_crossval",
    "run_junk_score",
    "run_junk_train",
    "run_predict",
    "run_pullback",
    "run_train",
]

DECISION_FIELDS = (
    "sample_id",
    "path",
    "label",
    "fold",
    "given_prob",
    "label_rank",
    "topk_classes",
    "topk_probs",
    "topk_kept",
    "cleanlab_issue",
    "cleanlab_quality",
    "status",
    "pulled_back_round",
)


class StepError(ValueError):
    """The inputs of a step do not fit together (e.g. decisions of another manifest)."""


def default_cache_dir() -> Path:
    """``$THRESHER_CACHE_DIR``, else ``~/.cache/thresher/decoded``."""
    configured = os.environ.get("THRESHER_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "thresher" / "decoded"


def default_k(num_classes: int) -> int:
    """The top-k rule's default k: 5 for 100 classes or more (web data with thousands of
    classes, where the right class is often among a few look-alikes), else 1."""
    return 5 if num_classes >= 100 else 1


def _cache(manifest: Manifest, size: int, cache_dir: Path | None) -> DecodedCache:
    return decoded_cache(manifest.paths, size=size, cache_dir=cache_dir or default_cache_dir())


def _cache_size(recipe: Recipe) -> int:
    return max(recipe.image_size, recipe.eval_image_size)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")


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


def _format_topk(
    ids: NDArray[np.int64], probs: NDArray[np.float32], classes: Sequence[str]
) -> tuple[str, str]:
    return (
        ";".join(classes[int(i)] for i in ids),
        ";".join(f"{float(p):.4f}" for p in probs),
    )


def _write_decisions(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=DECISION_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def read_decisions(
    path: str | Path, manifest: Manifest
) -> tuple[list[dict[str, str]], NDArray[np.bool_]]:
    """Rows of a ``decisions.csv`` in manifest order, and the kept mask ``[N]``.

    Raises:
        StepError: the file's samples are not the manifest's.
    """
    with Path(path).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    by_id = {row["sample_id"]: row for row in rows}
    if len(by_id) != len(manifest) or set(by_id) != set(manifest.sample_ids):
        raise StepError(f"{path} does not describe the samples of this manifest")
    ordered = [by_id[sample_id] for sample_id in manifest.sample_ids]
    kept = np.array([row["status"] == "kept" for row in ordered], dtype=bool)
    return ordered, kept


def run_crossval(
    manifest: Manifest,
    recipe: Recipe,
    out: str | Path,
    *,
    folds: int = 5,
    k: int | None = None,
    top_k: int = 5,
    seed: int = 0,
    cache_dir: Path | None = None,
    device: str | None = None,
    callback: ProgressCallback | None = None,
) -> CrossvalSummary:
    """Out-of-fold predictions, the top-k rule and confident learning on ``manifest``.

    Args:
        folds: K.
        k: the top-k rule's k (default :func:`default_k`).
        top_k: how many classes to record per sample (at least ``k``).
        seed: seeds the fold split.
    """
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    k = k or default_k(manifest.num_classes)
    cache = _cache(manifest, _cache_size(recipe), cache_dir)
    labels = manifest.labels
    fold_array = stratified_folds(labels, folds, seed)
    oof = out_of_fold_predictions(
        recipe,
        cache.images,
        labels,
        fold_array,
        num_classes=manifest.num_classes,
        top_k=max(top_k, k),
        class_names=manifest.classes,
        device=device,
        checkpoint_root=out_dir / "models",
        callback=(lambda _fold: callback) if callback is not None else None,
    )
    kept = topk_keep(labels, oof.probs, k=k)
    ranks = label_rank(labels, oof.probs)
    issues = confident_learning(labels, oof.probs)
    quality = label_quality(labels, oof.probs)
    predictions = oof.predictions
    assert predictions.given_prob is not None
    np.savez_compressed(
        out_dir / "oof.npz",
        probs=oof.probs,
        topk_ids=predictions.topk_ids,
        topk_probs=predictions.topk_probs,
        given_prob=predictions.given_prob,
        folds=fold_array,
        labels=labels,
    )
    rows = []
    for i, sample in enumerate(manifest.samples):
        classes_text, probs_text = _format_topk(
            predictions.topk_ids[i], predictions.topk_probs[i], manifest.classes
        )
        rows.append(
            {
                "sample_id": sample.sample_id,
                "path": str(sample.path),
                "label": manifest.classes[sample.label],
                "fold": int(fold_array[i]),
                "given_prob": f"{float(predictions.given_prob[i]):.4f}",
                "label_rank": int(ranks[i]),
                "topk_classes": classes_text,
                "topk_probs": probs_text,
                "topk_kept": int(kept[i]),
                "cleanlab_issue": int(issues[i]),
                "cleanlab_quality": f"{float(quality[i]):.4f}",
                "status": "kept" if kept[i] else "rejected",
                "pulled_back_round": "",
            }
        )
    _write_decisions(out_dir / "decisions.csv", rows)
    summary = CrossvalSummary(
        samples=len(manifest),
        classes=manifest.num_classes,
        folds=folds,
        k=k,
        kept=int(kept.sum()),
        rejected=int((~kept).sum()),
        cleanlab_issues=int(issues.sum()),
        both_reject=int((~kept & issues).sum()),
        oof_accuracy=float((oof.probs.argmax(axis=1) == labels).mean()),
    )
    _write_json(
        out_dir / "summary.json",
        {
            **summary.__dict__,
            "recipe": recipe.model_dump(mode="json"),
            "classes": list(manifest.classes),
            "fold_history": [[h.to_dict() for h in result.history] for result in oof.fold_results],
        },
    )
    return summary


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
    callback: ProgressCallback | None = None,
) -> list[PullbackRound]:
    """Pull-back rounds: train on the kept set, predict the rejected one, move back the samples
    whose label is now in their top-k; recipes are used in turn; stops early when a round pulls
    back nothing."""
    if not recipes:
        raise StepError("pull-back needs at least one recipe")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, kept = read_decisions(decisions, manifest)
    labels = manifest.labels
    k = k or default_k(manifest.num_classes)
    cache = _cache(manifest, max(_cache_size(r) for r in recipes), cache_dir)
    history: list[PullbackRound] = []
    for number in range(rounds):
        recipe = recipes[number % len(recipes)]
        rejected = np.flatnonzero(~kept)
        if rejected.size == 0:
            break
        result = train_model(
            recipe,
            cache.images,
            labels,
            num_classes=manifest.num_classes,
            indices=np.flatnonzero(kept),
            class_names=manifest.classes,
            device=device,
            checkpoint_dir=out_dir / "models" / f"round-{number + 1}",
            callback=callback,
        )
        predicted = predict(
            result.trained,
            cache.images,
            indices=rejected,
            top_k=1,
            return_probs=True,
            batch_size=recipe.eval_batch_size,
            device=device,
        )
        assert predicted.probs is not None
        outcome = pullback(labels, kept, predicted.probs, k=k, indices=rejected)
        for index in outcome.pulled_back:
            rows[int(index)]["status"] = "kept"
            rows[int(index)]["pulled_back_round"] = str(number + 1)
        history.append(
            PullbackRound(
                number + 1,
                recipe.name,
                int(kept.sum()),
                int(rejected.size),
                int(outcome.pulled_back.size),
            )
        )
        kept = outcome.kept
        if outcome.pulled_back.size == 0:
            break
    _write_decisions(out_dir / "decisions.csv", [dict(row) for row in rows])
    _write_json(
        out_dir / "summary.json",
        {
            "rounds": [r.__dict__ for r in history],
            "kept": int(kept.sum()),
            "rejected": int((~kept).sum()),
        },
    )
    return history


def run_train(
    manifest: Manifest,
    recipe: Recipe,
    out: str | Path,
    *,
    decisions: str | Path | None = None,
    val: Manifest | None = None,
    cache_dir: Path | None = None,
    device: str | None = None,
    resume: bool = True,
    callback: ProgressCallback | None = None,
) -> Path:
    """Train on the manifest (only its kept samples when ``decisions`` is given); returns the
    final checkpoint directory."""
    out_dir = Path(out)
    size = _cache_size(recipe)
    cache = _cache(manifest, size, cache_dir)
    indices = None
    if decisions is not None:
        _, kept = read_decisions(decisions, manifest)
        indices = np.flatnonzero(kept)
    val_set = None
    if val is not None:
        if val.classes != manifest.classes:
            val = _remap(val, manifest.classes)
        val_cache = _cache(val, size, cache_dir)
        val_set = EvalSet(val_cache.images, val.labels)
    result = train_model(
        recipe,
        cache.images,
        manifest.labels,
        num_classes=manifest.num_classes,
        indices=indices,
        class_names=manifest.classes,
        val=val_set,
        device=device,
        checkpoint_dir=out_dir,
        resume=resume,
        callback=callback,
    )
    _write_json(out_dir / "history.json", {"epochs": [h.to_dict() for h in result.history]})
    (out_dir / "recipe.yaml").write_text(dump_recipe(recipe), encoding="utf-8")
    if result.checkpoint is None:
        raise StepError("training wrote no checkpoint")
    return result.checkpoint


def _remap(manifest: Manifest, classes: Sequence[str]) -> Manifest:
    """``manifest`` with labels re-indexed into ``classes``.

    Raises:
        StepError: a label is not among ``classes``.
    """
    index = {name: i for i, name in enumerate(classes)}
    missing = sorted({manifest.classes[s.label] for s in manifest.samples} - set(index))
    if missing:
        raise StepError(f"classes {missing[:10]} are not among the model's classes")
    samples = tuple(replace(s, label=index[manifest.classes[s.label]]) for s in manifest.samples)
    return Manifest(samples, tuple(classes))


def _labels_in(manifest: Manifest, class_names: Sequence[str] | None) -> NDArray[np.int64]:
    """The manifest's labels as indices into ``class_names``; -1 where a class is missing
    there. ``None``: the manifest's own labels."""
    if class_names is None:
        return manifest.labels
    index = {name: i for i, name in enumerate(class_names)}
    mapping = np.array([index.get(name, -1) for name in manifest.classes], dtype=np.int64)
    result: NDArray[np.int64] = mapping[manifest.labels]
    return result


def run_predict(
    manifest: Manifest,
    model_dir: str | Path,
    out: str | Path,
    *,
    top_k: int = 5,
    probs_out: str | Path | None = None,
    cache_dir: Path | None = None,
    device: str | None = None,
) -> int:
    """Predict every sample with a trained model; returns the number of rows written."""
    target = device or ("cuda" if torch.cuda.is_available() else "cpu")
    trained = load_trained_model(model_dir, device=target)
    cache = _cache(manifest, trained.image_size, cache_dir)
    labels = _labels_in(manifest, trained.class_names)
    result = predict(
        trained,
        cache.images,
        labels=labels,
        top_k=top_k,
        return_probs=probs_out is not None,
        device=target,
    )
    names = trained.class_names or [str(i) for i in range(trained.num_classes)]
    assert result.given_prob is not None
    with Path(out).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample_id", "path", "label", "given_prob", "topk_classes", "topk_probs"])
        for i, sample in enumerate(manifest.samples):
            classes_text, probs_text = _format_topk(result.topk_ids[i], result.topk_probs[i], names)
            given = result.given_prob[i]
            writer.writerow(
                [
                    sample.sample_id,
                    str(sample.path),
                    manifest.classes[sample.label],
                    "" if np.isnan(given) else f"{float(given):.4f}",
                    classes_text,
                    probs_text,
                ]
            )
    if probs_out is not None and result.probs is not None:
        np.save(probs_out, result.probs)
    return len(manifest)


def _junk_labels(manifest: Manifest) -> NDArray[np.int64]:
    unknown = set(manifest.classes) - set(JUNK_CLASSES)
    if unknown:
        raise StepError(
            f"junk labels must be {JUNK_CLASSES[1]!r} or {JUNK_CLASSES[0]!r}, "
            f"found {sorted(unknown)}"
        )
    return _labels_in(manifest, JUNK_CLASSES)


def run_junk_train(
    manifest: Manifest,
    recipe: Recipe,
    out: str | Path,
    *,
    cache_dir: Path | None = None,
    device: str | None = None,
    callback: ProgressCallback | None = None,
) -> Path:
    """Train the junk classifier on a manifest labelled ``junk`` / ``normal``; returns the
    checkpoint directory."""
    labels = _junk_labels(manifest)
    cache = _cache(manifest, _cache_size(recipe), cache_dir)
    result = train_junk_classifier(
        recipe, cache.images, labels, device=device, checkpoint_dir=out, callback=callback
    )
    if result.checkpoint is None:
        raise StepError("training wrote no checkpoint")
    return result.checkpoint


def run_junk_score(
    manifest: Manifest,
    model_dir: str | Path,
    out: str | Path,
    *,
    threshold: float = 0.9,
    cache_dir: Path | None = None,
    device: str | None = None,
) -> int:
    """Score every sample with p(junk); writes ``sample_id,path,p_junk,queued`` and returns how
    many reach ``threshold`` (the review queue)."""
    target = device or ("cuda" if torch.cuda.is_available() else "cpu")
    trained = load_trained_model(model_dir, device=target)
    cache = _cache(manifest, trained.image_size, cache_dir)
    scores = score_junk(trained, cache.images, device=target)
    queued = np.zeros(len(manifest), dtype=bool)
    queued[junk_review_queue(scores, threshold=threshold)] = True
    with Path(out).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample_id", "path", "p_junk", "queued"])
        for i, sample in enumerate(manifest.samples):
            writer.writerow(
                [sample.sample_id, str(sample.path), f"{float(scores[i]):.4f}", int(queued[i])]
            )
    return int(queued.sum())
