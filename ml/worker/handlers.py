"""One handler per job kind: fetch the job's inputs, run its ML work, return what to publish.

``HANDLERS`` is the registry; :func:`handler_for` names the valid kinds when one is missing.
Each handler resolves the spec's manifests, images and models to local sample sets
(:mod:`ml.worker.sets`) and hands a :class:`~ml.worker.task.Task` to
:func:`~ml.worker.execution.execute`, which runs it in this process on one device, or on several
GPUs (or CPU processes) through ``torchrun`` (:mod:`ml.worker.ddp`). ``confident_learning``,
``knn`` and ``embed`` train nothing: they run here, cleanlab and kNN on the CPU over uploaded
probabilities or cached embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from ml.core.cleaning.confident import FilterBy, label_issues_among_present
from ml.core.cleaning.knn import knn_verdicts
from ml.core.protocol.bundles import (
    EmbeddingRows,
    JobManifest,
    LabelIssues,
    encode_embeddings,
    encode_label_issues,
)
from ml.core.protocol.jobs import (
    EMBEDDINGS_FILE,
    KNN_ISSUES_FILE,
    LABEL_ISSUES_FILE,
    ConfidentLearningSpec,
    EmbedSpec,
    EvaluateSpec,
    JobKind,
    KnnSpec,
    ModelRef,
    PredictSpec,
    ScoreJunkSpec,
    TrainFinalSpec,
    TrainFoldSpec,
    TrainJunkSpec,
    TrainPredictSpec,
)
from ml.core.protocol.messages import Progress
from ml.recipes import Recipe
from ml.worker.context import JobContext
from ml.worker.execution import execute
from ml.worker.inputs import Inputs
from ml.worker.sets import (
    embedded_set,
    embedding_progress,
    model_set,
    preparing,
    probs_matrix,
    recipe_set,
)
from ml.worker.task import Outcome, SampleSet, Task, resolve_recipe

__all__ = ["HANDLERS", "Handler", "UnknownKind", "handler_for", "label_issues"]

Handler = Callable[[JobContext, Inputs], Outcome]
SpecT = TypeVar("SpecT")


class UnknownKind(LookupError):
    """This worker has no handler for a job kind."""


# --- inputs -------------------------------------------------------------------------------------


def _spec(context: JobContext, kind: type[SpecT]) -> SpecT:
    if not isinstance(context.spec, kind):
        raise TypeError(
            f"job {context.job_id} has a {type(context.spec).__name__}, not {kind.__name__}"
        )
    return cast(SpecT, context.spec)


def _train_size(recipe: Recipe) -> int:
    return max(recipe.image_size, recipe.eval_image_size)


def _out_dir(context: JobContext) -> Path:
    directory = context.work_dir / "out"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _training_task(
    context: JobContext,
    inputs: Inputs,
    spec: TrainJunkSpec | TrainFoldSpec | TrainPredictSpec | TrainFinalSpec,
    *,
    teachers: Sequence[ModelRef] = (),
) -> tuple[Task, Recipe, SampleSet]:
    """A training job's task, its recipe and train set: the spec's recipe (its seed applied),
    the teachers' checkpoints fetched, then the train set at the training image size."""
    recipe = resolve_recipe(spec.recipe, seed=spec.seed)
    task = Task(spec, _out_dir(context), recipe=recipe)
    task.teacher_dirs = [inputs.model(teacher) for teacher in teachers]
    task.train = recipe_set(context, inputs, spec.train, recipe, _train_size(recipe))
    return task, recipe, task.train


def _prediction_task(
    context: JobContext, inputs: Inputs, spec: ScoreJunkSpec | PredictSpec
) -> Task:
    """A job that predicts with a trained model: its checkpoint fetched, then the predict set
    as that model reads it."""
    model_dir = inputs.model(spec.model)
    task = Task(spec, _out_dir(context), model_dir=model_dir)
    task.predict = model_set(context, inputs, spec.predict, model_dir)
    return task


# --- the handlers -------------------------------------------------------------------------------


def run_train_junk(context: JobContext, inputs: Inputs) -> Outcome:
    spec = _spec(context, TrainJunkSpec)
    task, recipe, _ = _training_task(context, inputs, spec)
    if spec.predict is not None:
        task.predict = recipe_set(context, inputs, spec.predict, recipe, recipe.eval_image_size)
    return execute(context, task)


def run_score_junk(context: JobContext, inputs: Inputs) -> Outcome:
    return execute(context, _prediction_task(context, inputs, _spec(context, ScoreJunkSpec)))


def run_train_fold(context: JobContext, inputs: Inputs) -> Outcome:
    spec = _spec(context, TrainFoldSpec)
    task, _, _ = _training_task(context, inputs, spec)
    return execute(context, task)


def run_train_predict(context: JobContext, inputs: Inputs) -> Outcome:
    spec = _spec(context, TrainPredictSpec)
    task, recipe, _ = _training_task(context, inputs, spec)
    task.predict = recipe_set(context, inputs, spec.predict, recipe, recipe.eval_image_size)
    return execute(context, task)


def run_predict(context: JobContext, inputs: Inputs) -> Outcome:
    return execute(context, _prediction_task(context, inputs, _spec(context, PredictSpec)))


def run_train_final(context: JobContext, inputs: Inputs) -> Outcome:
    spec = _spec(context, TrainFinalSpec)
    task, recipe, train = _training_task(context, inputs, spec, teachers=spec.teachers)
    if spec.rejects != "drop" and spec.probs:
        task.reject_probs = probs_matrix(inputs, spec.probs, train.manifest, spec.probs_class_ids)
    if spec.eval is not None:
        task.eval = recipe_set(context, inputs, spec.eval, recipe, recipe.eval_image_size)
    return execute(context, task)


