"""Factories for the review tests: datasets with real little image files, users, tasks."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.models import Dataset, ImportFormat, LabelClass, Role, Sample, TaskKind, User
from app.review.records import LeasedTask, Suggestion, TaskItem
from app.review.service import leases as lease_service
from app.review.service import tasks as task_service


@dataclass(frozen=True)
class Pets:
    """A dataset as an import leaves it: classes and usable samples, in id order, and each
    sample's SHA-256."""

    dataset_id: int
    root: Path
    classes: dict[str, int]
    samples: dict[str, list[int]] = field(default_factory=dict)
    sha256: dict[int, str] = field(default_factory=dict)

    @property
    def all_samples(self) -> list[int]:
        return sorted(i for ids in self.samples.values() for i in ids)

    def class_of(self, sample_id: int) -> int:
        for name, ids in self.samples.items():
            if sample_id in ids:
                return self.classes[name]
        raise KeyError(sample_id)


def image_file(path: Path, index: int) -> tuple[int, str]:
    """Writes a small JPEG whose colour depends on ``index``; returns its size and SHA-256."""
    colour = ((index * 47) % 256, (index * 91) % 256, (index * 13) % 256)
    buffer = io.BytesIO()
    Image.new("RGB", (40 + index % 7, 32), colour).save(buffer, "JPEG")
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data), hashlib.sha256(data).hexdigest()


def make_pets(
    session: Session,
    root: Path,
    *,
    name: str = "pets",
    class_sizes: dict[str, int] | None = None,
    files: bool = True,
) -> Pets:
    """A dataset with ``class_sizes`` usable samples per class (files written under ``root``
    when ``files``, so thumbnails work), committed by the caller."""
    class_sizes = class_sizes or {"cat": 6, "dog": 6, "bird": 4}
    dataset = Dataset(
        name=name, root=str(root), source=str(root), source_format=ImportFormat.IMAGEFOLDER
    )
    session.add(dataset)
    session.flush()
    classes = {}
    for class_name, size in class_sizes.items():
        label = LabelClass(dataset_id=dataset.id, name=class_name, sample_count=size)
        session.add(label)
        session.flush()
        classes[class_name] = label.id
    samples: dict[str, list[int]] = {}
    digests: dict[int, str] = {}
    number = 0
    for class_name, size in class_sizes.items():
        for _ in range(size):
            number += 1
            relative = f"{class_name}/{number}.jpg"
            if files:
                size_bytes, sha = image_file(root / relative, number)
            else:
                size_bytes, sha = 1000, f"{dataset.id:08x}{number:056x}"
            sample = Sample(
                dataset_id=dataset.id,
                class_id=classes[class_name],
                path=relative,
                sha256=sha,
                byte_size=size_bytes,
                width=40,
                height=32,
                mode="RGB",
                channels=3,
                image_format="JPEG",
            )
            session.add(sample)
            session.flush()
            samples.setdefault(class_name, []).append(sample.id)
            digests[sample.id] = sha
    return Pets(dataset_id=dataset.id, root=root, classes=classes, samples=samples, sha256=digests)


def make_user(session: Session, username: str, role: Role = Role.ANNOTATOR) -> User:
    user = User(username=username, role=role, password_hash="not-a-hash")
    session.add(user)
    session.flush()
    return user


def queue(
    session: Session,
    pets: Pets,
    kind: TaskKind,
    subjects: Sequence[int],
    *,
    source: str = "test round",
    priorities: Sequence[float] | None = None,
    suggestions: Sequence[Sequence[tuple[int, float]]] | None = None,
) -> list[int]:
    """Queues one task per subject (sample ids, or class ids for class_check); returns ids."""
    dataset = session.get_one(Dataset, pets.dataset_id)
    items = []
    for index, subject in enumerate(subjects):
        items.append(
            TaskItem(
                sample_id=None if kind.is_about_a_class else subject,
                class_id=subject if kind.is_about_a_class else None,
                priority=priorities[index] if priorities else 0.0,
                suggestions=tuple(
                    Suggestion(class_id=c, probability=p) for c, p in suggestions[index]
                )
                if suggestions
                else (),
            )
        )
    created = task_service.create_tasks(
        session, dataset=dataset, kind=kind, items=items, source=source
    )
    return created.task_ids


def lease(
    factory: sessionmaker[Session], user: User, kind: TaskKind, n: int = 1, **options: object
) -> list[LeasedTask]:
    """Leases in a transaction of its own, as one request would."""
    with transaction(factory) as session:
        return lease_service.lease_tasks(session, user=user, kind=kind, n=n, **options)  # type: ignore[arg-type]
