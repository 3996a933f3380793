"""Checkpoints: a trained model with everything needed to use it, and the state to resume
training exactly.

A checkpoint is a directory ``<run>/step-<global step>/``, written under a temporary name and
renamed into place (so every ``step-*`` directory is complete), holding:

* ``model.safetensors``: the inference weights (the EMA weights when the recipe uses EMA);
* ``model_config.json``: the timm architecture and its arguments, number of classes, class names,
  input size, normalisation, and the logit adjustment to apply at inference (with its log prior);
* ``recipe.yaml``: the resolved recipe;
* ``train_state.safetensors`` + ``train_state.json``: the raw weights when EMA is on, the
  optimizer's tensors and the rest (position, optimizer hyper-parameters, epoch metrics, a
  fingerprint of the training set).

:func:`load_trained_model` turns a checkpoint (or a run directory: its latest checkpoint) back
into a :class:`TrainedModel` without the recipe's data.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ml.losses import prediction_logits
from ml.models import create_model
from ml.recipes import check_model_kwargs

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "InferenceAdjustment",
    "TrainState",
    "TrainedModel",
    "adjustment_config",
    "latest_checkpoint",
    "load_adjustment",
    "load_train_state",
    "load_trained_model",
    "load_weights",
    "resolve_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = 1

InferenceAdjustment = Literal["none", "remove_prior", "posthoc"]
"""What prediction does to the logits: nothing; subtract the frozen log-prior bias; or subtract
``tau * log prior`` from a plainly trained model's logits."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, or does not fit the run that tries to resume it."""


def adjustment_config(
    log_prior: Tensor | None, adjustment: InferenceAdjustment, tau: float
) -> dict[str, Any]:
    """The ``model_config.json`` entries of a model's logit adjustment (``log_prior`` ``[C]``)."""
    return {
        "logit_adjustment": {"inference": adjustment, "tau": tau},
        "log_prior": None if log_prior is None else log_prior.tolist(),
    }


def load_adjustment(config: dict[str, Any]) -> dict[str, Any]:
    """The ``log_prior``, ``adjustment`` and ``tau`` arguments of a trained model or head, from
    the entries :func:`adjustment_config` wrote."""
    prior = config.get("log_prior")
    adjustment = config["logit_adjustment"]
    return {
        "log_prior": None if prior is None else torch.tensor(prior, dtype=torch.float32),
        "adjustment": adjustment["inference"],
        "tau": float(adjustment["tau"]),
    }


def load_weights(model: nn.Module, directory: Path, device: str | torch.device) -> None:
    """Loads ``directory/model.safetensors`` into ``model``, on ``device`` in eval mode."""
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    model.to(device).eval()


@dataclass
class TrainedModel:
    """A model ready for inference, with how to feed it and how to read its output.

    Attributes:
        model: the network (inference weights), in eval mode.
        model_name: timm architecture name; ``model_kwargs`` its extra arguments.
        num_classes: ``C``.
        image_size: side of the square input used for prediction, pixels.
        mean, std: per-channel normalisation of 0..1 pixel values.
        class_names: ``C`` names, when known.
        log_prior: ``[C]`` log class prior the model was trained with (``None`` if unused).
        adjustment, tau: the logit adjustment applied by :meth:`adjust_logits`.
        tta_flip: average the predictions of the image and its mirror.
    """

    model: nn.Module
    model_name: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: list[str] | None = None
    log_prior: Tensor | None = None
    adjustment: InferenceAdjustment = "none"
    tau: float = 1.0
    tta_flip: bool = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def adjust_logits(self, logits: Tensor) -> Tensor:
        """Raw model logits ``[B, C]`` → the logits predictions are made from ``[B, C]``."""
        return prediction_logits(logits, self.adjustment, self.log_prior, self.tau)

    def config(self) -> dict[str, Any]:
        """The JSON-ready ``model_config.json`` content."""
        return {
            "format": CHECKPOINT_FORMAT,
            "architecture": self.model_name,
            "model_kwargs": self.model_kwargs,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "input_size": [3, self.image_size, self.image_size],
            "mean": list(self.mean),
            "std": list(self.std),
            **adjustment_config(self.log_prior, self.adjustment, self.tau),
            "tta_flip": self.tta_flip,
        }


@dataclass
class TrainState:
    """Where a run stands: the next step to run is step ``step`` of epoch ``epoch`` (0-based);
    ``global_step`` optimizer steps are done."""

    epoch: int
    step: int
    global_step: int
    raw_weights: dict[str, Tensor] | None
    optimizer: dict[str, Any]
    history: list[dict[str, Any]]
    fingerprint: str
    recipe_yaml: str
    extra: dict[str, Any] = field(default_factory=dict)


