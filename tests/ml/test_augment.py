"""Per-sample transforms, recipe configs and batch mixing (ml/augment.py)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from ml.augment import (
    AugmentConfig,
    BatchMixer,
    CenterCropResize,
    ColorJitter,
    GridShuffle,
    HFlip,
    RandomDownscale,
    RandomJpegQuality,
    RandomQualityConfig,
    RandomResizedCrop,
    Rotate4,
    ScaledPaste,
    augment_samples,
    build_sample_transform,
    image_grid,
    normalize,
    quality_size_range,
    sample_generator,
)

EVERYTHING_ON = {
    "random_resized_crop": {"scale": [0.3, 1.0]},
    "scaled_paste": {"p": 0.5},
    "rotate4": {"p": 0.5},
    "hflip": {"p": 0.5},
    "color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
    "grid_shuffle": {"grid": 3, "p": 0.5},
    "random_quality": {"downscale_p": 0.5, "jpeg_p": 0.5},
    "cutmix": {"alpha": 1.0, "p": 0.5},
    "mixup": {"alpha": 0.2, "p": 0.5},
}


def random_image(height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)


def smooth_image(height: int = 48, width: int = 48) -> torch.Tensor:
    """Gradients with structure, so resizing and JPEG behave as on a photo."""
    y = torch.linspace(0, 1, height).view(height, 1).expand(height, width)
    x = torch.linspace(0, 1, width).view(1, width).expand(height, width)
    rgb = torch.stack([x, y, (x * y).sqrt()]) * 255
    return rgb.round().to(torch.uint8)


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


def test_quality_range_holds_at_reference_size_and_scales_below_it() -> None:
    config = RandomQualityConfig()
    assert quality_size_range(config, 224) == (150, 190)
    assert quality_size_range(config, 448) == (150, 190)
    assert quality_size_range(config, 32) == (21, 27)
    assert quality_size_range(config, 1) == (1, 1)


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


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"hflip": {"q": 0.5}}, "Extra inputs"),
        ({"flip": {"p": 0.5}}, "Extra inputs"),
        ({"rotate4": {"p": 1.5}}, "less than or equal to 1"),
        ({"grid_shuffle": {"grid": 1}}, "greater than or equal to 2"),
        ({"random_quality": {"min_size": 200, "max_size": 150}}, "min_size 200 is above"),
        ({"random_resized_crop": {"scale": [0.5, 0.2]}}, "scale"),
        ({"scaled_paste": {"fill": [0, 0, 300]}}, "fill colour"),
        ({"cutmix": {"p": 0.7}, "mixup": {"p": 0.5}}, "exceeds 1"),
    ],
)
def test_config_rejects_bad_recipes_with_a_clear_error(
    document: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        AugmentConfig.model_validate(document)


# --- batch mixing ------------------------------------------------------------------------------


def constant_batch(batch: int, height: int, width: int) -> torch.Tensor:
    """Image i is filled with the value i + 1, so every pixel tells which image it came from."""
    values = torch.arange(1, batch + 1, dtype=torch.float32).view(batch, 1, 1, 1)
    return values.expand(batch, 3, height, width).clone()


@pytest.mark.parametrize(("height", "width"), [(16, 16), (17, 23)])
def test_cutmix_label_weights_equal_the_pasted_area(height: int, width: int) -> None:
    batch = 6
    mixer = BatchMixer(AugmentConfig.model_validate({"cutmix": {"alpha": 1.0, "p": 1.0}}), batch)
    images = constant_batch(batch, height, width)
    partial_boxes = 0
    for seed in range(30):
        mixed, soft = mixer(images, torch.arange(batch), torch.Generator().manual_seed(seed))
        assert soft.shape == (batch, batch) and soft.dtype == torch.float32
        for i in range(batch):
            fractions = torch.stack([(mixed[i, 0] == c + 1).float().mean() for c in range(batch)])
            torch.testing.assert_close(soft[i], fractions, rtol=0, atol=1e-6)
        pasted = (mixed != images).any(dim=1)[0].float().mean()
        partial_boxes += int(0 < pasted < 1)
    assert partial_boxes > 0


def test_mixup_mixes_images_and_targets_with_the_same_weight() -> None:
    batch = 5
    mixer = BatchMixer(AugmentConfig.model_validate({"mixup": {"alpha": 0.4, "p": 1.0}}), batch)
    images = constant_batch(batch, 4, 4)
    for seed in range(5):
        mixed, soft = mixer(images, torch.arange(batch), torch.Generator().manual_seed(seed))
        torch.testing.assert_close(soft.sum(dim=1), torch.ones(batch))
        # Image i holds the value i + 1, so a mix's value is its label weights times (c + 1).
        expected = soft @ torch.arange(1, batch + 1, dtype=torch.float32)
        torch.testing.assert_close(mixed, expected.view(batch, 1, 1, 1).expand_as(mixed))
        assert not torch.equal(mixed, images)


def test_mixer_off_returns_images_and_one_hot_targets() -> None:
    mixer = BatchMixer(AugmentConfig(), num_classes=4)
    images = torch.rand(3, 3, 8, 8)
    mixed, soft = mixer(images, torch.tensor([3, 0, 1]), torch.Generator())
    assert not mixer.enabled
    assert torch.equal(mixed, images)
    assert torch.equal(soft, torch.eye(4)[[3, 0, 1]])


def test_mixer_applies_cutmix_or_mixup_at_their_rates() -> None:
    config = AugmentConfig.model_validate({"cutmix": {"p": 0.3}, "mixup": {"p": 0.3}})
    mixer = BatchMixer(config, num_classes=4)
    images = constant_batch(4, 8, 8)
    kinds = {"cutmix": 0, "mixup": 0, "none": 0}
    generator = torch.Generator().manual_seed(0)
    for _ in range(400):
        mixed, _ = mixer(images, torch.arange(4), generator)
        if torch.equal(mixed, images):
            kinds["none"] += 1
        elif torch.equal(mixed, mixed.round()):
            kinds["cutmix"] += 1
        else:
            kinds["mixup"] += 1
    assert 80 <= kinds["cutmix"] <= 160
    assert 80 <= kinds["mixup"] <= 160
    assert 120 <= kinds["none"] <= 200


def test_mixer_is_reproducible_with_a_seed() -> None:
    mixer = BatchMixer(AugmentConfig.model_validate({"cutmix": {"p": 1.0}}), num_classes=4)
    images = torch.rand(4, 3, 8, 8)
    a = mixer(images, torch.arange(4), torch.Generator().manual_seed(5))
    b = mixer(images, torch.arange(4), torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# --- helpers -----------------------------------------------------------------------------------


def test_normalize_maps_uint8_to_standardised_floats() -> None:
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    out = normalize(images, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert out.dtype == torch.float32 and out.shape == (2, 3, 2, 2)
    assert torch.equal(out[0], torch.full((3, 2, 2), -1.0))
    assert torch.equal(out[1], torch.full((3, 2, 2), 1.0))


def test_sample_generators_differ_by_key_and_repeat_by_key() -> None:
    def draw(*key: int) -> float:
        return float(torch.rand((), generator=sample_generator(*key)))

    assert draw(0, 1, 2) == draw(0, 1, 2)
    assert len({draw(0, 1, 2), draw(0, 2, 1), draw(1, 1, 2), draw(0, 1, 3)}) == 4


def test_augment_samples_and_grid_shapes() -> None:
    config = AugmentConfig.model_validate(EVERYTHING_ON)
    samples = augment_samples(smooth_image(40, 40), config, image_size=16, n=5, seed=0)
    assert samples.shape == (5, 3, 16, 16) and samples.dtype == torch.uint8
    grid = image_grid(samples, padding=2)
    assert grid.shape == (3, 2 + 2 * 18, 2 + 3 * 18)
    buffer = io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    assert buffer.getvalue().startswith(b"\x89PNG")


def test_config_round_trips_through_json_ready_dicts() -> None:
    config = AugmentConfig.model_validate(EVERYTHING_ON)
    dumped = config.model_dump(mode="json", exclude_none=True)
    assert dumped["random_resized_crop"]["scale"] == [0.3, 1.0]
    assert AugmentConfig.model_validate(dumped) == config
