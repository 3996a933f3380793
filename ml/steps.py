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
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from ml.cache import DecodedCache, content_hashes, decoded_cache
from ml.checkpoint import TrainedModel
from ml.cleaning import (
    RejectUse,
    confident_learning,
    final_training_targets,
    knn_votes,
    label_quality,
    label_rank,
    pullback,
    topk_keep,
)
from ml.crossval import out_of_fold_predictions
from ml.data import stratified_folds
from ml.embed import recipe_embeddings, space_embeddings
from ml.embeddings import EmbeddingArray
from ml.heads import HeadTargets, TrainedHead, load_model
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
    "knn_agreement",
    "knn_kept",
    "status",
    "pulled_back_round",
)


class StepError(ValueError):
    """The inputs of a step do not fit together (e.g. decisions of another manifest)."""


Rule = Literal["topk", "cleanlab", "knn"]


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


class _Inputs:
    """What a step's models read for the samples of one manifest: decoded images for a recipe
    that trains the whole network, cached embeddings for a recipe with a head (the content
    hashes are computed once per step)."""

    def __init__(self, manifest: Manifest, cache_dir: Path | None, device: str | None) -> None:
        self.manifest = manifest
        self.cache_dir = cache_dir
        self.device = device
        self._hashes: list[str] | None = None

    @property
    def hashes(self) -> list[str]:
        if self._hashes is None:
            self._hashes = content_hashes(self.manifest.paths)
        return self._hashes

    def for_recipe(self, recipe: Recipe) -> NDArray[Any]:
        if recipe.uses_embeddings:
            return recipe_embeddings(recipe, self.manifest.paths, self.hashes, device=self.device)
        cache = decoded_cache(
            self.manifest.paths,
            size=_cache_size(recipe),
            cache_dir=self.cache_dir or default_cache_dir(),
            hashes=self.hashes,
        )
        return cache.images

    def for_model(self, trained: TrainedModel | TrainedHead) -> NDArray[Any]:
        if isinstance(trained, TrainedHead):
            return space_embeddings(trained.space, self.manifest.paths, self.hashes)
        return _cache(self.manifest, trained.image_size, self.cache_dir).images


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
    rule: str = "topk"
    knn_rejected: int | None = None


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
    rule: Rule = "topk",
    knn_k: int = 10,
    cache_dir: Path | None = None,
    device: str | None = None,
    callback: ProgressCallback | None = None,
) -> CrossvalSummary:
    """Out-of-fold predictions, then three detectors side by side: the top-k rule, confident
    learning, and (for a recipe on embeddings) kNN label agreement in embedding space.

    Args:
        folds: K.
        k: the top-k rule's k (default :func:`default_k`); the kNN rule uses it too (kept when
            the label is among the neighbours' ``k`` most voted classes).
        top_k: how many classes to record per sample (at least ``k``).
        seed: seeds the fold split.
        rule: which detector sets ``status``: ``topk``, ``cleanlab`` or ``knn``.
        knn_k: neighbours per sample of the kNN detector.
    """
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    k = k or default_k(manifest.num_classes)
    inputs = _Inputs(manifest, cache_dir, device).for_recipe(recipe)
    labels = manifest.labels
    fold_array = stratified_folds(labels, folds, seed)
    oof = out_of_fold_predictions(
        recipe,
        inputs,
        labels,
        fold_array,
        num_classes=manifest.num_classes,
        top_k=max(top_k, k),
        class_names=manifest.classes,
        device=device,
        checkpoint_root=out_dir / "models",
        callback=(lambda _fold: callback) if callback is not None else None,
    )
    topk_kept = topk_keep(labels, oof.probs, k=k)
    ranks = label_rank(labels, oof.probs)
    issues = confident_learning(labels, oof.probs)
    quality = label_quality(labels, oof.probs)
    knn_kept: NDArray[np.bool_] | None = None
    agreement: NDArray[np.float32] | None = None
    if isinstance(inputs, EmbeddingArray):
        votes = knn_votes(inputs, labels, k=knn_k, num_classes=manifest.num_classes)
        knn_kept = topk_keep(labels, votes, k=k)
        agreement = votes[np.arange(labels.shape[0]), labels]
    elif rule == "knn":
        raise StepError(f"the kNN rule needs a recipe on embeddings; {recipe.name} is not one")
    kept = {"topk": topk_kept, "cleanlab": ~issues, "knn": knn_kept}[rule]
    assert kept is not None
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
                "topk_kept": int(topk_kept[i]),
                "cleanlab_issue": int(issues[i]),
                "cleanlab_quality": f"{float(quality[i]):.4f}",
                "knn_agreement": "" if agreement is None else f"{float(agreement[i]):.4f}",
                "knn_kept": "" if knn_kept is None else int(knn_kept[i]),
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
        both_reject=int((~topk_kept & issues).sum()),
        oof_accuracy=float((oof.probs.argmax(axis=1) == labels).mean()),
        rule=rule,
        knn_rejected=None if knn_kept is None else int((~knn_kept).sum()),
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
    sources = _Inputs(manifest, cache_dir, device)
    history: list[PullbackRound] = []
    for number in range(rounds):
        recipe = recipes[number % len(recipes)]
        rejected = np.flatnonzero(~kept)
        if rejected.size == 0:
            break
        inputs = sources.for_recipe(recipe)
        result = train_model(
            recipe,
            inputs,
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
            inputs,
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
    rejects: RejectUse = "drop",
    oof: str | Path | None = None,
    reject_weight: float = 0.5,
    relabel_threshold: float = 0.9,
    val: Manifest | None = None,
    cache_dir: Path | None = None,
    device: str | None = None,
    resume: bool = True,
    callback: ProgressCallback | None = None,
) -> Path:
    """Train on the manifest; returns the final checkpoint directory.

    With ``decisions``, kept samples train on their labels, and the rejected ones as
    ``rejects`` says (:func:`ml.cleaning.final_training_targets`): dropped, learned from the
    out-of-fold probabilities of ``oof`` (a crossval ``oof.npz``; default: the one beside
    ``decisions``) as soft targets at ``reject_weight``, or relabelled where the out-of-fold
    top class reaches ``relabel_threshold``. Their given labels are never used.
    """
    out_dir = Path(out)
    inputs = _Inputs(manifest, cache_dir, device).for_recipe(recipe)
    labels, indices, targets = manifest.labels, None, None
    sources: dict[str, int] = {"kept": len(manifest)}
    if decisions is not None:
        _, kept = read_decisions(decisions, manifest)
        probs = None if rejects == "drop" else _oof_probs(oof or Path(decisions).parent / "oof.npz")
        plan = final_training_targets(
            manifest.labels,
            kept,
            probs,
            use=rejects,
            weight=reject_weight,
            relabel_threshold=relabel_threshold,
        )
        labels, indices, sources = plan.labels, plan.rows, plan.sources
        if plan.soft is not None:
            targets = HeadTargets(soft=plan.soft, weights=plan.weights)
    val_set = None
    if val is not None:
        if val.classes != manifest.classes:
            val = _remap(val, manifest.classes)
        val_set = EvalSet(_Inputs(val, cache_dir, device).for_recipe(recipe), val.labels)
    result = train_model(
        recipe,
        inputs,
        labels,
        num_classes=manifest.num_classes,
        indices=indices,
        class_names=manifest.classes,
        val=val_set,
        device=device,
        checkpoint_dir=out_dir,
        resume=resume,
        callback=callback,
        targets=targets,
    )
    _write_json(
        out_dir / "history.json",
        {"epochs": [h.to_dict() for h in result.history], "sources": sources},
    )
    (out_dir / "recipe.yaml").write_text(dump_recipe(recipe), encoding="utf-8")
    if result.checkpoint is None:
        raise StepError("training wrote no checkpoint")
    return result.checkpoint


def _oof_probs(path: str | Path) -> NDArray[np.float32]:
    """The out-of-fold probabilities ``[N, C]`` of a crossval ``oof.npz``."""
    file = Path(path)
    if not file.is_file():
        raise StepError(f"{file} not found: give the crossval's oof.npz to use rejected samples")
    with np.load(file, allow_pickle=False) as data:
        probs: NDArray[np.float32] = np.asarray(data["probs"], dtype=np.float32)
    return probs


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
    trained = load_model(model_dir, device=target)
    inputs = _Inputs(manifest, cache_dir, device).for_model(trained)
    labels = _labels_in(manifest, trained.class_names)
    result = predict(
        trained,
        inputs,
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
    inputs = _Inputs(manifest, cache_dir, device).for_recipe(recipe)
    result = train_junk_classifier(
        recipe, inputs, labels, device=device, checkpoint_dir=out, callback=callback
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
    trained = load_model(model_dir, device=target)
    inputs = _Inputs(manifest, cache_dir, device).for_model(trained)
    scores = score_junk(trained, inputs, device=target)
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
