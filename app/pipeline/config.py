"""A pipeline's configuration (stored as JSON on the pipeline), the recipes each step trains
with, and the process-wide settings of the reconciler (environment, prefix
``THRESHER_PIPELINE_``).

Recipes are named as the worker knows them (``ml/recipes/<name>.yaml``) with optional dotted
overrides (``{"name": "cifar-small", "set": {"epochs": 2}}``). A recipe without overrides travels
to the worker as its name; with overrides the server reads the shipped YAML (through the
torch-free :mod:`ml.core.recipes`) and sends the whole recipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.errors import Invalid
from app.jobs.config import JobSettings
from ml.core.recipes import (
    RecipeError,
    apply_overrides,
    list_recipes,
    read_recipe,
    shipped_recipe,
)

Step = Literal["junk", "fold", "pullback", "final"]


class PipelineSettings(BaseSettings):
    """How the server drives pipelines (``THRESHER_PIPELINE_*``)."""

    model_config = SettingsConfigDict(env_prefix="THRESHER_PIPELINE_", extra="ignore")

    reconcile_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How often each server process advances pipelines; 0 turns it off.",
    )


@dataclass(frozen=True)
class PipelineEnv:
    """What steps need besides the database: where manifests and artifacts live, job limits."""

    data_dir: Path
    jobs: JobSettings


class RecipeChoice(BaseModel):
    """A shipped recipe by name, with dotted overrides (``{"epochs": 2, "optimizer.lr": 0.1}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
    set: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _shipped(cls, name: str) -> str:
        if shipped_recipe(name) is None:
            known = ", ".join(list_recipes())
            raise ValueError(f"no recipe {name!r}; the shipped ones are {known}")
        return name


class PipelineConfig(BaseModel):
    """Every knob of the loop. ``None`` recipes are the defaults: heads on the bundled
    pretrained backbone's embeddings for every step (the ``pretrained-cpu`` family), and with
    ``hardware: gpu`` the fine-tuned ``finetune-final`` for the final training. ``None``
    ``top_k``: k = 1 under 100 classes, else 5."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, description="Seeds folds, random samples and audits.")
    hardware: Literal["cpu", "gpu"] = Field(
        "cpu", description="What the workers have; gpu fine-tunes the final model by default."
    )
    embed_shard_size: int = Field(
        4096, ge=1, le=1_000_000, description="Images per embed job (shards run in parallel)."
    )
    # --- junk stage ---
    junk_threshold: float = Field(0.6, gt=0.0, le=1.0, description="Queue p(junk) ≥ this.")
    bulk_threshold: float = Field(0.98, gt=0.0, le=1.0, description="Bulk-accept p(junk) ≥ this.")
    bulk_min_precision: float = Field(
        0.9, gt=0.0, le=1.0, description="Lower bound of the flag audit's precision bulk needs."
    )
    seed_random_samples: int = Field(
        500, ge=0, description="Normal (3-channel) images in the junk seed, drawn at random."
    )
    seed_max_non_rgb: int | None = Field(
        None, ge=0, description="At most this many non-3-channel images in the seed."
    )
    junk_min_labels: int = Field(
        5, ge=1, description="Human junk and normal labels (each) a junk iteration needs."
    )
    junk_max_tasks: int | None = Field(
        None, ge=1, description="Most junk_check tasks one iteration queues (highest first)."
    )
    audit_size: int = Field(300, ge=1, description="Samples in a junk audit.")
    flag_audit_size: int = Field(100, ge=1, description="Samples in an audit of strict flags.")
    junk_target_rate: float = Field(
        0.01, gt=0.0, lt=1.0, description="The junk stage ends when an audit's bound is under."
    )
    max_junk_iterations: int = Field(5, ge=0, description="Auto mode: junk iterations at most.")
    junk_min_found: int = Field(
        10,
        ge=0,
        description="Auto mode: another junk iteration before an audit while the last one "
        "found at least this many junk images.",
    )
    # --- label stage ---
    folds: int = Field(5, ge=2, le=20)
    top_k: int | None = Field(None, ge=1, le=100, description="The top-k rule's k.")
    suggestions: int = Field(5, ge=1, le=10, description="Model classes shown in label_check.")
    max_pullback_rounds: int = Field(
        3, ge=0, description="Auto mode: pull-back rounds in a row at most."
    )
    human_fraction: float = Field(
        0.05, ge=0.0, le=1.0, description="Share of the rejected set sent to label_check."
    )
    filter_by: Literal[
        "prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given"
    ] = "prune_by_noise_rate"
    human_pullback: float | None = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="After the human sample, pull back the unchecked rejects in the band of "
        "the model's probability of their label where people found rejects wrong less often "
        "than this; null: off.",
    )
    rule: Literal["topk", "cleanlab", "knn"] = Field(
        "topk", description="The detector whose verdicts set kept / rejected."
    )
    knn_k: int = Field(10, ge=1, le=1000, description="Neighbours of the kNN detector.")
    # --- class stage ---
    min_class_size: int = Field(50, ge=0, description="Classes with fewer kept samples: review.")
    class_drop_votes: int = Field(
        2,
        ge=1,
        le=10,
        description="Distinct annotators who must say drop before a class is dropped (a keep "
        "from anyone keeps it).",
    )
    # --- final training ---
    min_eval_samples: int = Field(
        100, ge=1, description="Human-verified samples needed to evaluate on them."
    )
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Else: a held-out split.")
    final_teacher: Literal["auto", "folds", "none"] | int = Field(
        "auto",
        description="Distil from the fold models, nothing, or a job's model; auto: the fold "
        "models with hardware gpu, nothing with cpu (heads on embeddings lost accuracy to it "
        "in the label-cleaning benchmark).",
    )
    final_rejects: Literal["drop", "soft", "relabel"] = Field(
        "drop",
        description="What rejected samples give the final training: nothing, the folds' "
        "out-of-fold probabilities as soft targets, or their confident top class.",
    )
    reject_weight: float = Field(0.5, gt=0.0, le=10.0, description="Loss weight of soft rejects.")
    relabel_threshold: float = Field(
        0.9, ge=0.0, le=1.0, description="Relabel a reject when its top class is this likely."
    )
    # --- recipes ---
    junk_recipe: RecipeChoice | None = None
    fold_recipe: RecipeChoice | None = None
    pullback_recipes: list[RecipeChoice] | None = Field(None, min_length=1)
    final_recipe: RecipeChoice | None = None
    recipe_overrides: dict[str, Any] = Field(
        default_factory=dict, description="Dotted overrides applied to every recipe."
    )

    @model_validator(mode="after")
    def _consistent(self) -> PipelineConfig:
        if self.bulk_threshold < self.junk_threshold:
            raise ValueError("bulk_threshold must be at least junk_threshold")
        return self

    def teacher(self) -> Literal["folds", "none"] | int:
        """What the final training distils from, ``auto`` resolved by ``hardware``."""
        if self.final_teacher == "auto":
            return "folds" if self.hardware == "gpu" else "none"
        return self.final_teacher

    def k_for(self, num_classes: int) -> int:
        """The top-k rule's k for ``num_classes`` classes."""
        k = self.top_k if self.top_k is not None else (1 if num_classes < 100 else 5)
        return max(1, min(k, num_classes))


DEFAULT_RECIPES: dict[Step, list[RecipeChoice]] = {
    "junk": [RecipeChoice(name="pretrained-cpu-junk")],
    "fold": [RecipeChoice(name="pretrained-cpu")],
    "pullback": [
        RecipeChoice(name="pretrained-cpu-pullback-a"),
        RecipeChoice(name="pretrained-cpu-pullback-b"),
    ],
    "final": [RecipeChoice(name="pretrained-cpu-final")],
}
#: The final training's default on GPU workers: the whole backbone fine-tuned.
GPU_FINAL_RECIPE = RecipeChoice(name="finetune-final")


def parse_config(data: dict[str, Any]) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'config'}: {item['msg']}"
            for item in error.errors()
        )
        raise Invalid(f"invalid pipeline config: {problems}") from None


