"""Training recipes: named, versioned YAML files validated into a :class:`Recipe`.

A recipe is a shipped name (``ml/recipes/<name>.yaml``) or any YAML path, found by
:mod:`ml.core.recipes`, which also applies the dotted overrides (``{"optimizer.lr": 0.05}``, the
CLI's ``--set``). Unknown keys and bad values are errors that name the field (``optimizer.lr:
Input should be greater than 0``). The resolved recipe (every default filled in) is saved beside
every checkpoint (:func:`dump_recipe`), so a run can be reproduced from its output alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ml.core.augment_config import AugmentConfig
from ml.core.recipes import RecipeError, apply_overrides, read_recipe, recipe_path

__all__ = [
    "BalanceConfig",
    "DistillationConfig",
    "EmaConfig",
    "HeadConfig",
    "LogitAdjustmentConfig",
    "ModelConfig",
    "OptimizerConfig",
    "Recipe",
    "ScheduleConfig",
    "dump_recipe",
    "load_recipe",
    "recipe_from_dict",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: The extra arguments of ``timm.create_model`` a recipe, or a checkpoint's config (which may
#: come from another machine as an uploaded artifact), may set: regularisation and shape, and
#: nothing that names a file or a source of weights.
ALLOWED_MODEL_KWARGS = frozenset(
    {
        "drop_rate",
        "drop_path_rate",
        "drop_block_rate",
        "attn_drop_rate",
        "proj_drop_rate",
        "pos_drop_rate",
        "patch_drop_rate",
        "global_pool",
        "in_chans",
        "img_size",
        "layer_scale_init_value",
        "head_init_scale",
        # the shapes of the small CIFAR networks (ml.cifar_models)
        "widths",
        "stem_width",
        "blocks",
        "width",
    }
)


def check_model_kwargs(kwargs: object) -> dict[str, Any]:
    """``kwargs`` if every name is in :data:`ALLOWED_MODEL_KWARGS` and every value a number,
    string or boolean (or a list of them); ValueError naming the first that is not."""
    if not isinstance(kwargs, dict):
        raise ValueError("model kwargs must be an object")
    for key, value in kwargs.items():
        if key not in ALLOWED_MODEL_KWARGS:
            allowed = ", ".join(sorted(ALLOWED_MODEL_KWARGS))
            raise ValueError(f"model kwargs may not set {key!r} (allowed: {allowed})")
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, int | float | str | bool) for item in items):
            raise ValueError(f"model kwargs {key!r} must be plain values")
    return dict(kwargs)


class ModelConfig(_Strict):
    """Which network: a timm name, optional local weights (see :mod:`ml.models`)."""

    name: str = Field(min_length=1)
    pretrained: bool = False
    weights_file: Path | None = None
    drop_rate: float | None = Field(None, ge=0.0, lt=1.0)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kwargs")
    @classmethod
    def _allowed_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_model_kwargs(value)


class OptimizerConfig(_Strict):
    """SGD (with momentum) or AdamW. ``lr`` is the peak learning rate for ``batch_size``.
    Weight decay applies to weights only, not to biases and normalisation parameters."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(gt=0.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip_norm: float | None = Field(None, gt=0.0)


class ScheduleConfig(_Strict):
    """Linear warmup from ``warmup_start`` × lr, then cosine decay to ``min_lr_ratio`` × lr,
    stepped every optimizer step."""

    warmup_epochs: float = Field(0.0, ge=0.0)
    warmup_start: float = Field(0.1, ge=0.0, le=1.0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)


class EmaConfig(_Strict):
    """Exponential moving average of the weights (used for evaluation and saved as the model).

    With ``warmup`` the decay ramps up as ``min(decay, (1 + step) / (10 + step))``."""

    decay: float = Field(0.999, gt=0.0, lt=1.0)
    warmup: bool = True


class BalanceConfig(_Strict):
    """Class-balanced sampling: every class drawn at least ``min_fraction`` as often as the
    largest (:class:`ml.sampler.ClassBalancedSampler`).

    ``epoch_samples`` fixes the draws per epoch (e.g. the training set's size, to compare with
    unbalanced training at the same budget); default: the sampler's natural length,
    ``sum_c max(n_c, ceil(min_fraction * n_max))``."""

    min_fraction: float = Field(1 / 3, ge=0.0, le=1.0)
    epoch_samples: int | None = Field(None, ge=1)


class LogitAdjustmentConfig(_Strict):
    """Logit adjustment (Menon et al., 2021) with the training prior, in one of three forms:

    * ``frozen_bias``: classifier bias set to ``log prior`` and frozen; removed at inference;
    * ``loss``: cross-entropy on ``logits + tau * log prior``; plain logits at inference;
    * ``posthoc``: plain training; ``tau * log prior`` subtracted at inference.

    The prior is the class distribution the model actually sees: with ``balance`` on, the
    sampler's expected draws per class, not the raw counts.
    """

    mode: Literal["frozen_bias", "loss", "posthoc"]
    tau: float = Field(1.0, gt=0.0)


class HeadConfig(_Strict):
    """Train a head on the frozen backbone's cached embeddings instead of the whole network
    (:mod:`ml.heads`). The recipe's ``model`` is then the backbone (pretrained weights
    required), ``image_size`` the embedding's input size and ``tta_flip`` whether embeddings
    average the image and its mirror; of the augmentations only mixup applies (in feature
    space).

    Attributes:
        kind: ``linear`` (multinomial logistic), ``mlp`` (one hidden layer) or ``cosine``.
        hidden: the MLP's hidden width.
        dropout: dropout on the normalised features (and on the MLP's hidden layer).
        scale: the cosine head's logit scale.
    """

    kind: Literal["linear", "mlp", "cosine"] = "linear"
    hidden: int = Field(1024, ge=1, le=65536)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    scale: float = Field(16.0, gt=0.0)


