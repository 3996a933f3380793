"""What the label and class review pages show of a class: its name and size, samples a human
confirmed in it, and samples of it (with their files' SHA-256, which the image URLs name).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import literal_column, select, union_all
from sqlalchemy.orm import Session

from app.datasets.repository import usable_sample
from app.models import LabelClass, ReviewDecision, Sample
from app.review.records import SampleImage
from app.review.repository.tables import not_withdrawn

_D = ReviewDecision


def class_names(session: Session, ids: Collection[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = session.execute(select(LabelClass.id, LabelClass.name).where(LabelClass.id.in_(ids)))
    return {class_id: name for class_id, name in rows}


def class_sizes(session: Session, ids: Collection[int]) -> dict[int, tuple[str, int]]:
    """Name and usable sample count (as of the last import) of each class."""
    if not ids:
        return {}
    rows = session.execute(
        select(LabelClass.id, LabelClass.name, LabelClass.sample_count).where(
            LabelClass.id.in_(ids)
        )
    )
    return {class_id: (name, count) for class_id, name, count in rows}


def confirmed_samples(
    session: Session, class_ids: Sequence[int], *, per_class: int
) -> dict[int, list[SampleImage]]:
    """Up to ``per_class`` samples per class that a human confirmed in it (accept or relabel,
    not undone), most recent first."""
    if not class_ids:
        return {}
    parts = [
        select(
            _D.class_id.label("class_id"),
            _D.sample_id.label("sample_id"),
            Sample.sha256.label("sha256"),
        )
        .outerjoin(Sample, Sample.id == _D.sample_id)
        .where(
            _D.class_id == class_id,
            # Literals, as in the partial index's predicate, so PostgreSQL can match them.
            _D.kind == literal_column("'label_check'"),
            _D.verdict.in_([literal_column("'accept'"), literal_column("'relabel'")]),
            not_withdrawn(),
        )
        .order_by(_D.id.desc())
        .limit(per_class)
        .subquery()
        for class_id in class_ids
    ]
    return _grouped(session, parts)


def class_samples(
    session: Session,
    class_ids: Sequence[int],
    *,
    per_class: int,
    exclude: Collection[int] = (),
) -> dict[int, list[SampleImage]]:
    """Up to ``per_class`` usable samples of each class, in id order."""
    if not class_ids:
        return {}
    parts = []
    for class_id in class_ids:
        query = select(
            Sample.class_id.label("class_id"),
            Sample.id.label("sample_id"),
            Sample.sha256.label("sha256"),
        ).where(Sample.class_id == class_id, usable_sample())
        if exclude:
            query = query.where(Sample.id.not_in(list(exclude)))
        parts.append(query.order_by(Sample.id).limit(per_class).subquery())
    return _grouped(session, parts)


def _grouped(session: Session, parts: Sequence[Any]) -> dict[int, list[SampleImage]]:
    statement = union_all(
        *(select(part.c.class_id, part.c.sample_id, part.c.sha256) for part in parts)
    )
    grouped: dict[int, list[SampleImage]] = {}
    for class_id, sample_id, sha256 in session.execute(statement):
        grouped.setdefault(class_id, []).append(SampleImage(sample_id, sha256))
    return grouped