def merged_config(current: dict[str, Any], changes: dict[str, Any]) -> PipelineConfig:
    """``current`` with ``changes`` applied (a key set to None goes back to its default)."""
    merged = {**current, **changes}
    return parse_config({key: value for key, value in merged.items() if value is not None})


def config_json(config: PipelineConfig) -> dict[str, Any]:
    """The config as stored: only what differs from the defaults."""
    data: dict[str, Any] = config.model_dump(mode="json", exclude_defaults=True)
    return data


def recipes_for(config: PipelineConfig, step: Step) -> list[RecipeChoice]:
    """The recipe(s) of a step: the configured ones, else the defaults."""
    configured: dict[Step, list[RecipeChoice] | None] = {
        "junk": [config.junk_recipe] if config.junk_recipe else None,
        "fold": [config.fold_recipe] if config.fold_recipe else None,
        "pullback": config.pullback_recipes,
        "final": [config.final_recipe] if config.final_recipe else None,
    }
    if configured[step]:
        return configured[step] or []
    if step == "final" and config.hardware == "gpu":
        return [GPU_FINAL_RECIPE]
    return DEFAULT_RECIPES[step]


def spec_recipe(choice: RecipeChoice, overrides: dict[str, Any]) -> str | dict[str, Any]:
    """What a job spec carries for ``choice`` plus the pipeline-wide ``overrides``: the
    recipe's name when nothing is overridden, else the whole recipe with the overrides set."""
    changes = {**overrides, **choice.set}
    if not changes:
        return choice.name
    path = shipped_recipe(choice.name)
    if path is None:
        raise Invalid(f"no recipe {choice.name!r}")
    try:
        document = read_recipe(path)
        apply_overrides(document, changes)
    except RecipeError as error:
        raise Invalid(str(error)) from None
    return document


def recipe_document(recipe: str | dict[str, Any]) -> dict[str, Any]:
    """A spec's recipe as a mapping: the shipped YAML for a name (empty when unknown)."""
    if isinstance(recipe, dict):
        return recipe
    path = shipped_recipe(recipe)
    return {} if path is None else read_recipe(path)


def recipe_label(recipe: str | dict[str, Any]) -> str:
    """A recipe's name for stats and reports."""
    return recipe if isinstance(recipe, str) else str(recipe.get("name", "custom"))


def sample_count(fraction: float, population: int) -> int:
    """How many of ``population`` a ``fraction`` asks for: rounded up, at least one of a
    non-empty population when the fraction is positive."""
    if population <= 0 or fraction <= 0:
        return 0
    return min(population, max(1, math.ceil(fraction * population)))
