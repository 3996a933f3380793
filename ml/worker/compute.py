"""The ML work of each job kind, on inputs already on this machine (no HTTP here).

One function per kind, each taking a :class:`Task` (the spec with its manifests, decoded caches
and model directories resolved to local files) and a :class:`Runtime` (where to report progress,
and this process's place in a multi-process run). The same functions run in the worker process
(one device) and in every rank of a ``torchrun`` launch (several GPUs, :mod:`ml.worker.ddp`):

* training: each rank trains on an equal, class-stratified shard of the training rows with
  ``batch_size / world`` images per step, and gradients are averaged across ranks before every
  optimizer step (a process-group all-reduce), so the ranks keep identical weights; rank 0 saves
  the checkpoints. The stop decision is all-reduced at every step, so all ranks stop together;
* prediction: each rank predicts a strided share of the rows; rank 0 gathers them.

Results use the server's class ids (the manifest's ``class_ids``), most probable first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from ml.checkpoint import TrainedModel
from ml.cleaning import final_training_targets
from ml.core.protocol.bundles import JobManifest, ResultChunk
from ml.core.protocol.jobs import (
    EvaluateSpec,
    JobSpec,
    PredictSpec,
    ScoreJunkSpec,
    TrainFinalSpec,
    TrainFoldSpec,
    TrainJunkSpec,
    TrainPredictSpec,
)
from ml.heads import HeadTargets, TrainedHead, load_model
from ml.junk import JUNK_CLASSES
from ml.metrics import evaluate
from ml.predict import Predictions, predict
from ml.recipes import DistillationConfig, Recipe, load_recipe, recipe_from_dict
from ml.train import Control, EvalSet, TrainResult, train_model
from ml.train import Progress as TrainProgress
from ml.worker.context import JobStopped

__all__ = ["Outcome", "Runtime", "SampleSet", "Task", "resolve_recipe", "run_task"]

log = logging.getLogger(__name__)

#: Rows predicted between two progress reports (and stop checks).
PREDICT_SLICE_BATCHES = 16


class Runtime(Protocol):
    """Where a computation reports, and which share of the work is this process's."""

    rank: int
    world: int
    device: str

    def training(self, progress: TrainProgress) -> bool:
        """Records a training step; True when the run must stop at this step boundary."""

    def predicting(self, done: int, total: int) -> bool:
        """Records prediction progress; True when the run must stop."""

    def epoch(self, epoch: int, values: dict[str, float]) -> None: ...

    def stop_reason(self) -> str: ...

    def any_rank(self, flag: bool) -> bool:
        """True when ``flag`` is true on any rank (a collective: every rank must call it)."""

    def gather(self, parts: Sequence[NDArray[Any]], name: str) -> list[NDArray[Any]] | None:
        """On rank 0: ``parts[i]`` of every rank concatenated in rank order, for each ``i``;
        None on the other ranks (a collective: every rank must call it)."""


@dataclass
class SampleSet:
    """A manifest with its decoded images (uint8 ``[N, H, W, 3]``), or their embeddings (an
    :class:`~ml.embeddings.EmbeddingArray`) for a head. ``labels`` index
    ``class_names``/``class_ids``. The paths (when known) let another process load the same
    set."""

    manifest: JobManifest
    images: NDArray[Any]
    manifest_path: Path | None = None
    images_path: Path | None = None

    @property
    def labels(self) -> NDArray[np.int64]:
        return self.manifest.labels.astype(np.int64)

    @property
    def class_ids(self) -> NDArray[np.int64]:
        return self.manifest.class_ids

    @property
    def class_names(self) -> list[str]:
        return self.manifest.class_names


