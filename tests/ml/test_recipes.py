"""Recipes: shipped YAML, validation errors, overrides (ml/recipes.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ml.core.recipes import RecipeError, list_recipes
from ml.recipes import dump_recipe, load_recipe, recipe_from_dict


@pytest.mark.parametrize("name", list_recipes())
def test_shipped_recipe_validates_and_round_trips(name: str) -> None:
    recipe = load_recipe(name)

    assert recipe.name == name
    assert recipe_from_dict(yaml.safe_load(dump_recipe(recipe))) == recipe


def test_the_documented_recipes_are_shipped() -> None:
    expected = {
        "cifar-small",
        "pretrained-cpu",
        "pretrained-cpu-final",
        "pretrained-cpu-junk",
        "pretrained-cpu-pullback-a",
        "pretrained-cpu-pullback-b",
        "finetune",
        "finetune-final",
        "finetune-junk",
        "finetune-pullback-a",
        "finetune-pullback-b",
    }
    assert expected <= set(list_recipes())


def test_unknown_key_is_named() -> None:
    with pytest.raises(RecipeError, match=r"optimizer\.learning_rate: Extra inputs"):
        load_recipe("cifar-small", overrides={"optimizer.learning_rate": 0.1})


def test_bad_value_names_the_field() -> None:
    with pytest.raises(RecipeError, match=r"augment\.hflip\.p: Input should be less than or equal"):
        load_recipe("cifar-small", overrides={"augment.hflip.p": 2})


def test_dotted_overrides_apply() -> None:
    recipe = load_recipe("cifar-small", overrides={"epochs": 3, "optimizer.name": "adamw"})

    assert recipe.epochs == 3
    assert recipe.optimizer.name == "adamw"


def test_unknown_recipe_lists_the_shipped_ones() -> None:
    with pytest.raises(RecipeError, match="cifar-small"):
        load_recipe("no-such-recipe")


def test_recipe_from_a_yaml_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(dump_recipe(load_recipe("cifar-small", overrides={"name": "mine"})))

    assert load_recipe(path).name == "mine"


def test_warmup_longer_than_training_is_refused() -> None:
    with pytest.raises(RecipeError, match=r"warmup_epochs 9\.0 exceeds epochs 2"):
        load_recipe("cifar-small", overrides={"epochs": 2, "schedule.warmup_epochs": 9})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pretrained_cfg_overlay": {"file": "/etc/passwd"}},
        {"checkpoint_path": "/elsewhere.pth"},
        {"cache_dir": "/tmp"},
        {"drop_path_rate": {"nested": 1}},
    ],
)
def test_a_recipe_may_set_only_allowed_model_kwargs(kwargs: dict[str, object]) -> None:
    base = load_recipe("cifar-small").model_dump(mode="json")
    allowed = {**base, "model": {**base["model"], "kwargs": {"drop_path_rate": 0.1}}}
    assert recipe_from_dict(allowed).model.kwargs == {"drop_path_rate": 0.1}
    refused = {**base, "model": {**base["model"], "kwargs": kwargs}}
    with pytest.raises(RecipeError, match="model kwargs"):
        recipe_from_dict(refused)
