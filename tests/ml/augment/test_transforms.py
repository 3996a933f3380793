"""Per-sample transforms and the pipeline a recipe builds (ml/augment/transforms.py)."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ml.augment.randomness import sample_generator
from ml.augment.transforms import (
    CenterCropResize,
    ColorJitter,
    GridShuffle,
    HFlip,
    RandomDownscale,
    RandomJpegQuality,
    RandomResizedCrop,
    Rotate4,
    ScaledPaste,
    build_sample_transform,
)
from ml.core.augment_config import AugmentConfig
from tests.ml.augment.factories import EVERYTHING_ON, random_image, smooth_image


def pixel_multiset(image: torch.Tensor) -> list[tuple[int, ...]]:
    """The image's RGB triples, sorted: equal for two images iff one permutes the other's pixels."""
    return sorted(map(tuple, image.reshape(3, -1).T.tolist()))


@pytest.fixture
def caltech_image(shared_data: Path, tmp_path: Path) -> torch.Tensor:
    """One real Caltech-101 photo, extracted to tmp_path, as uint8 [3, H, W]."""
    archive = shared_data / "caltech101" / "caltech101.tar"
    if not archive.is_file():
        pytest.skip(f"Caltech-101 archive not found at {archive}")
    member = "101_ObjectCategories/accordion/image_0001.jpg"
    with tarfile.open(archive) as tar:
        tar.extract(member, tmp_path, filter="data")
    with Image.open(tmp_path / member) as opened:
        array = np.asarray(opened.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


ALL_TRANSFORMS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "hflip": HFlip(p=1.0),
    "rotate4": Rotate4(p=1.0),
    "color_jitter": ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0),
    "downscale": RandomDownscale(10, 20, p=1.0),
    "jpeg": RandomJpegQuality(30, 70, p=1.0),
    "scaled_paste_mean": ScaledPaste(0.3, 0.9, fill="mean", p=1.0),
    "scaled_paste_random": ScaledPaste(0.3, 0.9, fill="random", p=1.0),
    "scaled_paste_colour": ScaledPaste(0.3, 0.9, fill=(1, 2, 3), p=1.0),
    "grid_shuffle": GridShuffle(grid=3, p=1.0),
    "random_resized_crop": RandomResizedCrop(32),
    "center_crop": CenterCropResize(32, crop_pct=0.875),
}


@pytest.mark.parametrize("name", sorted(ALL_TRANSFORMS))
def test_every_transform_keeps_dtype_and_shape(name: str) -> None:
    image = smooth_image(32, 32)
    for seed in range(5):
        out = ALL_TRANSFORMS[name](image, torch.Generator().manual_seed(seed))
        assert out.dtype == torch.uint8
        assert out.shape == image.shape


@pytest.mark.parametrize("name", sorted(set(ALL_TRANSFORMS) - {"center_crop", "hflip"}))
def test_seeded_transform_is_reproducible_and_seed_dependent(name: str) -> None:
    transform = ALL_TRANSFORMS[name]
    image = smooth_image(32, 32)
    first = transform(image, torch.Generator().manual_seed(7))
    again = transform(image, torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    others = [transform(image, torch.Generator().manual_seed(s)) for s in range(8, 16)]
    assert any(not torch.equal(first, other) for other in others)


def test_rotate4_equals_torch_rot90_for_each_quarter_turn() -> None:
    image = random_image(16, 16)
    seen = set()
    for seed in range(40):
        out = Rotate4(p=1.0)(image, torch.Generator().manual_seed(seed))
        matches = [k for k in (1, 2, 3) if torch.equal(out, torch.rot90(image, k, dims=(1, 2)))]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {1, 2, 3}


def test_rotate4_is_a_pixel_permutation() -> None:
    image = random_image(12, 12)
    for seed in range(6):
        out = Rotate4(p=1.0)(image, torch.Generator().manual_seed(seed))
        assert pixel_multiset(out) == pixel_multiset(image)


def test_rotate4_with_p_zero_is_identity() -> None:
    image = random_image()
    assert torch.equal(Rotate4(p=0.0)(image, torch.Generator().manual_seed(0)), image)


@pytest.mark.parametrize(("height", "width", "grid"), [(12, 12, 2), (34, 35, 3), (7, 9, 4)])
def test_grid_shuffle_is_a_pixel_permutation_of_whole_tiles(
    height: int, width: int, grid: int
) -> None:
    image = random_image(height, width)
    th, tw = height // grid, width // grid
    tiles = {
        tuple(image[:, r * th : (r + 1) * th, c * tw : (c + 1) * tw].flatten().tolist())
        for r in range(grid)
        for c in range(grid)
    }
    changed = False
    for seed in range(5):
        out = GridShuffle(grid=grid, p=1.0)(image, torch.Generator().manual_seed(seed))
        assert pixel_multiset(out) == pixel_multiset(image)
        out_tiles = {
            tuple(out[:, r * th : (r + 1) * th, c * tw : (c + 1) * tw].flatten().tolist())
            for r in range(grid)
            for c in range(grid)
        }
        assert out_tiles == tiles
        # Leftover strips (when the size is not a multiple of the grid) stay in place.
        assert torch.equal(out[:, grid * th :, :], image[:, grid * th :, :])
        assert torch.equal(out[:, :, grid * tw :], image[:, :, grid * tw :])
        changed |= not torch.equal(out, image)
    assert changed


def test_hflip_mirrors_columns_at_rate_p() -> None:
    image = random_image(5, 7)
    assert torch.equal(HFlip(p=1.0)(image, torch.Generator()), image.flip(-1))
    generator = torch.Generator().manual_seed(0)
    outputs = [HFlip(p=0.5)(image, generator) for _ in range(200)]
    flipped = sum(torch.equal(out, image.flip(-1)) for out in outputs)
    assert all(torch.equal(out, image) or torch.equal(out, image.flip(-1)) for out in outputs)
    assert 70 <= flipped <= 130


def test_jpeg_quality_keeps_size_and_adds_artefacts() -> None:
    image = smooth_image(37, 53)
    out = RandomJpegQuality(30, 30, p=1.0)(image, torch.Generator().manual_seed(0))
    assert out.shape == image.shape
    assert out.dtype == torch.uint8
    assert not torch.equal(out, image)
    assert (out.float() - image.float()).abs().mean() < 10  # degraded, not destroyed


def test_random_downscale_keeps_size_and_blurs() -> None:
    image = random_image(40, 50)
    out = RandomDownscale(10, 12, p=1.0)(image, torch.Generator().manual_seed(0))
    assert out.shape == image.shape
    # Down- then up-sampling removes high-frequency noise: neighbouring pixels get closer.
    assert out.float().diff(dim=-1).abs().mean() < image.float().diff(dim=-1).abs().mean() / 2


def test_scaled_paste_fills_the_canvas_outside_the_shrunk_image() -> None:
    image = torch.full((3, 40, 40), 200, dtype=torch.uint8)
    for seed in range(5):
        out = ScaledPaste(0.5, 0.5, fill=(1, 2, 3), p=1.0)(
            image, torch.Generator().manual_seed(seed)
        )
        inside = (out == 200).all(dim=0)
        assert int(inside.sum()) == 20 * 20
        assert torch.equal(out[:, ~inside], torch.tensor([[1], [2], [3]]).expand(3, 1200).byte())


def test_random_resized_crop_falls_back_to_a_centre_crop_for_extreme_shapes() -> None:
    crop = RandomResizedCrop(8, scale=(0.99, 1.0), ratio=(1.0, 1.0))
    top, left, h, w = crop.box(10, 100, torch.Generator().manual_seed(0))
    assert (h, w) == (10, 10) and (top, left) == (0, 45)


def test_eval_transform_is_a_deterministic_centre_crop() -> None:
    image = random_image(20, 30)
    transform = build_sample_transform(
        AugmentConfig.model_validate(EVERYTHING_ON), image_size=20, train=False
    )
    out = transform(image, torch.Generator().manual_seed(1))
    assert torch.equal(out, image[:, :, 5:25])
    assert torch.equal(out, transform(image, torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize(("height", "width"), [(40, 40), (50, 30), (17, 64)])
def test_pipeline_outputs_uint8_squares_of_the_training_size(
    train: bool, height: int, width: int
) -> None:
    config = AugmentConfig.model_validate(EVERYTHING_ON)
    transform = build_sample_transform(config, image_size=24, train=train)
    for seed in range(4):
        out = transform(smooth_image(height, width), sample_generator(seed, 0))
        assert out.dtype == torch.uint8
        assert out.shape == (3, 24, 24)


def test_pipeline_is_reproducible_with_a_seed_and_differs_with_another() -> None:
    config = AugmentConfig.model_validate(EVERYTHING_ON)
    transform = build_sample_transform(config, image_size=32, train=True)
    image = smooth_image(48, 40)
    first = [transform(image, sample_generator(3, i)) for i in range(4)]
    again = [transform(image, sample_generator(3, i)) for i in range(4)]
    other = [transform(image, sample_generator(4, i)) for i in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_pipeline_on_a_real_photo(caltech_image: torch.Tensor) -> None:
    config = AugmentConfig.model_validate(EVERYTHING_ON)
    transform = build_sample_transform(config, image_size=64, train=True)
    first = transform(caltech_image, sample_generator(0, 1))
    assert first.shape == (3, 64, 64) and first.dtype == torch.uint8
    assert torch.equal(first, transform(caltech_image, sample_generator(0, 1)))
    assert not torch.equal(first, transform(caltech_image, sample_generator(0, 2)))


def test_default_config_turns_everything_off() -> None:
    config = AugmentConfig()
    assert not config.batch_mixing
    image = random_image(30, 40)
    train = build_sample_transform(config, image_size=16, train=True)
    evaluation = build_sample_transform(config, image_size=16, train=False)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(train(image, generator), evaluation(image, generator))


def test_transform_rejects_a_float_image() -> None:
    transform = build_sample_transform(AugmentConfig(), image_size=8, train=True)
    with pytest.raises(ValueError, match="uint8"):
        transform(torch.zeros(3, 8, 8), torch.Generator())