class DistillationConfig(_Strict):
    """Knowledge distillation from one teacher or the ensemble of several (checkpoint
    directories written by :func:`ml.train.train_model`, e.g. the K fold models).
    ``loss = (1 - weight) * task + weight * T^2 * KL``."""

    teachers: list[Path] = Field(min_length=1)
    weight: float = Field(0.5, ge=0.0, le=1.0)
    temperature: float = Field(2.0, gt=0.0)


class Recipe(_Strict):
    """Everything one training run needs besides the data.

    Attributes:
        name, version: identify the recipe; bump ``version`` when its meaning changes.
        image_size: training side in pixels (images are square); also the decoded cache's size.
        test_image_size: prediction side (default ``image_size``); larger than the training size
            often helps ("FixRes").
        epochs: passes over the (sampled) training set.
        min_steps: at least this many optimizer steps: a small training set (a junk seed of a
            few hundred human labels) gets more epochs instead of a model that barely moved.
        batch_size: images per optimizer step.
        label_smoothing: mixed into the (soft) targets as ``(1 - e) * t + e / C``.
        flooding: the flood level ``b`` (``|loss - b| + b``), or ``None``.
        tta_flip: average predictions over the image and its mirror at inference.
        loader_workers: DataLoader processes; ``None``: 0 on CPU, up to 8 on CUDA.
        channels_last: use the channels-last memory format (faster for convolutions on CUDA and
            on x86 CPUs).
        seed: seeds initialisation, sampling and augmentation.
        head: train a head on cached embeddings of ``model`` (:class:`HeadConfig`) instead of
            the whole network.
    """

    name: str = Field(min_length=1)
    version: int = Field(1, ge=1)
    description: str = ""
    model: ModelConfig
    image_size: int = Field(ge=8, le=2048)
    test_image_size: int | None = Field(None, ge=8, le=2048)
    epochs: int = Field(ge=1)
    min_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(ge=1)
    eval_batch_size: int = Field(256, ge=1)
    optimizer: OptimizerConfig
    schedule: ScheduleConfig = ScheduleConfig()
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    augment: AugmentConfig = AugmentConfig()
    balance: BalanceConfig | None = None
    logit_adjustment: LogitAdjustmentConfig | None = None
    flooding: float | None = Field(None, ge=0.0)
    distillation: DistillationConfig | None = None
    head: HeadConfig | None = None
    ema: EmaConfig | None = None
    tta_flip: bool = False
    loader_workers: int | None = Field(None, ge=0)
    channels_last: bool = True
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.schedule.warmup_epochs > self.epochs:
            raise ValueError(
                f"schedule.warmup_epochs {self.schedule.warmup_epochs} exceeds epochs {self.epochs}"
            )
        if self.head is not None:
            self._check_head()
        return self

    def _check_head(self) -> None:
        if not self.model.pretrained and self.model.weights_file is None:
            raise ValueError(
                "a head on embeddings needs a pretrained backbone: set model.pretrained: true "
                "or model.weights_file"
            )
        if self.test_image_size not in (None, self.image_size):
            raise ValueError("a head on embeddings predicts at image_size: drop test_image_size")
        pixel_level = sorted(
            name
            for name, value in self.augment
            if value is not None and name not in {"mixup", "eval_crop_pct"}
        )
        if pixel_level:
            raise ValueError(
                f"augment.{pixel_level[0]} changes pixels, which a head on cached embeddings "
                "never sees: only augment.mixup applies (in feature space)"
            )

    @property
    def uses_embeddings(self) -> bool:
        """Whether this recipe trains a head on cached embeddings."""
        return self.head is not None

    def epochs_for(self, steps_per_epoch: int) -> int:
        """The epochs a run makes at ``steps_per_epoch``: ``epochs``, raised to reach
        ``min_steps``."""
        if self.min_steps is None or steps_per_epoch <= 0:
            return self.epochs
        return max(self.epochs, -(-self.min_steps // steps_per_epoch))

    @property
    def eval_image_size(self) -> int:
        return self.test_image_size or self.image_size


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def recipe_from_dict(
    document: Mapping[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    source: str = "recipe",
) -> Recipe:
    """Validate a recipe given as a mapping, after applying dotted ``overrides``.

    Raises:
        RecipeError: lists every invalid or unknown field.
    """
    data: dict[str, Any] = yaml.safe_load(yaml.safe_dump(dict(document)))  # deep copy
    apply_overrides(data, overrides or {})
    try:
        return Recipe.model_validate(data)
    except ValidationError as error:
        raise RecipeError(f"{source} is invalid:\n{_format_errors(error)}") from None


def load_recipe(name_or_path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> Recipe:
    """Load a shipped recipe by name (``"cifar-small"``) or any recipe YAML file by path.

    Raises:
        RecipeError: no such recipe (the message lists the shipped ones), invalid YAML, or
            invalid fields.
    """
    path = recipe_path(name_or_path)
    return recipe_from_dict(read_recipe(path), overrides=overrides, source=f"recipe {path}")


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML (every field, defaults included); loads back to an equal
    :class:`Recipe`."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
