"""Embeddings before a step: a round whose recipe trains a head on a pretrained backbone's
embeddings (the CPU defaults) first has its dataset embedded.

The server splits what is not embedded yet into shards of ``embed_shard_size`` images, one
``embed`` job each, so several workers embed in parallel (the round's phase is ``embed`` and its
progress is those jobs'). When they have all succeeded the round starts for real. Each embed job
leaves its rows in its worker's embedding cache and uploads them as an artifact; the round's jobs
name those artifacts, so a worker on another machine fetches them instead of embedding again.

What is embedded is known from the succeeded embed jobs of the dataset: the samples of their
manifests, per :class:`~ml.core.protocol.jobs.EmbeddingRequest` key (backbone, weights, size,
flip). The rows are keyed by the image's content hash, so a re-import, a later round or another
pipeline over the same files reuses them, and only changed images are embedded again. A killed
embed job is retried by the job queue; its worker resumes from the rows it had stored.
"""

from __future__ import annotations

from app.jobs.embeddings import embedded_digests
from app.models import RoundKind
from app.pipeline import sample_repository
from app.pipeline.config import Step, recipe_document
from app.pipeline.stages.context import (
    RoundContext,
    set_phase,
)
from app.pipeline.stages.round_jobs import (
    build_manifest,
    queue_job,
    recipe_for,
)
from ml.core.protocol.jobs import EmbeddingRequest, EmbedSpec

#: The recipe step whose models a round kind trains (kinds not listed train nothing).
STEP_OF_KIND: dict[RoundKind, Step] = {
    RoundKind.JUNK_ITERATION: "junk",
    RoundKind.CROSS_VALIDATION: "fold",
    RoundKind.PULL_BACK: "pullback",
    RoundKind.FINAL_TRAINING: "final",
}


def round_request(ctx: RoundContext) -> EmbeddingRequest | None:
    """The embeddings this round's models read, if they are heads on embeddings."""
    step = STEP_OF_KIND.get(ctx.round.kind)
    if step is None:
        return None
    index = ctx.round.number - 1 if ctx.round.kind is RoundKind.PULL_BACK else 0
    return EmbeddingRequest.from_recipe(recipe_document(recipe_for(ctx, step, index=index)))


def queue_embedding(ctx: RoundContext) -> bool:
    """Queue embed jobs for the dataset's samples this round's models need and nobody has
    embedded yet; returns whether any was queued (the round then waits in phase ``embed``)."""
    request = round_request(ctx)
    if request is None:
        return False
    session = ctx.session
    states = sample_repository.states_where(session, ctx.dataset.id)
    files = sample_repository.sample_files(session, [s.sample_id for s in states])
    done = embedded_digests(session, ctx.env.data_dir, ctx.dataset.id, request)
    missing = sorted(
        {
            bytes.fromhex(digest): sample_id
            for sample_id, (_, digest) in files.items()
            if bytes.fromhex(digest) not in done
        }.values()
    )
    if not missing:
        return False
    size = ctx.config.embed_shard_size
    job_ids = []
    for number, start in enumerate(range(0, len(missing), size)):
        shard = missing[start : start + size]
        samples = build_manifest(ctx, shard, [-1] * len(shard), [], class_names=[])
        job = queue_job(ctx, EmbedSpec(embedding=request, samples=samples), f"embed {number}")
        job_ids.append(job.id)
    set_phase(ctx, "embed", job_ids)
    # Kept apart from the phase, which a failure clears: a retried round still embeds first.
    ctx.round.params = {**ctx.round.params, "embedding_pending": True}
    ctx.stats(
        embedding={
            "backbone": request.model["name"],
            "image_size": request.image_size,
            "flip": request.flip,
            "missing": len(missing),
            "embedded_before": len(files) - len(missing),
            "shards": len(job_ids),
        }
    )
    return True
