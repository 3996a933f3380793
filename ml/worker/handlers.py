"""One handler per job kind: fetch the job's inputs, run its ML work, return what to publish.

``HANDLERS`` is the registry; :func:`handler_for` names the valid kinds when one is missing.
Each handler resolves the spec's manifests, images and models to local files
(:mod:`ml.worker.inputs`) and hands a :class:`~ml.worker.task.Task` to :func:`execute`, which
runs it in this process on one device, or on several GPUs (or CPU processes) through
``torchrun`` (:mod:`ml.worker.ddp`). ``confident_learning`` trains nothing: it runs cleanlab
here, on the CPU, over the fold jobs' uploaded probabilities.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from ml.cleaning import FilterBy, confident_learning, knn_votes, label_quality, topk_keep
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
    ArtifactRef,
    ConfidentLearningSpec,
    EmbeddingRequest,
    EmbedSpec,
    EvaluateSpec,
    JobKind,
    KnnSpec,
    ManifestRef,
    PredictSpec,
    ProbsRef,
    ScoreJunkSpec,
    TrainFinalSpec,
    TrainFoldSpec,
    TrainJunkSpec,
    TrainPredictSpec,
)
from ml.core.protocol.messages import Progress
from ml.recipes import Recipe
from ml.runtime import JobStopped
from ml.train import Progress as TrainProgress
from ml.worker.compute import run_task
from ml.worker.context import JobContext
from ml.worker.inputs import Inputs
from ml.worker.task import Outcome, SampleSet, Task, resolve_recipe

__all__ = ["HANDLERS", "Handler", "JobRuntime", "UnknownKind", "execute", "handler_for"]

Handler = Callable[[JobContext, Inputs], Outcome]
SpecT = TypeVar("SpecT")


class UnknownKind(LookupError):
    """This worker has no handler for a job kind."""


class JobRuntime:
    """Runs a task in this process: progress goes straight to the job context, and a stop it
    asks for (cancel, shutdown, lost lease) stops the run at the next step boundary."""

    rank = 0
    world = 1

    def __init__(self, context: JobContext) -> None:
        self.context = context
        self.device = context.device

    def training(self, progress: TrainProgress) -> bool:
        return self._report(
            Progress(
                phase="train",
                epoch=progress.epoch + 1,
                epochs=-(-progress.total_steps // max(progress.steps_per_epoch, 1)),
                step=progress.step,
                steps=progress.steps_per_epoch,
                images_per_second=progress.images_per_second,
            )
        )

    def predicting(self, done: int, total: int) -> bool:
        return self._report(Progress(phase="predict", step=done, steps=total))

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.context.epoch_metrics(epoch + 1, values)

    def stop_reason(self) -> str:
        return self.context.stop_reason or "stopped"

    def any_rank(self, flag: bool) -> bool:
        return flag

    def gather(self, parts: Sequence[NDArray[Any]], name: str) -> list[NDArray[Any]] | None:
        raise AssertionError("a single process gathers nothing")

    def _report(self, progress: Progress) -> bool:
        try:
            self.context.report(progress)
        except JobStopped:
            return True
        return False


def execute(context: JobContext, task: Task) -> Outcome:
    """Runs ``task`` here, or with one process per GPU (``--gpus``) / CPU process (``--procs``).
    A head on embeddings always runs here: it trains in seconds on one device."""
    on_embeddings = task.recipe is not None and task.recipe.uses_embeddings
    if context.procs > 1 and not on_embeddings:
        from ml.worker import ddp

        return ddp.launch(context, task)
    return run_task(task, JobRuntime(context))


# --- inputs -------------------------------------------------------------------------------------


def _spec(context: JobContext, kind: type[SpecT]) -> SpecT:
    if not isinstance(context.spec, kind):
        raise TypeError(
            f"job {context.job_id} has a {type(context.spec).__name__}, not {kind.__name__}"
        )
    return cast(SpecT, context.spec)


def _preparing(context: JobContext, what: str) -> None:
    context.report(Progress(phase=what))


def _sample_set(context: JobContext, inputs: Inputs, ref: ManifestRef, size: int) -> SampleSet:
    _preparing(context, "fetching")
    manifest_file = inputs.manifest_file(ref)
    manifest = inputs.manifest(ref)
    _preparing(context, "decoding")
    cache = inputs.decoded(manifest, size)
    return SampleSet(
        manifest=manifest, images=cache.images, manifest_path=manifest_file, images_path=cache.path
    )


def _embedding_progress(context: JobContext) -> Callable[[int, int], bool]:
    """Reports embedding progress; raises JobStopped (after the chunk is stored) on a stop."""

    def report(done: int, total: int) -> bool:
        context.report(Progress(phase="embed", step=done, steps=total))
        return False

    return report


def _embedded_set(
    context: JobContext, inputs: Inputs, ref: ManifestRef, request: EmbeddingRequest
) -> SampleSet:
    """A manifest with its embeddings in place of images (see :meth:`Inputs.embeddings`)."""
    _preparing(context, "fetching")
    manifest_file = inputs.manifest_file(ref)
    manifest = inputs.manifest(ref)
    spec = context.spec
    features, _ = inputs.embeddings(
        manifest,
        request,
        spec.embeddings,
        device=context.device,
        progress=_embedding_progress(context),
    )
    return SampleSet(manifest=manifest, images=features, manifest_path=manifest_file)


def _recipe_set(
    context: JobContext, inputs: Inputs, ref: ManifestRef, recipe: Recipe, size: int
) -> SampleSet:
    """What ``recipe`` trains or predicts on: embeddings for a head, else decoded images."""
    request = EmbeddingRequest.from_recipe(recipe.model_dump(mode="json"))
    if request is not None:
        return _embedded_set(context, inputs, ref, request)
    return _sample_set(context, inputs, ref, size)


def _model_set(context: JobContext, inputs: Inputs, ref: ManifestRef, model_dir: Path) -> SampleSet:
    """What a trained model predicts from: its embedding space's features, or decoded images
    at its input size."""
    config = json.loads((model_dir / "model_config.json").read_text(encoding="utf-8"))
    space = config.get("embedding")
    if isinstance(space, dict):
        request = EmbeddingRequest(
            model={"name": space["backbone"], "pretrained": True},
            image_size=int(space["image_size"]),
            flip=bool(space["flip"]),
        )
        return _embedded_set(context, inputs, ref, request)
    return _sample_set(context, inputs, ref, int(config["input_size"][-1]))


def _train_size(recipe: Recipe) -> int:
    return max(recipe.image_size, recipe.eval_image_size)


def _out_dir(context: JobContext) -> Path:
    directory = context.work_dir / "out"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


# --- the handlers -------------------------------------------------------------------------------


def run_train_junk(context: JobContext, inputs: Inputs) -> Outcome:
    spec = _spec(context, TrainJunkSpec)
    recipe = resolve_recipe(spec.recipe, seed=spec.seed)
    task = Task(spec, _out_dir(context), recipe=recipe)
    task.train = _recipe_set(context, inputs, spec.train, recipe, _train_size(recipe))
    if spec.predict is not None:
        task.predict = _recipe_set(context, inputs, spec.predict, recipe, recipe.eval_image_size)
    return execute(context, task)


def run_score_junk(context: JobContext, inputs: Inputs) -> Outcome:
    spec = _spec(context, ScoreJunkSpec)
    model_dir = inputs.model(spec.model)
    task = Task(spec, _out_dir(context), model_dir=model_dir)
    task.predict = _model_set(context, inputs, spec.predict, model_dir)
    return execute(context, task)


def run_train_fold(context: JobContext, inputs: Inputs) -> Outcome:
    spec = _spec(context, TrainFoldSpec)
    recipe = resolve_recipe(spec.recipe, seed=spec.seed)
    task = Task(spec, _out_dir(context), recipe=recipe)
    task.train = _recipe_set(context, inputs, spec.train, recipe, _train_size(recipe))
    return execute(context, task)


def run_train_predict(context: JobContext, inputs: Inputs) -> Outcome:
    spec = _spec(context, TrainPredictSpec)
    recipe = resolve_recipe(spec.recipe, seed=spec.seed)
    task = Task(spec, _out_dir(context), recipe=recipe)
    task.train = _recipe_set(context, inputs, spec.train, recipe, _train_size(recipe))
    task.predict = _recipe_set(context, inputs, spec.predict, recipe, recipe.eval_image_size)
    return execute(context, task)


def run_predict(context: JobContext, inputs: Inputs) -> Outcome:
    spec = _spec(context, PredictSpec)
    model_dir = inputs.model(spec.model)
    task = Task(spec, _out_dir(context), model_dir=model_dir)
    task.predict = _model_set(context, inputs, spec.predict, model_dir)
    return execute(context, task)


def run_train_final(context: JobContext, inputs: Inputs) -> Outcome:
    spec = _spec(context, TrainFinalSpec)
    recipe = resolve_recipe(spec.recipe, seed=spec.seed)
    task = Task(spec, _out_dir(context), recipe=recipe)
    task.teacher_dirs = [inputs.model(teacher) for teacher in spec.teachers]
    task.train = _recipe_set(context, inputs, spec.train, recipe, _train_size(recipe))
    if spec.rejects != "drop" and spec.probs:
        task.reject_probs = _probs_matrix(
            inputs, spec.probs, task.train.manifest, spec.probs_class_ids
        )
    if spec.eval is not None:
        task.eval = _recipe_set(context, inputs, spec.eval, recipe, recipe.eval_image_size)
    return execute(context, task)


def _probs_matrix(
    inputs: Inputs,
    refs: list[ProbsRef],
    manifest: JobManifest,
    class_ids: list[int] | None = None,
    *,
    strict: bool = False,
) -> NDArray[np.float32]:
    """The uploaded probabilities of ``refs`` as ``[N, C]`` in the rows and classes of
    ``manifest`` (NaN rows: no job predicted the sample). ``class_ids``: the server class of
    each column of the uploaded matrices (default: the manifest's own classes); columns of
    other classes are dropped. ``strict``: a sample outside the manifest is an error."""
    probs = np.full((len(manifest), manifest.num_classes), np.nan, dtype=np.float32)
    row_of = {int(sid): row for row, sid in enumerate(manifest.sample_ids)}
    column_of = {int(cid): i for i, cid in enumerate(manifest.class_ids)}
    source_ids = class_ids if class_ids else list(manifest.class_ids)
    columns = np.asarray([column_of.get(int(cid), -1) for cid in source_ids])
    for ref in refs:
        part = np.load(_artifact(inputs, ref.probs), allow_pickle=False)
        ids = np.load(_artifact(inputs, ref.sample_ids), allow_pickle=False)
        if part.ndim != 2 or part.shape != (ids.shape[0], len(source_ids)):
            raise ValueError(
                f"job {ref.job_id}'s probabilities {part.shape} do not fit "
                f"{ids.shape[0]} samples and {len(source_ids)} classes"
            )
        rows = np.asarray([row_of.get(int(sid), -1) for sid in ids])
        inside = rows >= 0
        if strict and not inside.all():
            raise ValueError(f"job {ref.job_id} has probabilities of samples outside the manifest")
        mapped = np.zeros((int(inside.sum()), manifest.num_classes), dtype=np.float32)
        present = columns >= 0
        mapped[:, columns[present]] = part[inside][:, present]
        probs[rows[inside]] = mapped
    return probs


def run_evaluate(context: JobContext, inputs: Inputs) -> Outcome:
    spec = _spec(context, EvaluateSpec)
    model_dir = inputs.model(spec.model)
    task = Task(spec, _out_dir(context), model_dir=model_dir)
    task.eval = _model_set(context, inputs, spec.eval, model_dir)
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
    _preparing(context, "fetching")
    manifest = inputs.manifest(spec.train)
    probs = _probs_matrix(inputs, spec.probs, manifest, strict=True)
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
    _preparing(context, "fetching")
    manifest = inputs.manifest(spec.samples)
    features, stats = inputs.embeddings(
        manifest,
        spec.embedding,
        spec.embeddings,
        device=context.device,
        progress=_embedding_progress(context),
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
    data = _embedded_set(context, inputs, spec.train, spec.embedding)
    context.report(Progress(phase="knn"))
    labelled = np.flatnonzero(data.labels >= 0)
    labels = data.labels[labelled]
    votes = knn_votes(
        np.asarray(data.images, dtype=np.float32)[labelled],
        labels,
        k=spec.k,
        num_classes=data.manifest.num_classes,
    )
    kept = topk_keep(labels, votes, k=min(spec.top_k, data.manifest.num_classes))
    agreement = votes[np.arange(labels.shape[0]), labels]
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
    ``[N, C]`` (rows: the manifest's samples; columns: its classes). Classes without a labelled
    sample are left out and the rows renormalised, as cleanlab needs every class present."""
    labelled = np.flatnonzero(manifest.labels >= 0)
    matrix = probs[labelled].astype(np.float64)
    if np.isnan(matrix).any():
        missing = int(np.isnan(matrix).any(axis=1).sum())
        raise ValueError(f"{missing} labelled samples have no out-of-fold probabilities")
    labels = manifest.labels[labelled].astype(np.int64)
    present = np.unique(labels)
    n = labelled.shape[0]
    if present.shape[0] < 2:
        flags = np.zeros(n, dtype=bool)
        quality = np.ones(n, dtype=np.float32)
    else:
        matrix = np.clip(matrix[:, present], 1e-12, None)
        matrix /= matrix.sum(axis=1, keepdims=True)
        compact = np.searchsorted(present, labels)
        # One process: a pool forked from this threaded worker could inherit a held lock.
        flags = confident_learning(compact, matrix, filter_by=filter_by, n_jobs=1)
        quality = label_quality(compact, matrix).astype(np.float32)
    return LabelIssues(
        sample_id=manifest.sample_ids[labelled].astype(np.int64),
        is_issue=flags,
        label_quality=np.clip(quality, 0.0, 1.0).astype(np.float32),
    )


def _artifact(inputs: Inputs, artifact: ArtifactRef) -> Path:
    """A job artifact in the worker's cache (by content hash), downloaded on first use."""
    target = inputs.cache_dir / "artifacts" / artifact.sha256[:2] / artifact.sha256
    if not target.is_file() or target.stat().st_size != artifact.byte_size:
        inputs.client.download_artifact(artifact, target)
    return target


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
