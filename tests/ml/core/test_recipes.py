"""Finding and reading recipes, and the dotted overrides (ml/core/recipes.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.core.recipes import (
    RECIPES_DIR,
    RecipeError,
    apply_overrides,
    list_recipes,
    parse_set_options,
    read_recipe,
    recipe_path,
    shipped_recipe,
)


def test_a_shipped_name_resolves_to_its_file() -> None:
    assert "cifar-small" in list_recipes()
    assert recipe_path("cifar-small") == RECIPES_DIR / "cifar-small.yaml"
    assert shipped_recipe("cifar-small") == RECIPES_DIR / "cifar-small.yaml"


def test_a_yaml_path_resolves_to_itself(tmp_path: Path) -> None:
    path = tmp_path / "mine.yml"
    path.write_text("name: mine\n", encoding="utf-8")
    assert recipe_path(path) == path
    assert recipe_path(str(path)) == path
    assert read_recipe(path) == {"name": "mine"}


def test_an_unknown_recipe_lists_the_shipped_ones() -> None:
    with pytest.raises(RecipeError, match=r"give a YAML path or one of .*cifar-small"):
        recipe_path("no-such-recipe")


@pytest.mark.parametrize("name", ["../recipes/cifar-small", "/etc/passwd", "", "a/b"])
def test_a_shipped_name_never_leaves_the_recipes_directory(name: str) -> None:
    assert shipped_recipe(name) is None


@pytest.mark.parametrize(("text", "reason"), [("a: [", "not valid YAML"), ("- 1\n", "mapping")])
def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RecipeError, match=reason):
        read_recipe(path)


def test_dotted_overrides_set_nested_keys_and_create_sections() -> None:
    document: dict[str, object] = {"epochs": 5, "optimizer": {"lr": 0.1, "name": "sgd"}}
    apply_overrides(document, {"epochs": 2, "optimizer.lr": 0.5, "ema.decay": 0.99})
    assert document == {
        "epochs": 2,
        "optimizer": {"lr": 0.5, "name": "sgd"},
        "ema": {"decay": 0.99},
    }


def test_an_override_through_a_value_is_refused() -> None:
    with pytest.raises(
        RecipeError, match=r"recipe override 'epochs\.x': 'epochs' is not a section"
    ):
        apply_overrides({"epochs": 5}, {"epochs.x": 1})


def test_set_options_read_their_values_as_yaml() -> None:
    assert parse_set_options(["epochs=2", "optimizer.lr=0.5", " tta_flip = true", "seed=null"]) == {
        "epochs": 2,
        "optimizer.lr": 0.5,
        "tta_flip": True,
        "seed": None,
    }


@pytest.mark.parametrize("item", ["epochs", "=2", " =2"])
def test_a_set_option_without_a_key_and_value_is_refused(item: str) -> None:
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        parse_set_options([item])
