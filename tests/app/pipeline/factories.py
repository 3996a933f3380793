"""Factories of the pipeline tests: a toy dataset whose truth is known, and annotators who
answer the review queue from the truth through the review service. The worker that runs the
queued jobs from that truth is in fake_worker.py."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.jobs.config import JobSettings
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
from app.review.records import DecisionInput
from app.review.service import decisions as decision_service
from app.review.service import leases as lease_service

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
    shas: list[tuple[int, str]] = []
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
            sample = _sample(session, toy, given, f"{class_name}/{i:03d}.png", sha, mode=mode)
            toy.given[sample.id] = given
            toy.paths[sample.id] = sample.path
            toy.true[sample.id] = true
            if mode != "RGB":
                toy.non_rgb.add(sample.id)
            shas.append((sample.id, sha))
    for original, sha in shas[:duplicates]:
        path = f"copies/{original}.png"
        copy = _sample(session, toy, toy.given[original], path, sha, duplicate_of=original)
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


def _sample(
    session: Session,
    toy: Toy,
    class_id: int,
    path: str,
    sha256: str,
    *,
    mode: str = "RGB",
    duplicate_of: int | None = None,
) -> Sample:
    """A usable 32×32 PNG sample of the toy's dataset, flushed."""
    sample = Sample(
        dataset_id=toy.dataset_id,
        class_id=class_id,
        path=path,
        sha256=sha256,
        byte_size=100,
        width=32,
        height=32,
        mode=mode,
        channels=1 if mode == "L" else 3,
        image_format="PNG",
        duplicate_of_id=duplicate_of,
    )
    session.add(sample)
    session.flush()
    return sample


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
