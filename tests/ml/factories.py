"""Plain typed factories for the ML tests: tiny synthetic images, recipes and files.

Every function takes its randomness as an argument (a seed or a generator), so tests stay
independent of each other and of global RNG state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ml.embeddings import EmbeddingArray, EmbeddingSpace
from ml.recipes import Recipe, recipe_from_dict

PALETTE = np.array(
    [[220, 40, 40], [40, 200, 60], [50, 70, 230], [230, 210, 40], [200, 60, 200], [40, 200, 210]],
    dtype=np.float64,
)


def colour_images(labels: NDArray[np.int64], *, size: int = 16, seed: int = 0) -> NDArray[np.uint8]:
    """uint8 ``[N, size, size, 3]``: class ``c`` is a noisy square of colour ``PALETTE[c]``
    (3/4 of the side) at a random place on a grey noisy background: a tiny CNN learns it in a
    few epochs."""
    rng = np.random.default_rng(seed)
    n = labels.shape[0]
    images = rng.normal(128, 20, size=(n, size, size, 3))
    half = (3 * size) // 4
    for i, label in enumerate(labels):
        top, left = rng.integers(0, size - half + 1, size=2)
        patch = PALETTE[int(label)] + rng.normal(0, 10, size=(half, half, 3))
        images[i, top : top + half, left : left + half] = patch
    return np.clip(images, 0, 255).astype(np.uint8)


def balanced_labels(n: int, num_classes: int, *, seed: int = 0) -> NDArray[np.int64]:
    """``[n]`` labels, each class ``n // num_classes`` times (plus the remainder), shuffled."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def flip_labels(
    labels: NDArray[np.int64], num_classes: int, *, fraction: float, seed: int = 0
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Noisy labels with ``fraction`` of them moved to another class, and the flipped mask."""
    rng = np.random.default_rng(seed)
    flipped = np.zeros(labels.shape[0], dtype=bool)
    flipped[rng.choice(labels.shape[0], size=round(fraction * labels.shape[0]), replace=False)] = (
        True
    )
    noisy = labels.copy()
    shift = rng.integers(1, num_classes, size=int(flipped.sum()))
    noisy[flipped] = (labels[flipped] + shift) % num_classes
    return noisy, flipped


def tiny_recipe(**overrides: Any) -> Recipe:
    """A recipe that trains a very small conv net on 16×16 images in well under a second."""
    document: dict[str, Any] = {
        "name": "tiny-test",
        "model": {
            "name": "cifar_convnet_s",
            "kwargs": {"widths": [8, 16, 16], "stem_width": 8},
        },
        "image_size": 16,
        "epochs": 2,
        "batch_size": 16,
        "eval_batch_size": 64,
        "optimizer": {"name": "sgd", "lr": 0.1, "weight_decay": 5e-4},
        "schedule": {"warmup_epochs": 0},
        "augment": {"hflip": {"p": 0.5}},
        "seed": 0,
    }
    return recipe_from_dict(document, overrides=overrides)


def write_image(
    path: Path, pixels: NDArray[np.uint8], *, mode: str = "RGB", fmt: str = "PNG"
) -> Path:
    """Save ``[H, W, 3]`` pixels as an image file (converted to ``mode``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="RGB").convert(mode).save(path, format=fmt)
    return path


def image_folder(
    root: Path, images: NDArray[np.uint8], labels: NDArray[np.int64], classes: list[str]
) -> Path:
    """Write ``root/<class>/<i>.png`` for every image; returns ``root``."""
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        write_image(root / classes[int(label)] / f"{i:04d}.png", pixels)
    return root


def synthetic_space(**overrides: Any) -> EmbeddingSpace:
    """An embedding space for synthetic features (no backbone behind it)."""
    values: dict[str, Any] = {"backbone": "synthetic", "weights_sha256": "0" * 64, "image_size": 32}
    return EmbeddingSpace(**{**values, **overrides})


def cluster_features(
    labels: NDArray[np.int64], *, dim: int = 32, spread: float = 0.6, seed: int = 0
) -> EmbeddingArray:
    """Synthetic embeddings ``[N, dim]``: class ``c`` is a Gaussian cloud around its own random
    direction, shifted by a common offset (as real embeddings are)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(int(labels.max()) + 1, dim))
    values = 3.0 + centres[labels] + rng.normal(scale=spread, size=(labels.shape[0], dim))
    return EmbeddingArray(values.astype(np.float16), synthetic_space())


def head_recipe(**overrides: Any) -> Recipe:
    """A linear head on embeddings that trains in a fraction of a second."""
    document: dict[str, Any] = {
        "name": "tiny-head",
        "model": {"name": "efficientnet_lite0", "pretrained": True},
        "image_size": 32,
        "tta_flip": True,
        "head": {"kind": "linear"},
        "epochs": 15,
        "batch_size": 32,
        "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 1e-4},
        "seed": 0,
    }
    return recipe_from_dict(document, overrides=overrides)
