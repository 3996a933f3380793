"""Every query the media routes make."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Dataset, Sample


def get_sample_and_root(session: Session, sample_id: int) -> tuple[Sample, str] | None:
    """The sample and its dataset's root directory, or None when there is no such sample."""
    row = session.execute(
        select(Sample, Dataset.root)
        .join(Dataset, Dataset.id == Sample.dataset_id)
        .where(Sample.id == sample_id)
    ).first()
    return None if row is None else (row[0], row[1])