@dataclass
class Task:
    """A job's spec with every input resolved to local data."""

    spec: JobSpec
    out_dir: Path
    recipe: Recipe | None = None
    train: SampleSet | None = None
    predict: SampleSet | None = None
    eval: SampleSet | None = None
    model_dir: Path | None = None
    teacher_dirs: list[Path] = field(default_factory=list)
    #: Out-of-fold probabilities ``[N, C]`` of the train set's rows (columns: its classes; NaN
    #: rows: none known), for the final training's rejected samples.
    reject_probs: NDArray[np.float32] | None = None


@dataclass
class Outcome:
    """What a job produced: per-sample results, a model checkpoint directory to upload (its
    ``MODEL_FILES``), other files to upload as artifacts, and a JSON summary."""

    results: ResultChunk | None = None
    model_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def resolve_recipe(value: str | dict[str, Any], *, seed: int | None) -> Recipe:
    """A spec's recipe: a shipped recipe's name (or a path) or the recipe itself."""
    recipe = load_recipe(value) if isinstance(value, str) else recipe_from_dict(value)
    return recipe if seed is None else recipe.model_copy(update={"seed": seed})


def run_task(task: Task, runtime: Runtime) -> Outcome:
    spec = task.spec
    if isinstance(spec, TrainJunkSpec):
        return _train_junk(task, spec, runtime)
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


# --- training -----------------------------------------------------------------------------------


def stratified_shard(
    rows: NDArray[np.int64], labels: NDArray[np.int64], rank: int, world: int
) -> NDArray[np.int64]:
    """Rank ``rank``'s share of ``rows``: each class's rows padded (by repeating its first rows)
    to a multiple of ``world`` and dealt in turn, so every rank gets the same number of rows of
    every class (and so the same number of steps, balanced sampling included)."""
    if world == 1:
        return rows
    shares = []
    for value in np.unique(labels[rows]):
        members = rows[labels[rows] == value]
        padding = (-members.shape[0]) % world
        padded = np.concatenate([members, np.resize(members, padding)]) if padding else members
        shares.append(padded[rank::world])
    return np.sort(np.concatenate(shares)).astype(np.int64)


