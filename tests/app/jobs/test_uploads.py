"""Workers' result uploads on both engines: chunks stored once, replaced, validated, read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session

from app.jobs import service
from app.jobs.uploads import MalformedUpload
from ml.core.protocol.bundles import ResultChunk, encode_results
from ml.core.protocol.jobs import ArtifactRef, ModelRef, ScoreJunkSpec
from tests.app.jobs.factories import CONFIG, chunk_bytes, lease, new_job, store_manifest, upload

MODEL = ModelRef(
    job_id=1,
    files=[ArtifactRef(id=1, job_id=1, name="model.safetensors", sha256="ab" * 32, byte_size=1)],
)


def test_reuploading_a_chunk_is_a_no_op(session: Session, data_dir: Path) -> None:
    job = new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None
    data = chunk_bytes([1, 2, 3])
    assert not upload(session, job, grant.fence, 0, data, data_dir)
    assert upload(session, job, grant.fence, 0, data, data_dir)
    assert service.job_detail(session, job).result_rows == 3


def test_a_chunk_sent_again_with_other_rows_replaces_its_rows(
    session: Session, data_dir: Path
) -> None:
    job = new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None
    upload(session, job, grant.fence, 0, chunk_bytes([1, 2, 3]), data_dir)
    upload(session, job, grant.fence, 0, chunk_bytes([2, 3, 4], scale=0.9), data_dir)
    results = service.job_results(session, job)
    assert results.sample_id.tolist() == [2, 3, 4]
    assert results.label_prob is not None
    assert results.label_prob.tolist() == pytest.approx([0.9, 0.9, 0.9])


def test_samples_sent_in_two_chunks_are_stored_once(session: Session, data_dir: Path) -> None:
    job = new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None
    upload(session, job, grant.fence, 0, chunk_bytes([1, 2, 3]), data_dir)
    upload(session, job, grant.fence, 1, chunk_bytes([3, 4], scale=0.8), data_dir)
    results = service.job_results(session, job)
    assert results.sample_id.tolist() == [1, 2, 3, 4]
    assert results.label_prob is not None
    assert results.label_prob.tolist() == pytest.approx([0.5, 0.5, 0.8, 0.8])


def test_results_read_back_as_arrays(session: Session, data_dir: Path) -> None:
    job = new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None
    upload(session, job, grant.fence, 1, chunk_bytes([9, 10]), data_dir)
    upload(session, job, grant.fence, 0, chunk_bytes([1, 5]), data_dir)
    results = service.job_results(session, job)
    assert results.sample_id.tolist() == [1, 5, 9, 10]
    assert results.topk_class_id is not None and results.topk_prob is not None
    assert results.topk_class_id.tolist() == [[1, 2], [5, 6], [2, 3], [3, 4]]
    np.testing.assert_allclose(results.topk_prob, 0.25)
    assert results.junk_score is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (chunk_bytes([1, 2])[:-4], "truncated"),
        (b"garbage", "truncated|magic"),
        (chunk_bytes([1, 99]), "not in the job's result set"),
        (chunk_bytes([1, 2], k=1), "k=1"),
    ],
)
def test_malformed_results_store_nothing(
    session: Session, data_dir: Path, data: bytes, reason: str
) -> None:
    job = new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None
    upload(session, job, grant.fence, 0, chunk_bytes([3, 4]), data_dir)
    with pytest.raises(MalformedUpload, match=reason):
        upload(session, job, grant.fence, 1, data, data_dir)
    session.rollback()
    assert service.job_results(session, job).sample_id.tolist() == [3, 4]
    assert service.job_detail(session, job).result_chunks == 1


def test_junk_scores_and_unknown_label_probabilities_round_trip(
    session: Session, data_dir: Path
) -> None:
    ref = store_manifest(data_dir, 4)
    job = service.create_job(session, spec=ScoreJunkSpec(model=MODEL, predict=ref), config=CONFIG)
    session.commit()
    grant = lease(session)
    assert grant is not None
    scores = np.array([0.0, 0.25, 0.5, 1.0], dtype=np.float32)
    data = encode_results(ResultChunk(np.arange(1, 5), junk_score=scores))
    upload(session, job, grant.fence, 0, data, data_dir)
    results = service.job_results(session, job)
    assert results.topk_class_id is None and results.label_prob is None
    assert results.junk_score is not None and results.junk_score.tolist() == scores.tolist()

    other = new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None and grant.job_id == other.id
    label = np.array([np.nan, 0.5], dtype=np.float32)
    topk = np.zeros((2, 2), dtype=np.int32)
    data = encode_results(
        ResultChunk(np.array([1, 2]), topk, np.full((2, 2), 0.5, np.float32), label)
    )
    upload(session, other, grant.fence, 0, data, data_dir)
    back = service.job_results(session, other).label_prob
    assert back is not None and np.isnan(back[0]) and back[1] == 0.5
