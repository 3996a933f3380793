"""The ML work of each job kind, on inputs already on this machine (no HTTP here).

One function per kind, each taking a :class:`~ml.worker.task.Task` (the spec with its manifests,
decoded caches and model directories resolved to local files) and a
:class:`~ml.runtime.Runtime` (where to report progress, when to stop, and this process's place in
a multi-process run). The same functions run in the worker process (one device) and in every
rank of a ``torchrun`` launch (several GPUs, :mod:`ml.worker.ddp`); the ML steps they call
(:func:`ml.crossval.train_fold`, :mod:`ml.junk`, :func:`ml.final.final_targets`,
:mod:`ml.parallel`) are the ones the ``thresher ml`` CLI calls.

Results use the server's class ids (the manifest's ``class_ids``), most probable first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ml.checkpoint import TrainedModel
from ml.core.protocol.bundles import ResultChunk
from ml.core.protocol.jobs import (
    EvaluateSpec,
    PredictSpec,
    ScoreJunkSpec,
    TrainFinalSpec,
    TrainFoldSpec,
    TrainJunkSpec,
    TrainPredictSpec,
)
from ml.crossval import train_fold
from ml.final import final_targets
from ml.heads import TrainedHead, load_model
from ml.junk import junk_labels, score_junk, train_junk_classifier
from ml.metrics import evaluate
from ml.parallel import predict_rows, train
from ml.predict import Predictions
from ml.recipes import DistillationConfig, Recipe
from ml.runtime import Runtime
from ml.training.interface import EpochSummary, EvalSet
from ml.worker.task import Outcome, SampleSet, Task

__all__ = ["run_task"]


def run_task(task: Task, runtime: Runtime) -> Outcome:
    spec = task.spec
    if isinstance(spec, TrainJunkSpec):
        return _train_junk(task, runtime)
    if isinstance(spec, ScoreJunkSpec):
        return _score_junk(task, runtime)
    if isinstance(spec, TrainFoldSpec):
        return _train_fold(task, spec, runtime)
    if isinstance(spec, TrainPredictSpec):
        return _train_predict(task, spec, runtime)
    if isinstance(spec, PredictSpec):
        return _predict(task, spec, runtime)
    if isinstance(spec, TrainFinalSpec):
        return _train_final(task, spec, runtime)
    assert isinstance(spec, EvaluateSpec)
    return _evaluate(task, spec, runtime)


# --- results ------------------------------------------------------------------------------------


def _results(
    sample_ids: NDArray[np.int64],
    predictions: Predictions,
    output_class_ids: NDArray[np.int64],
) -> ResultChunk:
    return ResultChunk(
        sample_id=np.asarray(sample_ids, np.int64),
        topk_class_id=output_class_ids[predictions.topk_ids].astype(np.int32),
        topk_prob=np.clip(predictions.topk_probs, 0.0, 1.0).astype(np.float32),
        label_prob=None
        if predictions.given_prob is None
        else np.clip(predictions.given_prob, 0.0, 1.0).astype(np.float32),
    )


def _probs_files(
    out_dir: Path, sample_ids: NDArray[np.int64], predictions: Predictions
) -> dict[str, Path]:
    if predictions.probs is None:
        return {}
    np.save(out_dir / "probs.npy", predictions.probs.astype(np.float16))
    np.save(out_dir / "probs_sample_ids.npy", np.asarray(sample_ids, np.int64))
    return {
        "probs.npy": out_dir / "probs.npy",
        "probs_sample_ids.npy": out_dir / "probs_sample_ids.npy",
    }


def _label_map(source_ids: NDArray[np.int64], target_ids: NDArray[np.int64]) -> NDArray[np.int64]:
    """For each class of ``source_ids``, its index in ``target_ids`` (-1 when absent)."""
    index = {int(cid): i for i, cid in enumerate(target_ids)}
    return np.asarray([index.get(int(cid), -1) for cid in source_ids], dtype=np.int64)


def _relabel(data: SampleSet, target_ids: NDArray[np.int64]) -> NDArray[np.int64]:
    """``data``'s labels as indices into ``target_ids`` (-1: no label, or a class not there)."""
    mapping = np.append(_label_map(data.class_ids, target_ids), -1)
    labels = data.labels
    return mapping[np.where(labels >= 0, labels, mapping.shape[0] - 1)]