def _tensors(state: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    # Cloned: safetensors refuses tensors that share memory (tied weights, views).
    return {f"{prefix}{k}": v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = defaultdict(dict)
    for param_id, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{param_id}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars[str(param_id)][name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": dict(scalars)}


def _unflatten_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = defaultdict(dict)
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, param_id, name = key.split(".", 2)
            state[int(param_id)][name] = value
    for param_id, entries in meta["scalars"].items():
        state[int(param_id)].update(entries)
    return {"state": dict(state), "param_groups": meta["param_groups"]}


def save_checkpoint(
    run_dir: str | Path,
    *,
    trained: TrainedModel,
    train_state: TrainState,
    optimizer: torch.optim.Optimizer,
    keep: int = 1,
) -> Path:
    """Write ``run_dir/step-<global_step>/`` atomically and delete all but the newest ``keep``.

    ``train_state.optimizer`` is ignored; the optimizer's current state is saved.

    Returns:
        The checkpoint directory.
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    temporary = run / f".tmp-{uuid.uuid4().hex}"
    temporary.mkdir()
    try:
        save_file(
            _tensors(trained.model.state_dict()),
            str(temporary / "model.safetensors"),
            metadata={"architecture": trained.model_name, "num_classes": str(trained.num_classes)},
        )
        (temporary / "model_config.json").write_text(
            json.dumps(trained.config(), indent=1), encoding="utf-8"
        )
        (temporary / "recipe.yaml").write_text(train_state.recipe_yaml, encoding="utf-8")
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        raw = _tensors(train_state.raw_weights, "raw.") if train_state.raw_weights else {}
        save_file({**opt_tensors, **raw}, str(temporary / "train_state.safetensors"))
        (temporary / "train_state.json").write_text(
            json.dumps(
                {
                    "format": CHECKPOINT_FORMAT,
                    "epoch": train_state.epoch,
                    "step": train_state.step,
                    "global_step": train_state.global_step,
                    "optimizer": opt_meta,
                    "history": train_state.history,
                    "fingerprint": train_state.fingerprint,
                    "extra": train_state.extra,
                },
                indent=1,
            ),
            encoding="utf-8",
        )
        final = run / f"step-{train_state.global_step:09d}"
        if final.exists():
            stale = run / f".old-{uuid.uuid4().hex}"
            final.replace(stale)
            shutil.rmtree(stale, ignore_errors=True)
        temporary.replace(final)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    for old in _checkpoints(run)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _checkpoints(run: Path) -> list[Path]:
    if not run.is_dir():
        return []
    found = [p for p in run.iterdir() if p.is_dir() and p.name.startswith("step-")]
    return sorted(found, key=lambda p: int(p.name.removeprefix("step-")))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest ``step-*`` checkpoint of a run, or ``None``."""
    found = _checkpoints(Path(run_dir))
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """``path`` itself when it holds a model, else its newest ``step-*`` checkpoint.

    Raises:
        CheckpointError: neither.
    """
    directory = Path(path)
    if (directory / "model_config.json").is_file():
        return directory
    latest = latest_checkpoint(directory)
    if latest is None:
        raise CheckpointError(f"{directory} holds no checkpoint (no model_config.json, no step-*)")
    return latest


def checked_model_kwargs(kwargs: object, directory: Path) -> dict[str, Any]:
    """A checkpoint's ``model_kwargs``, if allowed (:func:`ml.recipes.check_model_kwargs`): a
    checkpoint's own ``model.safetensors`` is the only weights it may load, as its config may
    come from another machine, through an uploaded artifact.

    Raises:
        CheckpointError: a name off the allow-list, or a value that is not plain.
    """
    try:
        return check_model_kwargs(kwargs)
    except ValueError as error:
        raise CheckpointError(
            f"{directory}: {error}".replace("model kwargs", "model_kwargs")
        ) from error


def load_trained_model(path: str | Path, *, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a checkpoint directory, or a run directory's latest checkpoint, for inference.

    Raises:
        CheckpointError: nothing there, or an unknown format.
    """
    directory = resolve_checkpoint(path)
    config = json.loads((directory / "model_config.json").read_text(encoding="utf-8"))
    if config.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{directory}: unknown checkpoint format {config.get('format')!r}")
    if config.get("kind") == "head":
        raise CheckpointError(f"{directory} holds a head on embeddings: load it with load_model")
    model_kwargs = checked_model_kwargs(config.get("model_kwargs"), directory)
    model = create_model(config["architecture"], num_classes=config["num_classes"], **model_kwargs)
    load_weights(model, directory, device)
    return TrainedModel(
        model=model,
        model_name=config["architecture"],
        num_classes=config["num_classes"],
        image_size=config["input_size"][-1],
        mean=_triple(config["mean"]),
        std=_triple(config["std"]),
        class_names=config.get("class_names"),
        **load_adjustment(config),
        tta_flip=bool(config.get("tta_flip", False)),
        model_kwargs=model_kwargs,
    )


def _triple(values: list[float]) -> tuple[float, float, float]:
    if len(values) != 3:
        raise CheckpointError(f"expected three channel values, got {values}")
    return float(values[0]), float(values[1]), float(values[2])


def load_train_state(checkpoint: str | Path) -> TrainState:
    """The resumable state of a checkpoint directory (see :class:`TrainState`)."""
    directory = Path(checkpoint)
    meta = json.loads((directory / "train_state.json").read_text(encoding="utf-8"))
    tensors = load_file(str(directory / "train_state.safetensors"))
    raw = {k.removeprefix("raw."): v for k, v in tensors.items() if k.startswith("raw.")}
    return TrainState(
        epoch=int(meta["epoch"]),
        step=int(meta["step"]),
        global_step=int(meta["global_step"]),
        raw_weights=raw or None,
        optimizer=_unflatten_optimizer(tensors, meta["optimizer"]),
        history=list(meta["history"]),
        fingerprint=str(meta["fingerprint"]),
        recipe_yaml=(directory / "recipe.yaml").read_text(encoding="utf-8"),
        extra=dict(meta.get("extra", {})),
    )
