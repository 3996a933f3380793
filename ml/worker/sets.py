"""A job's inputs as sample sets: its manifests with their decoded images, or their embeddings
for a head on embeddings, and the probabilities earlier jobs uploaded, all resolved to local
files through :class:`~ml.worker.inputs.Inputs` (reporting the phases to the job's context)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ml.core.protocol.bundles import JobManifest
from ml.core.protocol.jobs import ArtifactRef, EmbeddingRequest, ManifestRef, ProbsRef
from ml.core.protocol.messages import Progress
from ml.recipes import Recipe
from ml.worker.context import JobContext
from ml.worker.inputs import Inputs
from ml.worker.task import SampleSet

__all__ = [
    "embedded_set",
    "embedding_progress",
    "model_set",
    "preparing",
    "probs_matrix",
    "recipe_set",
    "sample_set",
]


def preparing(context: JobContext, what: str) -> None:
    context.report(Progress(phase=what))


def sample_set(context: JobContext, inputs: Inputs, ref: ManifestRef, size: int) -> SampleSet:
    preparing(context, "fetching")
    manifest_file = inputs.manifest_file(ref)
    manifest = inputs.manifest(ref)
    preparing(context, "decoding")
    cache = inputs.decoded(manifest, size)
    return SampleSet(
        manifest=manifest, images=cache.images, manifest_path=manifest_file, images_path=cache.path
    )


def embedding_progress(context: JobContext) -> Callable[[int, int], bool]:
    """Reports embedding progress; raises JobStopped (after the chunk is stored) on a stop."""

    def report(done: int, total: int) -> bool:
        context.report(Progress(phase="embed", step=done, steps=total))
        return False

    return report


def embedded_set(
    context: JobContext, inputs: Inputs, ref: ManifestRef, request: EmbeddingRequest
) -> SampleSet:
    """A manifest with its embeddings in place of images (see :meth:`Inputs.embeddings`)."""
    preparing(context, "fetching")
    manifest_file = inputs.manifest_file(ref)
    manifest = inputs.manifest(ref)
    spec = context.spec
    features, _ = inputs.embeddings(
        manifest,
        request,
        spec.embeddings,
        device=context.device,
        progress=embedding_progress(context),
    )
    return SampleSet(manifest=manifest, images=features, manifest_path=manifest_file)


def recipe_set(
    context: JobContext, inputs: Inputs, ref: ManifestRef, recipe: Recipe, size: int
) -> SampleSet:
    """What ``recipe`` trains or predicts on: embeddings for a head, else decoded images."""
    request = EmbeddingRequest.from_recipe(recipe.model_dump(mode="json"))
    if request is not None:
        return embedded_set(context, inputs, ref, request)
    return sample_set(context, inputs, ref, size)


def model_set(context: JobContext, inputs: Inputs, ref: ManifestRef, model_dir: Path) -> SampleSet:
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
        return embedded_set(context, inputs, ref, request)
    return sample_set(context, inputs, ref, int(config["input_size"][-1]))


def probs_matrix(
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


def _artifact(inputs: Inputs, artifact: ArtifactRef) -> Path:
    """A job artifact in the worker's cache (by content hash), downloaded on first use."""
    target = inputs.cache_dir / "artifacts" / artifact.sha256[:2] / artifact.sha256
    if not target.is_file() or target.stat().st_size != artifact.byte_size:
        inputs.client.download_artifact(artifact, target)
    return target
