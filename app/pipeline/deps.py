"""404 dependencies of the pipeline routes: the pipeline of the dataset named in the path, or a
404 that says to create it first (and the dataset's own 404s: :mod:`app.datasets.deps`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.datasets.deps import DatasetDep
from app.db import SessionDep
from app.models import Pipeline
from app.pipeline import service


def pipeline_or_404(session: SessionDep, dataset: DatasetDep) -> Pipeline:
    return service.get_pipeline(session, dataset)


PipelineDep = Annotated[Pipeline, Depends(pipeline_or_404)]
