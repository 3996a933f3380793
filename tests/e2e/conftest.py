"""Fixtures of the end-to-end tests: the real-process stack (:mod:`bench.harness.stack`) and the
real data (:mod:`bench.harness.labelled_sets`), images extracted once per session from
``../shared/data`` into a temporary folder (never into the repository).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bench.harness.labelled_sets import RealSet, caltech_junk_mix, cifar_first_per_class
from bench.harness.stack import Stack, running_stack

__all__ = ["FAST_RECIPES", "RealSet", "Stack"]

#: Every recipe of the end-to-end runs: one short epoch of the small network on 32-px images.
FAST_RECIPES: dict[str, Any] = {
    "junk_recipe": "cifar-small",
    "fold_recipe": "cifar-small",
    "pullback_recipes": ["cifar-pullback-a"],
    "final_recipe": "cifar-small",
    "recipe_overrides": {
        "epochs": 1,
        "schedule.warmup_epochs": 0,
        "batch_size": 32,
        "eval_batch_size": 250,
        "loader_workers": 0,
        "tta_flip": False,
        "augment": {"hflip": {"p": 0.5}},
    },
}

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

CALTECH_CLASSES = (
    "airplanes",
    "Motorbikes",
    "Faces_easy",
    "Leopards",
    "car_side",
    "watch",
    "sunflower",
    "ketch",
)


def _shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} is missing (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def cifar_noisy(tmp_path_factory: pytest.TempPathFactory) -> RealSet:
    """120 CIFAR-10 training images per class with their CIFAR-10N ``aggre`` labels (about 9%
    wrong), the first of each class in the original order."""
    labels = _shared("cifar10", "train_labels.csv")
    archive = _shared("cifar10", "train.tar")
    root = tmp_path_factory.mktemp("cifar10n")
    return cifar_first_per_class(labels, archive, root, per_class=120, column="aggre")


@pytest.fixture(scope="session")
def cifar_worse(tmp_path_factory: pytest.TempPathFactory) -> RealSet:
    """150 CIFAR-10 training images per class with their CIFAR-10N ``worse`` labels (about
    40% wrong), the first of each class in the original order."""
    labels = _shared("cifar10", "train_labels.csv")
    archive = _shared("cifar10", "train.tar")
    root = tmp_path_factory.mktemp("cifar10n-worse")
    return cifar_first_per_class(labels, archive, root, per_class=150, column="worse")


@pytest.fixture(scope="session")
def cifar_test(tmp_path_factory: pytest.TempPathFactory) -> RealSet:
    """The first 100 CIFAR-10 test images of each class, with their labels."""
    labels = _shared("cifar10", "test_labels.csv")
    archive = _shared("cifar10", "test.tar")
    root = tmp_path_factory.mktemp("cifar10-test")
    return cifar_first_per_class(
        labels, archive, root, per_class=100, column="label", clean_column="label"
    )


@pytest.fixture(scope="session")
def caltech_with_junk(tmp_path_factory: pytest.TempPathFactory) -> RealSet:
    """50 Caltech-101 images of each of 8 classes, and 150 BACKGROUND_Google images filed
    under random classes of them as junk (27% of the set)."""
    archive = _shared("caltech101", "caltech101.tar")
    root = tmp_path_factory.mktemp("caltech")
    return caltech_junk_mix(archive, root, classes=CALTECH_CLASSES, per_class=50, background=150)


@pytest.fixture
def stack(db_url: str, session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[Stack]:
    with running_stack(db_url, session_factory, tmp_path) as running:
        yield running
