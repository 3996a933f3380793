"""The demo dataset: real handwritten digits with real photos mixed in as junk and flipped labels.

Built from images that ship inside scikit-learn (the 1,797 UCI handwritten digits, upscaled, and
crops of its two sample photographs), so ``make demo`` needs no download. The ground truth of
every file (clean label, junk or not) is written beside the image folder, for simulated
annotators and for checking what the cleaning loop finds.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

DIGIT_SIZE = 64
JUNK_COUNT = 60
GRAYSCALE_DIGITS = 40
FLIP_FRACTION = 0.08
COMPLETE_MARKER = ".complete"


@dataclass(frozen=True)
class DemoDataset:
    images: Path  # the ImageFolder root: images/<class>/<file>
    truth: Path  # CSV: path,given_label,clean_label,junk
    files: int
    junk: int
    flipped: int


def build_demo_dataset(directory: Path, *, seed: int = 0) -> DemoDataset:
    """Writes the demo ImageFolder under ``directory`` (once; later calls reuse it)."""
    images, truth = directory / "images", directory / "truth.csv"
    if (directory / COMPLETE_MARKER).exists():
        return _summarise(images, truth)
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    rows = _write_files(staging / "images", np.random.default_rng(seed))
    with (staging / "truth.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "given_label", "clean_label", "junk"])
        writer.writerows(rows)
    (staging / COMPLETE_MARKER).touch()
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    return _summarise(images, truth)


def _summarise(images: Path, truth: Path) -> DemoDataset:
    with truth.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return DemoDataset(
        images=images,
        truth=truth,
        files=len(rows),
        junk=sum(row["junk"] == "1" for row in rows),
        flipped=sum(
            row["junk"] == "0" and row["given_label"] != row["clean_label"] for row in rows
        ),
    )


def _write_files(root: Path, rng: np.random.Generator) -> list[tuple[str, str, str, int]]:
    from sklearn.datasets import load_digits, load_sample_images

    digits = load_digits()
    classes = [str(label) for label in range(10)]
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)

    count = len(digits.target)
    flipped = set(rng.choice(count, size=round(FLIP_FRACTION * count), replace=False).tolist())
    grayscale = set(rng.choice(count, size=GRAYSCALE_DIGITS, replace=False).tolist())
    rows: list[tuple[str, str, str, int]] = []
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        clean = classes[int(target)]
        given = clean
        if index in flipped:
            given = classes[(int(target) + int(rng.integers(1, 10))) % 10]
        image = _render_digit(pixels, rng)
        if index in grayscale:
            path = f"{given}/digit_{index:04d}.png"
            image.convert("L").save(root / path)
        else:
            path = f"{given}/digit_{index:04d}.jpg"
            image.save(root / path, quality=90)
        rows.append((path, given, clean, 0))

    photos = load_sample_images().images
    for index in range(JUNK_COUNT):
        photo = photos[index % len(photos)]
        given = classes[int(rng.integers(0, 10))]
        image = _random_crop(photo, rng)
        kind = index % 4
        if kind == 0:
            path = f"{given}/web_{index:03d}.png"
            image.convert("L").save(root / path)
        elif kind == 1:
            path = f"{given}/web_{index:03d}.png"
            image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(root / path)
        else:
            path = f"{given}/web_{index:03d}.jpg"
            image.save(root / path, quality=85)
        rows.append((path, given, "", 1))
    return rows


def _render_digit(pixels: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """An 8×8 digit (values 0–16) as dark ink on tinted paper, upscaled to 64×64 RGB."""
    ink = Image.fromarray((pixels / 16.0 * 255).astype(np.uint8), mode="L")
    ink = ink.resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.BICUBIC)
    ink = ink.filter(ImageFilter.GaussianBlur(radius=0.9))
    alpha = np.asarray(ink, dtype=np.float32)[..., None] / 255.0
    paper = rng.uniform(200, 250, size=3).astype(np.float32)
    pen = rng.uniform(10, 80, size=3).astype(np.float32)
    noise = rng.normal(0, 4, size=(DIGIT_SIZE, DIGIT_SIZE, 1)).astype(np.float32)
    rgb = paper * (1 - alpha) + pen * alpha + noise
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")


def _random_crop(photo: np.ndarray, rng: np.random.Generator) -> Image.Image:
    height, width = photo.shape[:2]
    side = int(rng.integers(80, min(height, width)))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = Image.fromarray(photo[top : top + side, left : left + side])
    return crop.resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.LANCZOS)
