"""The pipeline tests' fake worker: it runs the queued jobs in this process, with outputs
computed from the toy's truth instead of a model; results, artifacts and completion go through
the jobs service as a worker's would."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.jobs import manifests, uploads, worker_service
from app.jobs.schemas import UploadedFile
from app.pipeline.config import PipelineEnv
from ml.core.protocol.bundles import (
    EmbeddingRows,
    JobManifest,
    LabelIssues,
    ResultChunk,
    encode_embeddings,
    encode_label_issues,
    encode_results,
)
from ml.core.protocol.jobs import (
    EMBEDDINGS_FILE,
    KNN_ISSUES_FILE,
    LABEL_ISSUES_FILE,
    ConfidentLearningSpec,
    EmbedSpec,
    KnnSpec,
    TrainFinalSpec,
    TrainFoldSpec,
    TrainJunkSpec,
    TrainPredictSpec,
    parse_spec,
)
from ml.core.protocol.messages import Complete, Fail, LeaseRequest
from tests.app.pipeline.factories import JOB_CONFIG, Toy

#: A job's outputs: its result chunk (if it has rows), its files by name, its summary.
Outputs = tuple[ResultChunk | None, dict[str, bytes], dict[str, object]]


Ranking = Callable[[int, list[int]], list[int]]


def true_first(toy: Toy) -> Ranking:
    """A perfect model: the true class first (junk: the given one), then the others by id."""

    def ranking(sample_id: int, class_ids: list[int]) -> list[int]:
        best = toy.true.get(sample_id) or toy.given[sample_id]
        return (
            [best, *sorted(c for c in class_ids if c != best)] if best in class_ids else class_ids
        )

    return ranking


def missing_some(toy: Toy, unlucky: set[int]) -> Ranking:
    """:func:`true_first`, except that the ``unlucky`` samples get another class than their
    given one first: a model that rejects right labels."""

    def ranking(sample_id: int, class_ids: list[int]) -> list[int]:
        best = toy.true[sample_id] or toy.given[sample_id]
        if sample_id in unlucky:
            best = next(c for c in class_ids if c != toy.given[sample_id])
        return [best, *sorted(c for c in class_ids if c != best)]

    return ranking


def _upload(data_dir: Path, data: bytes) -> UploadedFile:
    directory = data_dir / uploads.UPLOAD_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{uuid.uuid4().hex}.part"
    path.write_bytes(data)
    return UploadedFile(path=path, sha256=hashlib.sha256(data).hexdigest(), byte_size=len(data))


def _npy(array: np.ndarray) -> bytes:  # type: ignore[type-arg]
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@dataclass
class FakeWorker:
    """Runs queued jobs here: outputs from ``ranking`` (classifiers) and the truth (junk)."""

    factory: sessionmaker[Session]
    env: PipelineEnv
    toy: Toy
    ranking: Ranking | None = None
    junk_score: Callable[[int], float] | None = None
    fail_kinds: set[str] = field(default_factory=set)
    done: list[int] = field(default_factory=list)

    def run_all(self, limit: int = 50) -> list[int]:
        """Runs jobs until none is queued; returns their ids."""
        ran = []
        for _ in range(limit):
            job_id = self.run_one()
            if job_id is None:
                break
            ran.append(job_id)
        return ran

    def run_one(self) -> int | None:
        with transaction(self.factory) as session:
            grant = worker_service.lease_job(
                session,
                token_id=None,
                request=LeaseRequest(worker="fake", kinds=list(_KINDS), device="cpu"),
                config=JOB_CONFIG,
            )
        if grant is None:
            return None
        spec = parse_spec(grant.spec)
        with transaction(self.factory) as session:
            if spec.kind.value in self.fail_kinds:
                worker_service.fail_job(
                    session,
                    token_id=None,
                    job_id=grant.job_id,
                    message=Fail(fence=grant.fence, error="boom", retriable=False),
                    config=JOB_CONFIG,
                )
                return grant.job_id
            chunk, files, summary = self._outputs(spec)
            chunks = rows = 0
            if chunk is not None and len(chunk):
                uploads.store_result_chunk(
                    session,
                    token_id=None,
                    job_id=grant.job_id,
                    fence=grant.fence,
                    index=0,
                    data=encode_results(chunk),
                    data_dir=self.env.data_dir,
                )
                chunks, rows = 1, len(chunk)
            for name, data in files.items():
                uploads.store_artifact(
                    session,
                    token_id=None,
                    job_id=grant.job_id,
                    fence=grant.fence,
                    name=name,
                    upload=_upload(self.env.data_dir, data),
                    claimed_sha256=None,
                    data_dir=self.env.data_dir,
                    config=JOB_CONFIG,
                )
            worker_service.complete_job(
                session,
                token_id=None,
                job_id=grant.job_id,
                message=Complete(fence=grant.fence, chunks=chunks, rows=rows, summary=summary),
            )
        self.done.append(grant.job_id)
        return grant.job_id

    def _manifest(self, sha256: str) -> JobManifest:
        return manifests.load_manifest(self.env.data_dir, sha256)

    def _model_files(self) -> dict[str, bytes]:
        return {
            "model.safetensors": b"weights",
            "model_config.json": b'{"input_size": [3, 32, 32]}',
        }

    def _predict(
        self,
        manifest: JobManifest,
        rows: np.ndarray,
        top_k: int,  # type: ignore[type-arg]
    ) -> tuple[ResultChunk, np.ndarray]:  # type: ignore[type-arg]
        class_ids = [int(c) for c in manifest.class_ids]
        ranking = self.ranking or true_first(self.toy)
        n = rows.shape[0]
        k = min(top_k, len(class_ids))
        probs = np.full((n, len(class_ids)), 0.1 / max(len(class_ids) - 1, 1), np.float32)
        topk = np.zeros((n, k), np.int32)
        topk_probs = np.zeros((n, k), np.float32)
        label_prob = np.zeros(n, np.float32)
        column = {cid: i for i, cid in enumerate(class_ids)}
        for i, row in enumerate(rows.tolist()):
            order = ranking(int(manifest.sample_ids[row]), class_ids)
            probs[i, column[order[0]]] = 0.9
            topk[i] = order[:k]
            topk_probs[i] = [probs[i, column[c]] for c in order[:k]]
            label = int(manifest.labels[row])
            label_prob[i] = probs[i, label] if label >= 0 else np.nan
        chunk = ResultChunk(
            sample_id=manifest.sample_ids[rows].astype(np.int64),
            topk_class_id=topk,
            topk_prob=topk_probs,
            label_prob=label_prob,
        )
        return chunk, probs

    def _outputs(self, spec: object) -> Outputs:
        """What a worker would upload for ``spec``: a result chunk (or none), files, summary."""
        for kind, make in self._MAKERS.items():
            if isinstance(spec, kind):
                return make(self, spec)
        raise AssertionError(f"no fake outputs for {spec!r}")

    def _junk(self, spec: TrainJunkSpec) -> Outputs:
        assert spec.predict is not None
        manifest = self._manifest(spec.predict.sha256)
        score = self.junk_score or (lambda sid: 0.97 if sid in self.toy.junk else 0.02)
        scores = np.asarray([score(int(s)) for s in manifest.sample_ids], np.float32)
        return (
            ResultChunk(manifest.sample_ids.astype(np.int64), junk_score=scores),
            self._model_files(),
            {"history": []},
        )

    def _fold(self, spec: TrainFoldSpec) -> Outputs:
        manifest = self._manifest(spec.train.sha256)
        rows = np.flatnonzero(manifest.folds == spec.fold)
        chunk, probs = self._predict(manifest, rows, spec.top_k)
        files = {
            **self._model_files(),
            "probs.npy": _npy(probs.astype(np.float16)),
            "probs_sample_ids.npy": _npy(chunk.sample_id),
        }
        return chunk, files, {"heldout_accuracy": 0.9, "heldout_samples": int(rows.size)}

    def _train_predict(self, spec: TrainPredictSpec) -> Outputs:
        manifest = self._manifest(spec.predict.sha256)
        chunk, _ = self._predict(manifest, np.arange(len(manifest)), spec.top_k)
        return chunk, self._model_files(), {}

    def _label_issues(
        self,
        ids: np.ndarray,  # type: ignore[type-arg]
        name: str,
        scores: tuple[float, float],
    ) -> Outputs:
        """The samples of ``ids`` whose given label is wrong by the truth, as a detector's
        issues file ``name``; ``scores`` are the (wrong, right) label qualities."""
        wrong = np.asarray(
            [self.toy.true.get(int(s)) not in (None, self.toy.given[int(s)]) for s in ids],
            dtype=bool,
        )
        quality = np.where(wrong, scores[0], scores[1]).astype(np.float32)
        issues = LabelIssues(ids, wrong, quality)
        return None, {name: encode_label_issues(issues)}, {"issues": int(wrong.sum())}

    def _confident(self, spec: ConfidentLearningSpec) -> Outputs:
        manifest = self._manifest(spec.train.sha256)
        ids = manifest.sample_ids.astype(np.int64)
        return self._label_issues(ids, LABEL_ISSUES_FILE, (0.1, 0.9))

    def _knn(self, spec: KnnSpec) -> Outputs:
        manifest = self._manifest(spec.train.sha256)
        ids = manifest.sample_ids[manifest.labels >= 0].astype(np.int64)
        return self._label_issues(ids, KNN_ISSUES_FILE, (0.2, 0.8))

    def _embed(self, spec: EmbedSpec) -> Outputs:
        manifest = self._manifest(spec.samples.sha256)
        rows = EmbeddingRows(
            space=FAKE_SPACE,
            sha256=np.asarray(manifest.sha256, np.uint8),
            features=np.random.default_rng(0).normal(size=(len(manifest), 8)).astype(np.float16),
        )
        summary: dict[str, object] = {"computed": len(manifest), "reused": 0}
        return None, {EMBEDDINGS_FILE: encode_embeddings(rows)}, summary

    def _final(self, spec: TrainFinalSpec) -> Outputs:
        evaluation = {
            "top1": 0.8,
            "top5": 1.0,
            "balanced_accuracy": 0.75,
            "many_shot": None,
            "medium_shot": None,
            "few_shot": 0.75,
            "per_class_accuracy": [0.7, 0.8],
            "num_samples": spec.eval.count if spec.eval else 0,
            "num_classes": spec.train.num_classes,
        }
        summary = {"eval": evaluation, "train_samples": spec.train.count}
        return None, self._model_files(), summary

    _MAKERS: ClassVar[dict[type, Callable[[FakeWorker, Any], Outputs]]] = {
        TrainJunkSpec: _junk,
        TrainFoldSpec: _fold,
        TrainPredictSpec: _train_predict,
        ConfidentLearningSpec: _confident,
        EmbedSpec: _embed,
        KnnSpec: _knn,
        TrainFinalSpec: _final,
    }


_KINDS = (
    "train_junk",
    "train_fold",
    "train_predict",
    "confident_learning",
    "train_final",
    "embed",
    "knn",
)
#: The embedding space the fake worker's embed jobs report.
FAKE_SPACE = {
    "backbone": "efficientnet_lite0",
    "weights_sha256": "0" * 64,
    "image_size": 160,
    "flip": True,
}
