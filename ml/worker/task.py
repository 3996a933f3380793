"""A job's inputs resolved to local data (:class:`Task`), and what it produced (:class:`Outcome`).

The handlers (:mod:`ml.worker.handlers`) build a :class:`Task` from a job's spec; the compute
layer (:mod:`ml.worker.compute`) turns it into an :class:`Outcome` in this process or in every
rank of a ``torchrun`` launch (:mod:`ml.worker.ddp`, which writes both to files between them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ml.core.protocol.bundles import JobManifest, ResultChunk
from ml.core.protocol.jobs import JobSpec
from ml.recipes import Recipe, load_recipe, recipe_from_dict

__all__ = ["Outcome", "SampleSet", "Task", "resolve_recipe"]


@dataclass
class SampleSet:
    """A manifest with its decoded images (uint8 ``[N, H, W, 3]``), or their embeddings (an
    :class:`~ml.embeddings.EmbeddingArray`) for a head. ``labels`` index
    ``class_names``/``class_ids``. The paths (when known) let another process load the same
    set."""

    manifest: JobManifest
    images: NDArray[Any]
    manifest_path: Path | None = None
    images_path: Path | None = None

    @property
    def labels(self) -> NDArray[np.int64]:
        return self.manifest.labels.astype(np.int64)

    @property
    def class_ids(self) -> NDArray[np.int64]:
        return self.manifest.class_ids

    @property
    def class_names(self) -> list[str]:
        return self.manifest.class_names


@dataclass
class Task:
    """A job's spec with every input resolved to local data."""

    spec: JobSpec
    out_dir: Path
    recipe: Recipe | None = None
    train: SampleSet | None = None
    predict: SampleSet | None = None
    eval: SampleSet | None = None
    model_dir: Path | None = None
    teacher_dirs: list[Path] = field(default_factory=list)
    #: Out-of-fold probabilities ``[N, C]`` of the train set's rows (columns: its classes; NaN
    #: rows: none known), for the final training's rejected samples.
    reject_probs: NDArray[np.float32] | None = None


@dataclass
class Outcome:
    """What a job produced: per-sample results, a model checkpoint directory to upload (its
    ``MODEL_FILES``), other files to upload as artifacts, and a JSON summary."""

    results: ResultChunk | None = None
    model_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def resolve_recipe(value: str | dict[str, Any], *, seed: int | None) -> Recipe:
    """A spec's recipe: a shipped recipe's name (or a path) or the recipe itself."""
    recipe = load_recipe(value) if isinstance(value, str) else recipe_from_dict(value)
    return recipe if seed is None else recipe.model_copy(update={"seed": seed})