def run_evaluate(context: JobContext, inputs: Inputs) -> Outcome:
    spec = _spec(context, EvaluateSpec)
    model_dir = inputs.model(spec.model)
    task = Task(spec, _out_dir(context), model_dir=model_dir)
    task.eval = model_set(context, inputs, spec.eval, model_dir)
    if spec.train is not None:
        # Only the labels are needed (class counts for many/medium/few-shot accuracy).
        task.train = SampleSet(
            manifest=inputs.manifest(spec.train),
            images=task.eval.images[:0],
            manifest_path=inputs.manifest_file(spec.train),
        )
    return execute(context, task)


def run_confident_learning(context: JobContext, inputs: Inputs) -> Outcome:
    spec = _spec(context, ConfidentLearningSpec)
    preparing(context, "fetching")
    manifest = inputs.manifest(spec.train)
    probs = probs_matrix(inputs, spec.probs, manifest, strict=True)
    context.report(Progress(phase="cleanlab"))
    issues = label_issues(manifest, probs, filter_by=spec.filter_by)
    path = _out_dir(context) / LABEL_ISSUES_FILE
    path.write_bytes(encode_label_issues(issues))
    return Outcome(
        files={LABEL_ISSUES_FILE: path},
        summary={
            "samples": len(issues),
            "issues": int(issues.is_issue.sum()),
            "filter_by": spec.filter_by,
        },
    )


def run_embed(context: JobContext, inputs: Inputs) -> Outcome:
    """Embed a shard into this worker's cache and upload the shard's rows for other workers."""
    spec = _spec(context, EmbedSpec)
    preparing(context, "fetching")
    manifest = inputs.manifest(spec.samples)
    features, stats = inputs.embeddings(
        manifest,
        spec.embedding,
        spec.embeddings,
        device=context.device,
        progress=embedding_progress(context),
    )
    path = _out_dir(context) / EMBEDDINGS_FILE
    path.write_bytes(
        encode_embeddings(
            EmbeddingRows(
                space=features.space.to_dict(),
                sha256=np.asarray(manifest.sha256, dtype=np.uint8),
                features=np.asarray(features, dtype=np.float16),
            )
        )
    )
    return Outcome(
        files={EMBEDDINGS_FILE: path},
        summary={
            "samples": len(manifest),
            "computed": stats.computed,
            "reused": stats.reused,
            "images_per_second": round(stats.images_per_second, 2),
            "space": features.space.key,
        },
    )


def run_knn(context: JobContext, inputs: Inputs) -> Outcome:
    """kNN label agreement of the labelled samples of a manifest, in embedding space."""
    spec = _spec(context, KnnSpec)
    data = embedded_set(context, inputs, spec.train, spec.embedding)
    context.report(Progress(phase="knn"))
    labelled = np.flatnonzero(data.labels >= 0)
    kept, agreement = knn_verdicts(
        np.asarray(data.images, dtype=np.float32)[labelled],
        data.labels[labelled],
        k=spec.k,
        top_k=spec.top_k,
        num_classes=data.manifest.num_classes,
    )
    issues = LabelIssues(
        sample_id=data.manifest.sample_ids[labelled].astype(np.int64),
        is_issue=~kept,
        label_quality=np.clip(agreement, 0.0, 1.0).astype(np.float32),
    )
    path = _out_dir(context) / KNN_ISSUES_FILE
    path.write_bytes(encode_label_issues(issues))
    return Outcome(
        files={KNN_ISSUES_FILE: path},
        summary={"samples": len(issues), "issues": int((~kept).sum()), "k": spec.k},
    )


def label_issues(
    manifest: JobManifest, probs: NDArray[np.float32], *, filter_by: FilterBy
) -> LabelIssues:
    """cleanlab's verdicts on the labelled samples of ``manifest`` from out-of-fold ``probs``
    ``[N, C]`` (rows: the manifest's samples; columns: its classes), by
    :func:`~ml.core.cleaning.confident.label_issues_among_present`."""
    labelled = np.flatnonzero(manifest.labels >= 0)
    matrix = probs[labelled].astype(np.float64)
    if np.isnan(matrix).any():
        missing = int(np.isnan(matrix).any(axis=1).sum())
        raise ValueError(f"{missing} labelled samples have no out-of-fold probabilities")
    # One process: a pool forked from this threaded worker could inherit a held lock.
    flags, quality = label_issues_among_present(
        manifest.labels[labelled], matrix, filter_by=filter_by, n_jobs=1
    )
    return LabelIssues(
        sample_id=manifest.sample_ids[labelled].astype(np.int64),
        is_issue=flags,
        label_quality=quality,
    )


HANDLERS: dict[str, Handler] = {
    JobKind.TRAIN_JUNK: run_train_junk,
    JobKind.SCORE_JUNK: run_score_junk,
    JobKind.TRAIN_FOLD: run_train_fold,
    JobKind.TRAIN_PREDICT: run_train_predict,
    JobKind.PREDICT: run_predict,
    JobKind.TRAIN_FINAL: run_train_final,
    JobKind.EVALUATE: run_evaluate,
    JobKind.CONFIDENT_LEARNING: run_confident_learning,
    JobKind.EMBED: run_embed,
    JobKind.KNN: run_knn,
}


def handler_for(kind: str) -> Handler:
    try:
        return HANDLERS[kind]
    except KeyError:
        valid = ", ".join(sorted(HANDLERS))
        raise UnknownKind(f"no handler for job kind {kind!r}; valid kinds: {valid}") from None
