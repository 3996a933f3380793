"""What the ``thresher ml`` commands share: their arguments (a manifest, a recipe with ``--set``
overrides, the cache and device options), parsing them into the library's objects with a CLI
error, and the result table.

Importable without torch, like every command module (see :mod:`ml.cli`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = [
    "CacheDirOpt",
    "DeviceOpt",
    "LabelColumnOpt",
    "ManifestArg",
    "RootOpt",
    "SetOpt",
    "manifest_arg",
    "print_table",
    "recipe_arg",
]

ManifestArg = Annotated[
    Path,
    typer.Argument(
        exists=True, help="A CSV (path,label[,sample_id]) or JSONL manifest, or an ImageFolder."
    ),
]
RootOpt = Annotated[
    Path | None,
    typer.Option(help="Resolve relative paths against this directory (default: the manifest's)."),
]
LabelColumnOpt = Annotated[str, typer.Option(help="CSV column / JSONL key holding the label.")]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        help="Decoded-cache directory (default: $THRESHER_CACHE_DIR or ~/.cache/thresher/decoded)."
    ),
]
DeviceOpt = Annotated[
    str | None, typer.Option(help="torch device, e.g. cuda or cpu (default: cuda if available).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe field: KEY=VALUE (dotted keys, YAML values)."),
]


def manifest_arg(manifest: Path, root: Path | None, label_column: str) -> Any:
    from ml.manifest import ManifestError, load_manifest

    try:
        return load_manifest(manifest, root=root, label_column=label_column)
    except ManifestError as error:
        raise typer.BadParameter(str(error), param_hint="MANIFEST") from error


def recipe_arg(name: str, overrides: list[str] | None) -> Any:
    from ml.core.recipes import RecipeError, parse_set_options
    from ml.recipes import load_recipe

    try:
        values = parse_set_options(overrides or [])
    except RecipeError as error:
        raise typer.BadParameter(str(error), param_hint="--set") from error
    try:
        return load_recipe(name, overrides=values)
    except RecipeError as error:
        raise typer.BadParameter(str(error), param_hint="--recipe") from error


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)
