"""What the workflow steps share: their inputs, the ``decisions.csv`` file, defaults, errors."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ml.cache import content_hashes, decoded_cache
from ml.checkpoint import TrainedModel
from ml.embed import recipe_embeddings, space_embeddings
from ml.heads import TrainedHead
from ml.manifest import Manifest
from ml.recipes import Recipe

__all__ = [
    "DECISION_FIELDS",
    "StepError",
    "StepInputs",
    "default_cache_dir",
    "default_k",
    "format_topk",
    "read_decisions",
    "write_decisions",
    "write_json",
]

DECISION_FIELDS = (
    "sample_id",
    "path",
    "label",
    "fold",
    "given_prob",
    "label_rank",
    "topk_classes",
    "topk_probs",
    "topk_kept",
    "cleanlab_issue",
    "cleanlab_quality",
    "knn_agreement",
    "knn_kept",
    "status",
    "pulled_back_round",
)


class StepError(ValueError):
    """The inputs of a step do not fit together (e.g. decisions of another manifest)."""


def default_cache_dir() -> Path:
    """``$THRESHER_CACHE_DIR``, else ``~/.cache/thresher/decoded``."""
    configured = os.environ.get("THRESHER_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "thresher" / "decoded"


def default_k(num_classes: int) -> int:
    """The top-k rule's default k: 5 for 100 classes or more (web data with thousands of
    classes, where the right class is often among a few look-alikes), else 1."""
    return 5 if num_classes >= 100 else 1


class StepInputs:
    """What a step's models read for the samples of one manifest: decoded images for a recipe
    that trains the whole network, cached embeddings for a recipe with a head (the content
    hashes are computed once per step)."""

    def __init__(self, manifest: Manifest, cache_dir: Path | None, device: str | None) -> None:
        self.manifest = manifest
        self.cache_dir = cache_dir or default_cache_dir()
        self.device = device
        self._hashes: list[str] | None = None

    @property
    def hashes(self) -> list[str]:
        if self._hashes is None:
            self._hashes = content_hashes(self.manifest.paths)
        return self._hashes

    def for_recipe(self, recipe: Recipe) -> NDArray[Any]:
        if recipe.uses_embeddings:
            return recipe_embeddings(recipe, self.manifest.paths, self.hashes, device=self.device)
        size = max(recipe.image_size, recipe.eval_image_size)
        return self._images(size, hashes=self.hashes)

    def for_model(self, trained: TrainedModel | TrainedHead) -> NDArray[Any]:
        if isinstance(trained, TrainedHead):
            return space_embeddings(trained.space, self.manifest.paths, self.hashes)
        return self._images(trained.image_size, hashes=None)

    def _images(self, size: int, *, hashes: list[str] | None) -> NDArray[Any]:
        paths = self.manifest.paths
        return decoded_cache(paths, size=size, cache_dir=self.cache_dir, hashes=hashes).images


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")


def format_topk(
    ids: NDArray[np.int64], probs: NDArray[np.float32], classes: Sequence[str]
) -> tuple[str, str]:
    """Top-k class names and probabilities as ``;``-separated CSV cells."""
    return (
        ";".join(classes[int(i)] for i in ids),
        ";".join(f"{float(p):.4f}" for p in probs),
    )


def write_decisions(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=DECISION_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def read_decisions(
    path: str | Path, manifest: Manifest
) -> tuple[list[dict[str, str]], NDArray[np.bool_]]:
    """Rows of a ``decisions.csv`` in manifest order, and the kept mask ``[N]``.

    Raises:
        StepError: the file's samples are not the manifest's.
    """
    with Path(path).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    by_id = {row["sample_id"]: row for row in rows}
    if len(by_id) != len(manifest) or set(by_id) != set(manifest.sample_ids):
        raise StepError(f"{path} does not describe the samples of this manifest")
    ordered = [by_id[sample_id] for sample_id in manifest.sample_ids]
    kept = np.array([row["status"] == "kept" for row in ordered], dtype=bool)
    return ordered, kept