@contextmanager
def _averaged_gradients(world: int) -> Iterator[None]:
    """Averages every optimizer's gradients across the process group before each step."""
    if world == 1:
        yield
        return
    import torch.distributed as dist
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    def average(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads = [
            p.grad
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for grad in grads:
            count = grad.numel()
            grad.copy_(flat[offset : offset + count].view_as(grad))
            offset += count

    handle = register_optimizer_step_pre_hook(average)
    try:
        yield
    finally:
        handle.remove()


def _epoch_values(progress: TrainProgress) -> dict[str, float]:
    metrics = progress.epoch_end
    assert metrics is not None
    values = {
        "train_loss": metrics.train_loss,
        "train_accuracy": metrics.train_accuracy,
        "learning_rate": metrics.learning_rate,
        "images_per_second": metrics.images_per_second,
    }
    if metrics.val is not None:
        values["val_accuracy"] = metrics.val.top1
        values["val_top5_accuracy"] = metrics.val.top5
        values["val_balanced_accuracy"] = metrics.val.balanced_accuracy
    return values


def train(
    recipe: Recipe,
    data: SampleSet,
    rows: NDArray[np.int64],
    labels: NDArray[np.int64],
    *,
    num_classes: int,
    class_names: Sequence[str],
    runtime: Runtime,
    checkpoint_dir: Path,
    val: EvalSet | None = None,
    targets: HeadTargets | None = None,
) -> TrainResult:
    """:func:`ml.train.train_model` on ``rows``, reporting to ``runtime``; on several ranks,
    data-parallel (see the module docstring). Raises JobStopped when told to stop."""
    world, rank = runtime.world, runtime.rank
    if world > 1:
        rows = stratified_shard(rows, labels, rank, world)
        recipe = recipe.model_copy(update={"batch_size": max(1, recipe.batch_size // world)})

    def callback(progress: TrainProgress) -> Control:
        stop = runtime.training(progress)
        if progress.epoch_end is not None:
            runtime.epoch(progress.epoch, _epoch_values(progress))
        if world > 1:
            stop = runtime.any_rank(stop)
        return Control.STOP if stop else Control.CONTINUE

    with _averaged_gradients(world):
        result = train_model(
            recipe,
            data.images,
            labels,
            num_classes=num_classes,
            indices=rows,
            class_names=list(class_names),
            val=val if rank == 0 else None,
            device=runtime.device,
            checkpoint_dir=checkpoint_dir if rank == 0 else None,
            # Several ranks must start from the same step: only a single process resumes.
            resume=world == 1,
            callback=callback,
            targets=targets,
        )
    if result.stopped:
        raise JobStopped(runtime.stop_reason())
    return result


# --- prediction ---------------------------------------------------------------------------------


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def predict_rows(
    trained: TrainedModel | TrainedHead,
    images: NDArray[np.uint8],
    rows: NDArray[np.int64],
    labels: NDArray[np.int64] | None,
    *,
    top_k: int,
    keep_probs: bool,
    batch_size: int,
    runtime: Runtime,
) -> Predictions | None:
    """Predictions of ``images[rows]`` in slices, reporting progress and honouring stops; on
    several ranks each predicts every ``world``-th row and rank 0 gets them all (others: None)."""
    mine = np.arange(runtime.rank, rows.shape[0], runtime.world)
    per_slice = batch_size * PREDICT_SLICE_BATCHES
    # The same number of slices on every rank: each slice ends with a collective stop check.
    largest_share = _ceil_div(int(rows.shape[0]), runtime.world)
    slices = max(1, _ceil_div(largest_share, per_slice))
    ids, probs, given, full = [], [], [], []
    for number in range(slices):
        part = mine[number * per_slice : (number + 1) * per_slice]
        if part.size:
            predicted = predict(
                trained,
                images,
                indices=rows[part],
                labels=None if labels is None else labels[part],
                top_k=top_k,
                return_probs=keep_probs,
                batch_size=batch_size,
                device=runtime.device,
            )
            ids.append(predicted.topk_ids)
            probs.append(predicted.topk_probs)
            if predicted.given_prob is not None:
                given.append(predicted.given_prob)
            if predicted.probs is not None:
                full.append(predicted.probs.astype(np.float16))
        done = min((number + 1) * per_slice * runtime.world, rows.shape[0])
        stop = runtime.predicting(done, int(rows.shape[0]))
        if runtime.world > 1:
            stop = runtime.any_rank(stop)
        if stop:
            raise JobStopped(runtime.stop_reason())
    k = min(top_k, trained.num_classes)
    local: list[NDArray[Any]] = [
        np.concatenate(ids) if ids else np.empty((0, k), np.int64),
        np.concatenate(probs) if probs else np.empty((0, k), np.float32),
        np.concatenate(given) if given else np.empty(0, np.float32),
        np.concatenate(full) if full else np.empty((0, trained.num_classes), np.float16),
        mine,
    ]
    if runtime.world > 1:
        gathered = runtime.gather(local, "predict")
        if gathered is None:
            return None
        order = gathered[4]
        merged = [
            np.empty_like(part, shape=(rows.shape[0], *part.shape[1:])) for part in gathered[:4]
        ]
        for target, part in zip(merged, gathered[:4], strict=True):
            if part.shape[0]:
                target[order] = part
        local = [*merged, np.arange(rows.shape[0])]
    return Predictions(
        topk_ids=local[0],
        topk_probs=local[1],
        given_prob=local[2] if labels is not None else None,
        probs=local[3] if keep_probs else None,
    )


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


def _history(result: TrainResult) -> list[dict[str, Any]]:
    return [json.loads(json.dumps(h.to_dict(), default=float)) for h in result.history]


# --- the kinds ----------------------------------------------------------------------------------


def _junk_labels(data: SampleSet) -> NDArray[np.int64]:
    position = {name: i for i, name in enumerate(JUNK_CLASSES)}
    unknown = sorted(set(data.class_names) - set(position))
    if unknown:
        raise ValueError(f"a junk manifest has the classes {list(JUNK_CLASSES)}, not {unknown}")
    mapping = np.asarray([position[name] for name in data.class_names] + [-1], dtype=np.int64)
    labels = data.labels
    return mapping[np.where(labels >= 0, labels, mapping.shape[0] - 1)]


def _train_junk(task: Task, spec: TrainJunkSpec, runtime: Runtime) -> Outcome:
    assert task.recipe is not None and task.train is not None
    labels = _junk_labels(task.train)
    rows = np.flatnonzero(labels >= 0).astype(np.int64)
    if np.unique(labels[rows]).size < 2:
        raise ValueError("need both junk and normal examples to train the junk classifier")
    result = train(
        task.recipe,
        task.train,
        rows,
        labels,
        num_classes=2,
        class_names=JUNK_CLASSES,
        runtime=runtime,
        checkpoint_dir=task.out_dir / "model",
    )
    outcome = Outcome(model_dir=result.checkpoint, summary={"history": _history(result)})
    if task.predict is not None:
        scores = _junk_scores(result.trained, task.predict, task.recipe.eval_batch_size, runtime)
        if scores is not None:
            outcome.results = ResultChunk(task.predict.manifest.sample_ids, junk_score=scores)
    return outcome


def _junk_scores(
    trained: TrainedModel | TrainedHead, data: SampleSet, batch_size: int, runtime: Runtime
) -> NDArray[np.float32] | None:
    if trained.num_classes != 2:
        raise ValueError(f"a junk model has 2 classes, this one has {trained.num_classes}")
    rows = np.arange(len(data.manifest), dtype=np.int64)
    predicted = predict_rows(
        trained,
        data.images,
        rows,
        None,
        top_k=2,
        keep_probs=False,
        batch_size=batch_size,
        runtime=runtime,
    )
    if predicted is None:
        return None
    junk_column = predicted.topk_ids == JUNK_CLASSES.index("junk")
    scores: NDArray[np.float32] = np.where(junk_column, predicted.topk_probs, 0.0).sum(axis=1)
    return np.clip(scores, 0.0, 1.0).astype(np.float32)


def _score_junk(task: Task, runtime: Runtime) -> Outcome:
    assert task.model_dir is not None and task.predict is not None
    trained = load_model(task.model_dir, device=runtime.device)
    scores = _junk_scores(trained, task.predict, 256, runtime)
    if scores is None:
        return Outcome()
    return Outcome(results=ResultChunk(task.predict.manifest.sample_ids, junk_score=scores))


def _train_fold(task: Task, spec: TrainFoldSpec, runtime: Runtime) -> Outcome:
    """Mirrors :func:`ml.crossval.train_fold` (the recipe's seed offset by the fold)."""
    assert task.recipe is not None and task.train is not None
    data = task.train
    folds = data.manifest.folds.astype(np.int64)
    labels = data.labels
    heldout = np.flatnonzero(folds == spec.fold).astype(np.int64)
    rows = np.flatnonzero((folds != spec.fold) & (labels >= 0)).astype(np.int64)
    if heldout.size == 0:
        raise ValueError(f"fold {spec.fold} is empty")
    recipe = task.recipe.model_copy(update={"seed": task.recipe.seed + spec.fold})
    result = train(
        recipe,
        data,
        rows,
        labels,
        num_classes=data.manifest.num_classes,
        class_names=data.class_names,
        runtime=runtime,
        checkpoint_dir=task.out_dir / "model",
    )
    predicted = predict_rows(
        result.trained,
        data.images,
        heldout,
        labels[heldout],
        top_k=spec.top_k,
        keep_probs=spec.keep_probs,
        batch_size=recipe.eval_batch_size,
        runtime=runtime,
    )
    outcome = Outcome(model_dir=result.checkpoint, summary={"history": _history(result)})
    if predicted is not None:
        sample_ids = data.manifest.sample_ids[heldout]
        outcome.results = _results(sample_ids, predicted, data.class_ids)
        outcome.files = _probs_files(task.out_dir, sample_ids, predicted)
        assert predicted.given_prob is not None
        known = labels[heldout] >= 0
        agree = predicted.topk_ids[known, 0] == labels[heldout][known]
        outcome.summary["heldout_accuracy"] = float(agree.mean()) if agree.size else None
        outcome.summary["heldout_samples"] = int(heldout.size)
    return outcome


def _train_predict(task: Task, spec: TrainPredictSpec, runtime: Runtime) -> Outcome:
    assert task.recipe is not None and task.train is not None and task.predict is not None
    data = task.train
    labels = data.labels
    rows = np.flatnonzero(labels >= 0).astype(np.int64)
    result = train(
        task.recipe,
        data,
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
    outcome = Outcome(model_dir=result.checkpoint, summary={"history": _history(result)})
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


def _final_targets(
    task: Task, spec: TrainFinalSpec
) -> tuple[NDArray[np.int64], NDArray[np.int64], HeadTargets | None, dict[str, int]]:
    """The final training's labels, rows, soft targets and sources: samples with a label train
    on it; the unlabelled (rejected) ones as ``spec.rejects`` says, from their out-of-fold
    probabilities (rows without any probability mass on the final classes are left out)."""
    assert task.train is not None
    labels = task.train.labels
    kept = labels >= 0
    probs = task.reject_probs
    if spec.rejects == "drop" or probs is None:
        rows = np.flatnonzero(kept).astype(np.int64)
        return labels, rows, None, {"kept": int(rows.size), "soft": 0, "relabelled": 0}
    usable = np.flatnonzero(kept | (np.nan_to_num(probs).sum(axis=1) > 0))
    plan = final_training_targets(
        labels[usable],
        kept[usable],
        np.nan_to_num(probs[usable]),
        use=spec.rejects,
        weight=spec.reject_weight,
        relabel_threshold=spec.relabel_threshold,
    )
    train_labels = np.full(labels.shape, -1, dtype=np.int64)
    train_labels[usable] = plan.labels
    targets = None
    if plan.soft is not None:
        soft = np.zeros(probs.shape, dtype=np.float32)
        soft[usable] = plan.soft
        weights = np.ones(labels.shape, dtype=np.float32)
        if plan.weights is not None:
            weights[usable] = plan.weights
        targets = HeadTargets(soft=soft, weights=weights)
    return train_labels, usable[plan.rows].astype(np.int64), targets, plan.sources


def _train_final(task: Task, spec: TrainFinalSpec, runtime: Runtime) -> Outcome:
    assert task.recipe is not None and task.train is not None
    recipe = task.recipe
    if task.teacher_dirs:
        distillation = recipe.distillation or DistillationConfig(teachers=task.teacher_dirs)
        recipe = recipe.model_copy(
            update={"distillation": distillation.model_copy(update={"teachers": task.teacher_dirs})}
        )
    data = task.train
    labels, rows, targets, sources = _final_targets(task, spec)
    val = None
    if task.eval is not None:
        eval_labels = _relabel(task.eval, data.class_ids)
        known = np.flatnonzero(eval_labels >= 0).astype(np.int64)
        if known.size:
            val = EvalSet(task.eval.images, np.maximum(eval_labels, 0), indices=known)
    result = train(
        recipe,
        data,
        rows,
        labels,
        num_classes=data.manifest.num_classes,
        class_names=data.class_names,
        runtime=runtime,
        checkpoint_dir=task.out_dir / "model",
        val=val,
        targets=targets,
    )
    summary: dict[str, Any] = {
        "history": _history(result),
        "train_samples": int(rows.size),
        "sources": sources,
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
