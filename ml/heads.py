"""Heads on cached embeddings: the models of the cleaning loop on a CPU.

A head is a small network on a frozen backbone's pooled features (:mod:`ml.embeddings`):

* ``linear``: multinomial logistic regression;
* ``mlp``: one hidden layer (GELU, dropout) and a linear classifier;
* ``cosine``: logits ``scale * cos(x, w_c) + b_c`` (normalised weights: every class's logit has
  the same range, which suits long tails).

Every head first normalises its input: L2 norm, minus the mean of the training features, L2 norm
again (:class:`FeatureNorm`; the mean travels with the head). A head trains in seconds
(:mod:`ml.head_training`), so every fold, pull-back round and final model after the one
embedding pass is cheap.

A trained head is saved like any model (``model.safetensors`` + ``model_config.json``, with
``"kind": "head"``, the head's config and the embedding space it reads), so the job protocol and
the export treat both kinds alike; :func:`save_head` writes one, :func:`load_model` loads either
kind.
"""

from __future__ import annotations

import json
import math
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from safetensors.torch import save_file
from torch import Tensor, nn

from ml.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    InferenceAdjustment,
    TrainedModel,
    adjustment_config,
    load_adjustment,
    load_trained_model,
    load_weights,
    resolve_checkpoint,
)
from ml.embeddings import EmbeddingSpace
from ml.losses import prediction_logits
from ml.recipes import HeadConfig

__all__ = [
    "CosineLinear",
    "FeatureNorm",
    "HeadNet",
    "HeadTargets",
    "TrainedHead",
    "head_logits",
    "load_model",
    "save_head",
]

HEAD_KIND = "head"


@dataclass(frozen=True)
class HeadTargets:
    """What training rows learn besides their labels.

    Attributes:
        soft: ``[N, C]`` float target distributions, used for rows whose label is -1 (rows with
            a label train on it); ``None``: every training row needs a label.
        weights: ``[N]`` non-negative loss weight of every row (default 1).
    """

    soft: NDArray[np.floating] | None = None
    weights: NDArray[np.floating] | None = None


class FeatureNorm(nn.Module):
    """``[B, D]`` → L2-normalised, centred on the training mean, L2-normalised again, then
    scaled by ``sqrt(D)`` (unit root-mean-square per dimension, the scale a linear layer's
    initialisation and learning rates expect)."""

    mean: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))

    @torch.no_grad()
    def fit(self, features: Tensor) -> None:
        """Set the centre from training features ``[N, D]``."""
        self.mean.copy_(F.normalize(features.float(), dim=1).mean(dim=0))

    def forward(self, x: Tensor) -> Tensor:
        centred = F.normalize(F.normalize(x.float(), dim=1) - self.mean, dim=1)
        return centred * math.sqrt(self.mean.shape[0])


class CosineLinear(nn.Linear):
    """``scale * cos(x, w_c) + b_c`` for every class ``c``: ``[B, D]`` → ``[B, C]``."""

    def __init__(self, in_features: int, out_features: int, scale: float) -> None:
        super().__init__(in_features, out_features, bias=True)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        cosine = F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))
        return self.scale * cosine + self.bias


class HeadNet(nn.Module):
    """Feature normalisation, optional input dropout, the head's body and its classifier."""

    def __init__(self, dim: int, num_classes: int, config: HeadConfig) -> None:
        super().__init__()
        self.norm = FeatureNorm(dim)
        self.dropout = nn.Dropout(config.dropout)
        self.body: nn.Module
        self.classifier: nn.Linear
        if config.kind == "mlp":
            self.body = nn.Sequential(nn.Linear(dim, config.hidden), nn.GELU())
            self.classifier = nn.Linear(config.hidden, num_classes)
        elif config.kind == "cosine":
            self.body = nn.Identity()
            self.classifier = CosineLinear(dim, num_classes, config.scale)
        else:
            self.body = nn.Identity()
            self.classifier = nn.Linear(dim, num_classes)

    def get_classifier(self) -> nn.Linear:
        return self.classifier

    def forward(self, features: Tensor) -> Tensor:
        """Features ``[B, D]`` → raw logits ``[B, C]``."""
        return self.head(self.norm(features))

    def head(self, normalised: Tensor) -> Tensor:
        """Normalised features (``self.norm``'s output) ``[B, D]`` → raw logits ``[B, C]``;
        training normalises its features once and calls this."""
        hidden = self.body(self.dropout(normalised))
        if isinstance(self.body, nn.Sequential):
            hidden = self.dropout(hidden)
        logits: Tensor = self.classifier(hidden)
        return logits