def _model_classes(trained: TrainedModel | TrainedHead, data: SampleSet) -> NDArray[np.int64]:
    """The server class id of each output of a loaded model, matched by class name."""
    names = trained.class_names or [str(i) for i in range(trained.num_classes)]
    by_name = {name: int(cid) for name, cid in zip(data.class_names, data.class_ids, strict=True)}
    return np.asarray([by_name.get(name, -1) for name in names], dtype=np.int64)


def _history(history: list[EpochSummary]) -> list[dict[str, Any]]:
    return [json.loads(json.dumps(h.to_dict(), default=float)) for h in history]


# --- the kinds ----------------------------------------------------------------------------------


def _train_junk(task: Task, runtime: Runtime) -> Outcome:
    assert task.recipe is not None and task.train is not None
    labels = junk_labels(task.train.class_names, task.train.labels)
    result = train_junk_classifier(
        task.recipe,
        task.train.images,
        labels,
        runtime=runtime,
        checkpoint_dir=task.out_dir / "model",
    )
    outcome = Outcome(model_dir=result.checkpoint, summary={"history": _history(result.history)})
    if task.predict is not None:
        scores = score_junk(
            result.trained,
            task.predict.images,
            batch_size=task.recipe.eval_batch_size,
            runtime=runtime,
        )
        if scores is not None:
            outcome.results = ResultChunk(task.predict.manifest.sample_ids, junk_score=scores)
    return outcome


def _score_junk(task: Task, runtime: Runtime) -> Outcome:
    assert task.model_dir is not None and task.predict is not None
    trained = load_model(task.model_dir, device=runtime.device)
    scores = score_junk(trained, task.predict.images, batch_size=256, runtime=runtime)
    if scores is None:
        return Outcome()
    return Outcome(results=ResultChunk(task.predict.manifest.sample_ids, junk_score=scores))


def _train_fold(task: Task, spec: TrainFoldSpec, runtime: Runtime) -> Outcome:
    assert task.recipe is not None and task.train is not None
    data = task.train
    labels = data.labels
    result = train_fold(
        task.recipe,
        data.images,
        labels,
        data.manifest.folds.astype(np.int64),
        spec.fold,
        num_classes=data.manifest.num_classes,
        class_names=data.class_names,
        top_k=spec.top_k,
        keep_probs=spec.keep_probs,
        runtime=runtime,
        checkpoint_dir=task.out_dir / "model",
    )
    if result is None:
        return Outcome()
    heldout, predicted = result.heldout, result.predictions
    sample_ids = data.manifest.sample_ids[heldout]
    known = labels[heldout] >= 0
    agree = predicted.topk_ids[known, 0] == labels[heldout][known]
    return Outcome(
        model_dir=result.checkpoint,
        results=_results(sample_ids, predicted, data.class_ids),
        files=_probs_files(task.out_dir, sample_ids, predicted),
        summary={
            "history": _history(result.history),
            "heldout_accuracy": float(agree.mean()) if agree.size else None,
            "heldout_samples": int(heldout.size),
        },
    )


def _train_predict(task: Task, spec: TrainPredictSpec, runtime: Runtime) -> Outcome:
    assert task.recipe is not None and task.train is not None and task.predict is not None
    data = task.train
    labels = data.labels
    rows = np.flatnonzero(labels >= 0).astype(np.int64)
    result = train(
        task.recipe,
        data.images,
        rows,
        labels,
        num_classes=data.manifest.num_classes,
        class_names=data.class_names,
        runtime=runtime,
        checkpoint_dir=task.out_dir / "model",
    )
    target = task.predict
    predicted = predict_rows(
        result.trained,
        target.images,
        np.arange(len(target.manifest), dtype=np.int64),
        _relabel(target, data.class_ids),
        top_k=spec.top_k,
        keep_probs=spec.keep_probs,
        batch_size=task.recipe.eval_batch_size,
        runtime=runtime,
    )
    outcome = Outcome(model_dir=result.checkpoint, summary={"history": _history(result.history)})
    if predicted is not None:
        outcome.results = _results(target.manifest.sample_ids, predicted, data.class_ids)
        outcome.files = _probs_files(task.out_dir, target.manifest.sample_ids, predicted)
    return outcome


