"""Factories of the pipeline tests: a toy dataset whose truth is known, a worker that runs the
queued jobs in this process with outputs computed from that truth (no model: results, artifacts
and completion go through the jobs service as a worker's would), and annotators who answer the
review queue from the truth through the review service."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.jobs import manifests, uploads, worker_service
from app.jobs.config import JobSettings
from app.jobs.schemas import UploadedFile
from app.models import (
    Dataset,
    ImportFormat,
    JobState,
    LabelClass,
    PipelineEvent,
    ReviewTask,
    Sample,
    TaskKind,
    User,
    Verdict,
)
from app.pipeline.config import PipelineEnv
from app.review.records import DecisionInput
from app.review.service import decisions as decision_service
from app.review.service import leases as lease_service
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
from ml.core.protocol.messages import Complete, LeaseRequest

JOB_CONFIG = JobSettings(lease_seconds=600, retry_backoff_seconds=0, max_attempts=2)
#: Recipes that train the whole network, so a step queues its jobs at once: the stage tests are
#: about the stages. The embedding phase and the kNN detector of the default recipes (heads on
#: embeddings) have their own tests (test_embedding.py).
WHOLE_NETWORK_RECIPES = {
    "junk_recipe": "cifar-small",
    "fold_recipe": "cifar-small",
    "pullback_recipes": ["cifar-pullback-a", "cifar-pullback-b"],
    "final_recipe": "cifar-small",
}
CLASSES = ("ant", "bee", "cat")


@dataclass
class Toy:
    """A dataset as an import leaves it, with the truth of every sample: its true class
    (``None``: junk) and whether its image is not RGB."""

    dataset_id: int
    root: Path
    classes: dict[str, int]
    given: dict[int, int] = field(default_factory=dict)
    true: dict[int, int | None] = field(default_factory=dict)
    non_rgb: set[int] = field(default_factory=set)
    duplicates: set[int] = field(default_factory=set)
    paths: dict[int, str] = field(default_factory=dict)

    @property
    def junk(self) -> set[int]:
        return {sid for sid, cls in self.true.items() if cls is None}

    @property
    def noisy(self) -> set[int]:
        return {sid for sid, cls in self.true.items() if cls is not None and cls != self.given[sid]}


def make_toy(
    session: Session,
    root: Path,
    *,
    per_class: int = 20,
    noisy_every: int = 5,
    junk_every: int = 10,
    classes: tuple[str, ...] = CLASSES,
    name: str = "toy",
    duplicates: int = 0,
) -> Toy:
    """``per_class`` samples per class; every ``noisy_every``-th has a wrong given label,
    every ``junk_every``-th (offset by 3) is junk; a third of the junk and a few normal images
    are grayscale. ``duplicates`` extra samples copy the first ones' files."""
    dataset = Dataset(
        name=name, root=str(root), source=str(root), source_format=ImportFormat.IMAGEFOLDER
    )
    session.add(dataset)
    session.flush()
    class_ids = {}
    for class_name in classes:
        label = LabelClass(dataset_id=dataset.id, name=class_name, sample_count=per_class)
        session.add(label)
        session.flush()
        class_ids[class_name] = label.id
    toy = Toy(dataset_id=dataset.id, root=root, classes=class_ids)
    ids = list(class_ids.values())
    number = 0
    first_shas: list[tuple[int, str]] = []
    for position, class_name in enumerate(classes):
        for i in range(per_class):
            number += 1
            true: int | None = class_ids[class_name]
            given = class_ids[class_name]
            if number % noisy_every == 0:
                given = ids[(position + 1) % len(ids)]
            junk = number % junk_every == 3
            if junk:
                true = None
            mode = "L" if (junk and number % 3 == 0) or number % 17 == 0 else "RGB"
            sha = hashlib.sha256(f"{dataset.id}-{number}".encode()).hexdigest()
            sample = Sample(
                dataset_id=dataset.id,
                class_id=given,
                path=f"{class_name}/{i:03d}.png",
                sha256=sha,
                byte_size=100,
                width=32,
                height=32,
                mode=mode,
                channels=1 if mode == "L" else 3,
                image_format="PNG",
            )
            session.add(sample)
            session.flush()
            toy.given[sample.id] = given
            toy.paths[sample.id] = sample.path
            toy.true[sample.id] = true
            if mode != "RGB":
                toy.non_rgb.add(sample.id)
            if len(first_shas) < duplicates:
                first_shas.append((sample.id, sha))
    for original, sha in first_shas:
        copy = Sample(
            dataset_id=dataset.id,
            class_id=toy.given[original],
            path=f"copies/{original}.png",
            sha256=sha,
            byte_size=100,
            width=32,
            height=32,
            mode="RGB",
            channels=3,
            image_format="PNG",
            duplicate_of_id=original,
        )
        session.add(copy)
        session.flush()
        toy.duplicates.add(copy.id)
    # An unusable file: it never enters the pipeline.
    session.add(
        Sample(
            dataset_id=dataset.id,
            class_id=ids[0],
            path="broken.png",
            error="truncated",
            error_detail="cut short",
        )
    )
    session.flush()
    return toy


