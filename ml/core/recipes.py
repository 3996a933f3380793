"""Finding a training recipe and reading it: the one lookup the server, the CLI and the worker
share, and the dotted overrides (``{"optimizer.lr": 0.05}``, the CLI's ``--set KEY=VALUE``).

The shipped recipes are ``ml/recipes/<name>.yaml``. The server accepts only shipped names
(:func:`shipped_recipe`); the CLI and the worker also accept a path to any YAML file
(:func:`recipe_path`). Validating a document into a recipe is :func:`ml.recipes.recipe_from_dict`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "RECIPES_DIR",
    "RecipeError",
    "apply_overrides",
    "list_recipes",
    "parse_set_options",
    "read_recipe",
    "recipe_path",
    "shipped_recipe",
]

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"

#: What a shipped recipe's name looks like (a file name without a directory).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RecipeError(ValueError):
    """A recipe cannot be found, parsed or validated; the message names the field."""


def list_recipes() -> list[str]:
    """Names of the shipped recipes."""
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def shipped_recipe(name: str) -> Path | None:
    """The file of the shipped recipe ``name`` (``"cifar-small"``), or ``None`` when there is
    none; never a file outside :data:`RECIPES_DIR`."""
    path = RECIPES_DIR / f"{name}.yaml"
    return path if _NAME.fullmatch(name) and path.is_file() else None


def recipe_path(name_or_path: str | Path) -> Path:
    """The file of a recipe given by a YAML path (``.yaml``/``.yml``, existing) or a shipped
    name.

    Raises:
        RecipeError: neither; the message lists the shipped recipes.
    """
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} and path.is_file():
        return path
    shipped = shipped_recipe(str(name_or_path))
    if shipped is None:
        raise RecipeError(
            f"no recipe {str(name_or_path)!r}: give a YAML path or one of "
            f"{', '.join(list_recipes())}"
        )
    return shipped


def read_recipe(path: Path) -> dict[str, Any]:
    """A recipe file's YAML as a mapping, not validated.

    Raises:
        RecipeError: the file is not YAML or does not hold a mapping.
    """
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise RecipeError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise RecipeError(f"{path} must hold a mapping of recipe fields")
    return document


def apply_overrides(document: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """Sets each dotted key of ``overrides`` in ``document``, in place: ``{"optimizer.lr": 0.1}``
    sets ``document["optimizer"]["lr"]``, creating missing sections.

    Raises:
        RecipeError: a part of a key names a value that is not a section.
    """
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = document
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"recipe override {dotted!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value


def parse_set_options(items: Iterable[str]) -> dict[str, Any]:
    """The CLI's ``--set KEY=VALUE`` options as a mapping, each value read as YAML (a number, a
    boolean, a list, null); for a recipe the keys may be dotted (:func:`apply_overrides`).

    Raises:
        RecipeError: an item without ``=`` or without a key.
    """
    values: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"expected KEY=VALUE, got {item!r}")
        values[key.strip()] = yaml.safe_load(value)
    return values
