"""The ``augment-preview`` command (ml/cli.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from ml.cli import augment_preview

RECIPE = """\
image_size: 32
augment:
  random_resized_crop: {scale: [0.5, 1.0]}
  hflip: {p: 0.5}
  rotate4: {p: 0.5}
  grid_shuffle: {grid: 2, p: 0.5}
  random_quality: {jpeg_p: 1.0}
  cutmix: {alpha: 1.0, p: 1.0}
"""


@pytest.fixture
def cli() -> typer.Typer:
    """The command registered the way the top-level ``thresher`` CLI registers it."""
    app = typer.Typer()
    app.command("augment-preview")(augment_preview)

    @app.command("noop")
    def noop() -> None:
        """Keeps typer in multi-command mode, as in the real CLI."""

    return app


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    y, x = np.mgrid[0:60, 0:80]
    pixels = np.stack([x * 3, y * 4, (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    return path


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE, encoding="utf-8")
    return path


def test_augment_preview_writes_a_png_grid(
    cli: typer.Typer, photo: Path, recipe_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "previews" / "grid.png"
    result = CliRunner().invoke(
        cli,
        [
            "augment-preview",
            str(photo),
            "--recipe",
            str(recipe_file),
            "--out",
            str(out),
            "--n",
            "6",
        ],
    )
    assert result.exit_code == 0, result.output
    with Image.open(out) as grid:
        assert grid.format == "PNG"
        # 6 tiles of 32 px in 3 columns and 2 rows, 2 px apart and framed.
        assert grid.size == (2 + 3 * 34, 2 + 2 * 34)


def test_augment_preview_takes_a_shipped_recipe_by_name(
    cli: typer.Typer, photo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(
        cli,
        ["augment-preview", str(photo), "--recipe", "cifar-small", "--out", str(out), "--n", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "from recipe cifar-small" in result.output
    with Image.open(out) as grid:
        assert grid.format == "PNG"


def test_augment_preview_is_reproducible_with_a_seed(
    photo: Path, recipe_file: Path, tmp_path: Path
) -> None:
    outputs = []
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        out = tmp_path / f"{name}.png"
        augment_preview(photo, str(recipe_file), out, n=4, seed=seed, size=24)
        with Image.open(out) as grid:
            assert grid.size == (2 + 2 * 26, 2 + 2 * 26)
            outputs.append(np.asarray(grid))
    assert np.array_equal(outputs[0], outputs[1])
    assert not np.array_equal(outputs[0], outputs[2])


def test_augment_preview_reports_a_bad_recipe(
    cli: typer.Typer, photo: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("augment:\n  hflip: {q: 1}\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["augment-preview", str(photo), "--recipe", str(bad), "--out", str(tmp_path / "x.png")]
    )
    assert result.exit_code != 0
    assert "hflip.q" in result.output
    missing = CliRunner().invoke(
        cli,
        ["augment-preview", str(photo), "--recipe", "no-such-recipe", "--out", "x.png"],
    )
    assert missing.exit_code != 0
    assert "no-such-recipe" in missing.output
    assert "cifar-small" in missing.output  # the shipped names it would take
