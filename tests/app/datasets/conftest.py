"""Fixtures of the dataset tests (files to import are made with tests/app/datasets/files.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.app.datasets.files import image_bytes, write


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A small clean ImageFolder: cat (3 images), dog (2 images)."""
    root = tmp_path / "images"
    for index, rel in enumerate(["cat/a.jpg", "cat/b.jpg", "cat/c.png", "dog/d.jpg", "dog/e.jpg"]):
        fmt = "PNG" if rel.endswith(".png") else "JPEG"
        write(root / rel, image_bytes(fmt, seed=100 + index))
    return root
