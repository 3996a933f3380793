"""A round's jobs: the recipe a step trains with, the manifests (samples, labels, folds) its
jobs read, and queueing them under the round, with the stored embeddings their models read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from app.jobs import manifests as job_manifests
from app.jobs import service as jobs
from app.jobs.embeddings import embedding_artifacts
from app.models import Job
from app.pipeline import repository, sample_repository
from app.pipeline.config import Step, recipe_document, recipes_for, spec_recipe
from app.pipeline.sample_repository import SampleState
from app.pipeline.stages.context import RoundContext
from ml.core.protocol.bundles import JobManifest
from ml.core.protocol.jobs import (
    EmbeddingRequest,
    JobSpec,
    KnnSpec,
    ManifestRef,
)


def recipe_for(ctx: RoundContext, step: Step, *, index: int = 0) -> str | dict[str, Any]:
    """The recipe a job of this step trains with (the step's own, else the config's, else the
    default), as the spec carries it."""
    if ctx.params.recipe is not None:
        choice = ctx.params.recipe
    else:
        choices = recipes_for(ctx.config, step)
        choice = choices[index % len(choices)]
    return spec_recipe(choice, ctx.config.recipe_overrides)


def build_manifest(
    ctx: RoundContext,
    sample_ids: Sequence[int],
    labels: Sequence[int],
    class_ids: Sequence[int],
    *,
    class_names: Sequence[str] | None = None,
    folds: Sequence[int] | np.ndarray[Any, Any] | None = None,
) -> ManifestRef:
    """Stores the manifest of ``sample_ids`` with ``labels`` (indices into ``class_ids``, -1 for
    none) and returns its reference."""
    files = sample_repository.sample_files(ctx.session, sample_ids)
    names = class_names
    if names is None:
        known = sample_repository.class_names(ctx.session, ctx.dataset.id)
        names = [known[cid] for cid in class_ids]
    n = len(sample_ids)
    digests = b"".join(bytes.fromhex(files[sid][1]) for sid in sample_ids)
    manifest = JobManifest(
        root=ctx.dataset.root,
        sample_ids=np.asarray(sample_ids, dtype=np.int64),
        labels=np.asarray(labels, dtype=np.int32),
        folds=np.full(n, -1, dtype=np.int8) if folds is None else np.asarray(folds, np.int8),
        sha256=np.frombuffer(digests, dtype=np.uint8).reshape(n, 32),
        paths=[files[sid][0] for sid in sample_ids],
        class_ids=np.asarray(class_ids, dtype=np.int64),
        class_names=list(names),
        meta={"dataset_id": ctx.dataset.id, "round_id": ctx.round.id},
    )
    return job_manifests.store_manifest(ctx.env.data_dir, manifest)


def labelled_manifest(
    ctx: RoundContext, states: Sequence[SampleState], class_ids: Sequence[int], **kwargs: Any
) -> ManifestRef:
    index = {cid: i for i, cid in enumerate(class_ids)}
    return build_manifest(
        ctx,
        [s.sample_id for s in states],
        [index.get(s.label_class_id, -1) for s in states],
        class_ids,
        **kwargs,
    )


def queue_job(ctx: RoundContext, spec: JobSpec, role: str) -> Job:
    """Queues a job of this round. A job whose models read embeddings names the dataset's
    stored embedding artifacts, for a worker that lacks the rows in its own cache."""
    request = _embedding_request(spec)
    if request is not None:
        refs = embedding_artifacts(ctx.session, ctx.dataset.id, request)
        spec = spec.model_copy(update={"embeddings": refs})
    job = jobs.create_job(
        ctx.session,
        spec=spec,
        config=ctx.env.jobs,
        dataset_id=ctx.dataset.id,
        user=ctx.user,
    )
    repository.add_round_job(ctx.session, round_id=ctx.round.id, job_id=job.id, role=role)
    return job


def _embedding_request(spec: JobSpec) -> EmbeddingRequest | None:
    if isinstance(spec, KnnSpec):
        return spec.embedding
    recipe = getattr(spec, "recipe", None)
    if recipe is None:
        return None
    return EmbeddingRequest.from_recipe(recipe_document(recipe))
