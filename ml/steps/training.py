"""The model steps: ``train`` (final training on the kept samples), ``predict``, and the junk
classifier's ``junk_train`` / ``junk_score``, on a manifest, in this process."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ml.core.cleaning.targets import RejectUse
from ml.final import FinalPlan, final_targets
from ml.heads import load_model
from ml.junk import junk_labels, junk_review_queue, score_junk, train_junk_classifier
from ml.manifest import Manifest
from ml.parallel import train
from ml.predict import Predictions, predict
from ml.recipes import Recipe, dump_recipe
from ml.runtime import LocalRuntime
from ml.steps.files import StepError, StepInputs, format_topk, read_decisions, write_json
from ml.training.interface import EvalSet, TrainingCallback

__all__ = ["run_junk_score", "run_junk_train", "run_predict", "run_train"]


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
    callback: TrainingCallback | None = None,
) -> Path:
    """Train on the manifest; returns the final checkpoint directory.

    With ``decisions``, kept samples train on their labels, and the rejected ones as
    ``rejects`` says (:func:`ml.final.final_targets`): dropped, learned from the out-of-fold
    probabilities of ``oof`` (a crossval ``oof.npz``; default: the one beside ``decisions``) as
    soft targets at ``reject_weight``, or relabelled where the out-of-fold top class reaches
    ``relabel_threshold``. Their given labels are never used.
    """
    out_dir = Path(out)
    inputs = StepInputs(manifest, cache_dir, device).for_recipe(recipe)
    plan = FinalPlan(manifest.labels, np.arange(len(manifest)), None, {"kept": len(manifest)})
    if decisions is not None:
        _, kept = read_decisions(decisions, manifest)
        probs = None if rejects == "drop" else _oof_probs(oof or Path(decisions).parent / "oof.npz")
        plan = final_targets(
            manifest.labels,
            kept,
            probs,
            rejects=rejects,
            weight=reject_weight,
            relabel_threshold=relabel_threshold,
        )
    result = train(
        recipe,
        inputs,
        plan.rows,
        plan.labels,
        num_classes=manifest.num_classes,
        class_names=manifest.classes,
        runtime=LocalRuntime(device, callback),
        checkpoint_dir=out_dir,
        val=None if val is None else _val_set(val, manifest.classes, recipe, cache_dir, device),
        targets=plan.targets,
        resume=resume,
    )
    write_json(
        out_dir / "history.json",
        {"epochs": [h.to_dict() for h in result.history], "sources": plan.sources},
    )
    (out_dir / "recipe.yaml").write_text(dump_recipe(recipe), encoding="utf-8")
    if result.checkpoint is None:
        raise StepError("training wrote no checkpoint")
    return result.checkpoint


def _val_set(
    val: Manifest,
    classes: Sequence[str],
    recipe: Recipe,
    cache_dir: Path | None,
    device: str | None,
) -> EvalSet:
    """The validation manifest's inputs for ``recipe``, labelled in the training's ``classes``."""
    if val.classes != tuple(classes):
        val = _remap(val, classes)
    return EvalSet(StepInputs(val, cache_dir, device).for_recipe(recipe), val.labels)


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
    target = LocalRuntime(device).device
    trained = load_model(model_dir, device=target)
    inputs = StepInputs(manifest, cache_dir, device).for_model(trained)
    result = predict(
        trained,
        inputs,
        labels=_labels_in(manifest, trained.class_names),
        top_k=top_k,
        return_probs=probs_out is not None,
        device=target,
    )
    names = trained.class_names or [str(i) for i in range(trained.num_classes)]
    _write_predictions(Path(out), manifest, result, names)
    if probs_out is not None and result.probs is not None:
        np.save(probs_out, result.probs)
    return len(manifest)


def _write_predictions(
    path: Path, manifest: Manifest, result: Predictions, names: Sequence[str]
) -> None:
    assert result.given_prob is not None
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample_id", "path", "label", "given_prob", "topk_classes", "topk_probs"])
        for i, sample in enumerate(manifest.samples):
            classes_text, probs_text = format_topk(result.topk_ids[i], result.topk_probs[i], names)
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


def run_junk_train(
    manifest: Manifest,
    recipe: Recipe,
    out: str | Path,
    *,
    cache_dir: Path | None = None,
    device: str | None = None,
    callback: TrainingCallback | None = None,
) -> Path:
    """Train the junk classifier on a manifest labelled ``junk`` / ``normal``; returns the
    checkpoint directory."""
    try:
        labels = junk_labels(manifest.classes, manifest.labels)
    except ValueError as error:
        raise StepError(str(error)) from error
    result = train_junk_classifier(
        recipe,
        StepInputs(manifest, cache_dir, device).for_recipe(recipe),
        labels,
        runtime=LocalRuntime(device, callback),
        checkpoint_dir=out,
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
    runtime = LocalRuntime(device)
    trained = load_model(model_dir, device=runtime.device)
    inputs = StepInputs(manifest, cache_dir, device).for_model(trained)
    scores = score_junk(trained, inputs, runtime=runtime)
    assert scores is not None
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