@dataclass
class TrainedHead:
    """A head ready for inference, with the embedding space it reads.

    Attributes:
        model: the :class:`HeadNet`, in eval mode.
        space: the features it expects (:class:`~ml.embeddings.EmbeddingSpace`).
        head: its configuration.
        num_classes, class_names, log_prior, adjustment, tau: as for
            :class:`~ml.checkpoint.TrainedModel`.
    """

    model: HeadNet
    space: EmbeddingSpace
    head: HeadConfig
    dim: int
    num_classes: int
    class_names: list[str] | None = None
    log_prior: Tensor | None = None
    adjustment: InferenceAdjustment = "none"
    tau: float = 1.0

    @property
    def model_name(self) -> str:
        return f"head:{self.head.kind}"

    @property
    def image_size(self) -> int:
        """The backbone's input side (the images behind the features)."""
        return self.space.image_size

    def adjust_logits(self, logits: Tensor) -> Tensor:
        """Raw logits ``[B, C]`` → the logits predictions are made from."""
        return prediction_logits(logits, self.adjustment, self.log_prior, self.tau)

    def config(self) -> dict[str, Any]:
        """The JSON-ready ``model_config.json`` content."""
        return {
            "format": CHECKPOINT_FORMAT,
            "kind": HEAD_KIND,
            "architecture": self.model_name,
            "head": self.head.model_dump(mode="json"),
            "embedding": self.space.to_dict(),
            "feature_dim": self.dim,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "input_size": [3, self.space.image_size, self.space.image_size],
            "mean": list(self.space.mean),
            "std": list(self.space.std),
            **adjustment_config(self.log_prior, self.adjustment, self.tau),
        }


@torch.no_grad()
def head_logits(
    trained: TrainedHead,
    features: NDArray[Any],
    *,
    indices: NDArray[np.integer] | Sequence[int] | None = None,
    batch_size: int = 4096,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Adjusted logits of ``features[indices]`` (default all rows), float32 ``[M, C]`` on the
    CPU. ``features`` is ``[N, D]`` in the head's embedding space."""
    if features.ndim != 2 or features.shape[1] != trained.dim:
        raise ValueError(
            f"features {features.shape} do not fit a head on {trained.dim}-wide embeddings"
        )
    rows = np.arange(features.shape[0]) if indices is None else np.asarray(indices, dtype=np.int64)
    trained.model.eval().to(device)
    outputs = []
    for start in range(0, rows.shape[0], batch_size):
        chunk = torch.from_numpy(np.asarray(features[rows[start : start + batch_size]]))
        logits = trained.model(chunk.to(device).float())
        outputs.append(trained.adjust_logits(logits).float().cpu())
    if not outputs:
        return torch.zeros((0, trained.num_classes))
    return torch.cat(outputs)


def _load_head(directory: Path, config: dict[str, Any], device: torch.device | str) -> TrainedHead:
    head = HeadConfig.model_validate(config["head"])
    dim = int(config["feature_dim"])
    model = HeadNet(dim, int(config["num_classes"]), head)
    load_weights(model, directory, device)
    return TrainedHead(
        model=model,
        space=EmbeddingSpace.from_dict(config["embedding"]),
        head=head,
        dim=dim,
        num_classes=int(config["num_classes"]),
        class_names=config.get("class_names"),
        **load_adjustment(config),
    )


def save_head(
    run_dir: Path, trained: TrainedHead, *, recipe_yaml: str, state: dict[str, Any], step: int
) -> Path:
    """Write ``run_dir/step-<step>/`` atomically: the head's weights and config, the recipe
    and the training ``state`` (JSON); returns that directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    temporary = run_dir / f".tmp-{uuid.uuid4().hex}"
    temporary.mkdir()
    try:
        tensors = {
            k: v.detach().cpu().contiguous().clone() for k, v in trained.model.state_dict().items()
        }
        save_file(tensors, str(temporary / "model.safetensors"))
        (temporary / "model_config.json").write_text(
            json.dumps(trained.config(), indent=1), encoding="utf-8"
        )
        (temporary / "recipe.yaml").write_text(recipe_yaml, encoding="utf-8")
        (temporary / "train_state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
        final = run_dir / f"step-{step:09d}"
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        temporary.replace(final)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    return final


def is_head_checkpoint(path: str | Path) -> bool:
    """Whether a checkpoint (or run) directory holds a head rather than a whole network."""
    directory = resolve_checkpoint(path)
    config = json.loads((directory / "model_config.json").read_text(encoding="utf-8"))
    return bool(config.get("kind") == HEAD_KIND)


def load_model(
    path: str | Path, *, device: torch.device | str = "cpu"
) -> TrainedModel | TrainedHead:
    """Load a checkpoint (or a run's latest) of either kind: a whole network or a head.

    Raises:
        CheckpointError: nothing there, or an unknown format.
    """
    directory = resolve_checkpoint(path)
    config = json.loads((directory / "model_config.json").read_text(encoding="utf-8"))
    if config.get("kind") != HEAD_KIND:
        return load_trained_model(directory, device=device)
    if config.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{directory}: unknown checkpoint format {config.get('format')!r}")
    return _load_head(directory, config, device)
