"""Which embeddings a dataset has: the succeeded ``embed`` jobs of the dataset, their manifests
(the images they embedded, by content hash) and their ``embeddings.thrb`` artifacts, per
:class:`~ml.core.protocol.jobs.EmbeddingRequest` key."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from app.jobs import manifests as job_manifests
from app.jobs import repository
from app.models import Job, JobState
from ml.core.protocol.jobs import EMBEDDINGS_FILE, ArtifactRef, EmbeddingRequest, JobKind


def _embed_jobs(session: Session, dataset_id: int, request: EmbeddingRequest) -> list[Job]:
    """Succeeded embed jobs of the dataset for ``request``, newest first."""
    jobs = repository.jobs_of_kind(
        session, kind=JobKind.EMBED, dataset_id=dataset_id, state=JobState.SUCCEEDED
    )
    key = request.key
    return [
        job for job in jobs if EmbeddingRequest.model_validate(job.spec["embedding"]).key == key
    ]


def embedded_digests(
    session: Session, data_dir: Path, dataset_id: int, request: EmbeddingRequest
) -> set[bytes]:
    """SHA-256 digests of the images already embedded for ``request``."""
    digests: set[bytes] = set()
    for job in _embed_jobs(session, dataset_id, request):
        manifest = job_manifests.load_manifest(data_dir, job.spec["samples"]["sha256"])
        digests.update(bytes(row) for row in manifest.sha256)
    return digests


def embedding_artifacts(
    session: Session, dataset_id: int, request: EmbeddingRequest
) -> list[ArtifactRef]:
    """The stored embeddings of ``request`` (newest first), for a job's ``embeddings``."""
    refs = []
    for job in _embed_jobs(session, dataset_id, request):
        artifact = repository.get_artifact_by_name(session, job.id, EMBEDDINGS_FILE)
        if artifact is not None:
            refs.append(repository.artifact_ref(artifact))
    return refs
