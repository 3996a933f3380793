"""``thresher ml …`` commands on an ImageFolder (ml/cli.py, ml/steps/)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ml.cli import ml_app, weights_app
from ml.recipes import dump_recipe
from tests.ml.factories import balanced_labels, colour_images, image_folder, tiny_recipe

CLASSES = ["blue", "green", "red"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    labels = balanced_labels(45, 3, seed=0)
    return image_folder(tmp_path / "data", colour_images(labels, size=16, seed=0), labels, CLASSES)


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(dump_recipe(tiny_recipe(epochs=1)))
    return path


def _run(*args: str | Path) -> str:
    result = CliRunner().invoke(ml_app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_ml_cli_imports_without_torch() -> None:
    code = "import sys; sys.modules['torch'] = None; import ml.cli; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_recipes_lists_the_shipped_recipes() -> None:
    output = _run("recipes")

    assert "cifar-small" in output.split()
    assert "name: pretrained-cpu-final" in _run("recipes", "pretrained-cpu-final")


def test_crossval_pullback_train_predict_on_an_image_folder(
    folder: Path, recipe_file: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    out = tmp_path / "cv"

    _run(
        "crossval",
        folder,
        "--out",
        out,
        "--folds",
        "3",
        "--recipe",
        recipe_file,
        "--cache-dir",
        cache,
        "--record-k",
        "2",
    )
    decisions = _rows(out / "decisions.csv")
    summary = json.loads((out / "summary.json").read_text())
    oof = np.load(out / "oof.npz")

    assert len(decisions) == 45
    assert {row["status"] for row in decisions} <= {"kept", "rejected"}
    assert summary["kept"] + summary["rejected"] == 45
    assert oof["probs"].shape == (45, 3) and oof["topk_ids"].shape == (45, 2)
    assert sorted(p.name for p in (out / "models").iterdir()) == ["fold-0", "fold-1", "fold-2"]

    _run(
        "pullback",
        folder,
        "--decisions",
        out / "decisions.csv",
        "--out",
        tmp_path / "pb",
        "--recipe",
        recipe_file,
        "--rounds",
        "1",
        "--cache-dir",
        cache,
    )
    after = _rows(tmp_path / "pb" / "decisions.csv")
    assert sum(r["status"] == "kept" for r in after) >= summary["kept"]

    _run(
        "train",
        folder,
        "--out",
        tmp_path / "model",
        "--recipe",
        recipe_file,
        "--decisions",
        tmp_path / "pb" / "decisions.csv",
        "--val",
        folder,
        "--cache-dir",
        cache,
    )
    history = json.loads((tmp_path / "model" / "history.json").read_text())
    assert history["epochs"][0]["val"]["num_samples"] == 45

    _run(
        "predict",
        folder,
        "--model",
        tmp_path / "model",
        "--out",
        tmp_path / "pred.csv",
        "--top-k",
        "2",
        "--probs",
        tmp_path / "probs.npy",
        "--cache-dir",
        cache,
    )
    predictions = _rows(tmp_path / "pred.csv")
    assert len(predictions) == 45
    assert all(len(row["topk_classes"].split(";")) == 2 for row in predictions)
    assert np.load(tmp_path / "probs.npy").shape == (45, 3)


def test_junk_train_and_score(tmp_path: Path, recipe_file: Path) -> None:
    rng = np.random.default_rng(0)
    normal = colour_images(np.zeros(12, dtype=np.int64), size=16)
    junk = rng.integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8)
    labels = np.array([0] * 12 + [1] * 6)
    folder = image_folder(
        tmp_path / "junk", np.concatenate([normal, junk]), labels, ["normal", "junk"]
    )

    _run(
        "junk-train",
        folder,
        "--out",
        tmp_path / "jm",
        "--recipe",
        recipe_file,
        "--cache-dir",
        tmp_path / "cache",
    )
    output = _run(
        "junk-score",
        folder,
        "--model",
        tmp_path / "jm",
        "--out",
        tmp_path / "s.csv",
        "--threshold",
        "0.5",
        "--cache-dir",
        tmp_path / "cache",
    )

    scores = _rows(tmp_path / "s.csv")
    assert len(scores) == 18
    assert all(0.0 <= float(row["p_junk"]) <= 1.0 for row in scores)
    assert "queued for review" in output


def test_junk_train_refuses_other_labels(folder: Path, recipe_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        ml_app,
        [
            "junk-train",
            str(folder),
            "--out",
            str(tmp_path / "j"),
            "--recipe",
            str(recipe_file),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
    )

    assert result.exit_code != 0
    assert "junk labels must be" in result.output


def test_bad_recipe_override_names_the_field(folder: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        ml_app,
        [
            "crossval",
            str(folder),
            "--out",
            str(tmp_path / "o"),
            "--recipe",
            "cifar-small",
            "--set",
            "optimizer.lr=-1",
        ],
    )

    assert result.exit_code != 0
    assert "optimizer.lr" in result.output


def test_weights_list_shows_every_backbone_and_what_is_converted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THRESHER_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("COLUMNS", "240")
    runner = CliRunner()

    before = runner.invoke(weights_app, ["list"])
    prepared = runner.invoke(weights_app, ["prepare", "efficientnet_lite0"])
    after = runner.invoke(weights_app, ["list"])

    assert before.exit_code == prepared.exit_code == after.exit_code == 0, prepared.output
    lite0 = next(line for line in before.output.splitlines() if "efficientnet_lite0 " in line)
    assert "yes (installed)" in lite0
    assert "efficientnet_lite1" in before.output and "efficientnet_lite2" in before.output
    assert "yes (converted)" in next(
        line for line in after.output.splitlines() if "efficientnet_lite0 " in line
    )
    assert list((tmp_path / "weights").iterdir())


def test_embed_fills_the_cache_once_and_crossval_reads_it(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "embeddings"
    monkeypatch.setenv("THRESHER_EMBEDDINGS_DIR", str(store))
    small = ["--set", "image_size=32"]

    first = _run("embed", folder, *small)
    files = sorted(p.relative_to(store) for p in store.rglob("*") if p.is_file())
    second = _run("embed", folder, *small)
    _run("crossval", folder, "--out", tmp_path / "cv", "--folds", "3", *small)

    assert first.startswith("45 embedded")
    assert second.startswith("0 embedded") and "45 reused" in second
    assert sorted(p.relative_to(store) for p in store.rglob("*") if p.is_file()) == files
    assert len(_rows(tmp_path / "cv" / "decisions.csv")) == 45


def test_embed_refuses_a_recipe_without_a_head(folder: Path, recipe_file: Path) -> None:
    result = CliRunner().invoke(
        ml_app, ["embed", str(folder), "--recipe", str(recipe_file)], env={"COLUMNS": "200"}
    )

    assert result.exit_code == 2
    assert "trains the whole network: name one with a head" in result.output