def _predict(task: Task, spec: PredictSpec, runtime: Runtime) -> Outcome:
    assert task.model_dir is not None and task.predict is not None
    trained = load_model(task.model_dir, device=runtime.device)
    target = task.predict
    outputs = _model_classes(trained, target)
    predicted = predict_rows(
        trained,
        target.images,
        np.arange(len(target.manifest), dtype=np.int64),
        _relabel(target, outputs),
        top_k=spec.top_k,
        keep_probs=spec.keep_probs,
        batch_size=256,
        runtime=runtime,
    )
    if predicted is None:
        return Outcome()
    return Outcome(
        results=_results(target.manifest.sample_ids, predicted, outputs),
        files=_probs_files(task.out_dir, target.manifest.sample_ids, predicted),
    )


def _with_teachers(recipe: Recipe, teachers: list[Path]) -> Recipe:
    """``recipe`` distilling from ``teachers`` (the fold models), when there are any."""
    if not teachers:
        return recipe
    distillation = recipe.distillation or DistillationConfig(teachers=teachers)
    return recipe.model_copy(
        update={"distillation": distillation.model_copy(update={"teachers": teachers})}
    )


def _eval_set(data: SampleSet, class_ids: NDArray[np.int64]) -> EvalSet | None:
    """The rows of ``data`` whose class is among ``class_ids``, labelled by position there."""
    labels = _relabel(data, class_ids)
    known = np.flatnonzero(labels >= 0).astype(np.int64)
    return EvalSet(data.images, np.maximum(labels, 0), indices=known) if known.size else None


def _train_final(task: Task, spec: TrainFinalSpec, runtime: Runtime) -> Outcome:
    assert task.recipe is not None and task.train is not None
    data = task.train
    plan = final_targets(
        data.labels,
        data.labels >= 0,
        task.reject_probs,
        rejects=spec.rejects,
        weight=spec.reject_weight,
        relabel_threshold=spec.relabel_threshold,
    )
    result = train(
        _with_teachers(task.recipe, task.teacher_dirs),
        data.images,
        plan.rows,
        plan.labels,
        num_classes=data.manifest.num_classes,
        class_names=data.class_names,
        runtime=runtime,
        checkpoint_dir=task.out_dir / "model",
        val=None if task.eval is None else _eval_set(task.eval, data.class_ids),
        targets=plan.targets,
    )
    summary: dict[str, Any] = {
        "history": _history(result.history),
        "train_samples": int(plan.rows.size),
        "sources": plan.sources,
        "rejects": spec.rejects,
    }
    last = result.history[-1] if result.history else None
    if last is not None and last.val is not None:
        summary["eval"] = last.val.to_dict()
    return Outcome(model_dir=result.checkpoint, summary=summary)


def _evaluate(task: Task, spec: EvaluateSpec, runtime: Runtime) -> Outcome:
    assert task.model_dir is not None and task.eval is not None
    trained = load_model(task.model_dir, device=runtime.device)
    target = task.eval
    outputs = _model_classes(trained, target)
    labels = _relabel(target, outputs)
    rows = np.arange(len(target.manifest), dtype=np.int64)
    known = np.flatnonzero(labels >= 0)
    if known.size == 0:
        raise ValueError("none of the evaluation samples has a class the model knows")
    predicted = predict_rows(
        trained,
        target.images,
        rows,
        labels,
        top_k=spec.top_k,
        keep_probs=True,
        batch_size=256,
        runtime=runtime,
    )
    if predicted is None:
        return Outcome()
    assert predicted.probs is not None
    counts = None
    if task.train is not None:
        train_labels = _relabel(task.train, outputs)
        counts = np.bincount(train_labels[train_labels >= 0], minlength=trained.num_classes)
    scores = predicted.probs[known].astype(np.float32)
    report = evaluate(scores, labels[known], train_class_counts=counts)
    return Outcome(
        results=_results(target.manifest.sample_ids, predicted, outputs),
        summary={"eval": report.to_dict(), "unknown_labels": int(rows.size - known.size)},
    )