# --- the fake worker ----------------------------------------------------------------------------


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
                from ml.core.protocol.messages import Fail

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

    def _outputs(
        self, spec: object
    ) -> tuple[ResultChunk | None, dict[str, bytes], dict[str, object]]:
        if isinstance(spec, TrainJunkSpec):
            assert spec.predict is not None
            manifest = self._manifest(spec.predict.sha256)
            score = self.junk_score or (lambda sid: 0.97 if sid in self.toy.junk else 0.02)
            scores = np.asarray([score(int(s)) for s in manifest.sample_ids], np.float32)
            return (
                ResultChunk(manifest.sample_ids.astype(np.int64), junk_score=scores),
                self._model_files(),
                {"history": []},
            )
        if isinstance(spec, TrainFoldSpec):
            manifest = self._manifest(spec.train.sha256)
            rows = np.flatnonzero(manifest.folds == spec.fold)
            chunk, probs = self._predict(manifest, rows, spec.top_k)
            files = {
                **self._model_files(),
                "probs.npy": _npy(probs.astype(np.float16)),
                "probs_sample_ids.npy": _npy(chunk.sample_id),
            }
            return chunk, files, {"heldout_accuracy": 0.9, "heldout_samples": int(rows.size)}
        if isinstance(spec, TrainPredictSpec):
            manifest = self._manifest(spec.predict.sha256)
            chunk, _ = self._predict(manifest, np.arange(len(manifest)), spec.top_k)
            return chunk, self._model_files(), {}
        if isinstance(spec, ConfidentLearningSpec):
            manifest = self._manifest(spec.train.sha256)
            ids = manifest.sample_ids.astype(np.int64)
            wrong = np.asarray(
                [self.toy.true.get(int(s)) not in (None, self.toy.given[int(s)]) for s in ids],
                dtype=bool,
            )
            issues = LabelIssues(ids, wrong, np.where(wrong, 0.1, 0.9).astype(np.float32))
            return (
                None,
                {LABEL_ISSUES_FILE: encode_label_issues(issues)},
                {"issues": int(wrong.sum())},
            )
        if isinstance(spec, EmbedSpec):
            manifest = self._manifest(spec.samples.sha256)
            rows = EmbeddingRows(
                space=FAKE_SPACE,
                sha256=np.asarray(manifest.sha256, np.uint8),
                features=np.random.default_rng(0)
                .normal(size=(len(manifest), 8))
                .astype(np.float16),
            )
            summary = {"computed": len(manifest), "reused": 0}
            return None, {EMBEDDINGS_FILE: encode_embeddings(rows)}, summary
        if isinstance(spec, KnnSpec):
            manifest = self._manifest(spec.train.sha256)
            ids = manifest.sample_ids[manifest.labels >= 0].astype(np.int64)
            wrong = np.asarray(
                [self.toy.true.get(int(s)) not in (None, self.toy.given[int(s)]) for s in ids],
                dtype=bool,
            )
            issues = LabelIssues(ids, wrong, np.where(wrong, 0.2, 0.8).astype(np.float32))
            return (
                None,
                {KNN_ISSUES_FILE: encode_label_issues(issues)},
                {"issues": int(wrong.sum())},
            )
        if isinstance(spec, TrainFinalSpec):
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
            return (
                None,
                self._model_files(),
                {"eval": evaluation, "train_samples": spec.train.count},
            )
        raise AssertionError(f"no fake outputs for {spec!r}")


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


# --- fake annotators ----------------------------------------------------------------------------


@dataclass
class FakeAnnotator:
    """Answers every open task of the dataset from the truth (or from ``answer``)."""

    factory: sessionmaker[Session]
    toy: Toy
    user: User
    answer: Callable[[TaskKind, int | None, int | None], tuple[Verdict, int | None]] | None = None
    decided: list[int] = field(default_factory=list)

    def truth(
        self, kind: TaskKind, sample_id: int | None, class_id: int | None
    ) -> tuple[Verdict, int | None]:
        if kind is TaskKind.CLASS_CHECK:
            return Verdict.KEEP, None
        assert sample_id is not None
        true = self.toy.true[sample_id]
        if kind in (TaskKind.JUNK_CHECK, TaskKind.JUNK_AUDIT):
            return (Verdict.JUNK if true is None else Verdict.NOT_JUNK), None
        if true is None:
            return Verdict.JUNK, None
        if true == self.toy.given[sample_id]:
            return Verdict.ACCEPT, None
        return Verdict.RELABEL, true

    def review_all(self, kinds: tuple[TaskKind, ...] = tuple(TaskKind)) -> int:
        total = 0
        for kind in kinds:
            while True:
                with transaction(self.factory) as session:
                    tasks = lease_service.lease_tasks(
                        session, user=self.user, kind=kind, dataset_id=self.toy.dataset_id, n=50
                    )
                    if not tasks:
                        break
                    decisions = []
                    for task in tasks:
                        verdict, class_id = (self.answer or self.truth)(
                            kind, task.sample_id, task.class_id
                        )
                        decisions.append(
                            DecisionInput(
                                task_id=task.id,
                                lease_version=task.lease_version,
                                verdict=verdict,
                                class_id=class_id,
                                idempotency_key=uuid.uuid4().hex,
                            )
                        )
                    records = decision_service.decide(session, user=self.user, decisions=decisions)
                    self.decided.extend(r.id for r in records)
                    total += len(records)
        return total


# --- counting -----------------------------------------------------------------------------------


def count_tasks(session: Session, dataset_id: int, **where: object) -> int:
    query = select(func.count()).select_from(ReviewTask).where(ReviewTask.dataset_id == dataset_id)
    for name, value in where.items():
        query = query.where(getattr(ReviewTask, name) == value)
    return int(session.scalar(query) or 0)


def count_events(session: Session, dataset_id: int, **where: object) -> int:
    query = (
        select(func.count())
        .select_from(PipelineEvent)
        .where(PipelineEvent.dataset_id == dataset_id)
    )
    for name, value in where.items():
        query = query.where(getattr(PipelineEvent, name) == value)
    return int(session.scalar(query) or 0)


def job_states(session: Session, dataset_id: int) -> dict[int, JobState]:
    from app.models import Job

    rows = session.execute(select(Job.id, Job.state).where(Job.dataset_id == dataset_id))
    return {int(job_id): state for job_id, state in rows}
