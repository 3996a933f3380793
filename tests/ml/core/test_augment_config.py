"""A recipe's augmentation settings (ml/core/augment_config.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ml.core.augment_config import AugmentConfig, RandomQualityConfig, quality_size_range
from tests.ml.augment.factories import EVERYTHING_ON


def test_quality_range_holds_at_reference_size_and_scales_below_it() -> None:
    config = RandomQualityConfig()
    assert quality_size_range(config, 224) == (150, 190)
    assert quality_size_range(config, 448) == (150, 190)
    assert quality_size_range(config, 32) == (21, 27)
    assert quality_size_range(config, 1) == (1, 1)


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


def test_config_round_trips_through_json_ready_dicts() -> None:
    config = AugmentConfig.model_validate(EVERYTHING_ON)
    dumped = config.model_dump(mode="json", exclude_none=True)
    assert dumped["random_resized_crop"]["scale"] == [0.3, 1.0]
    assert AugmentConfig.model_validate(dumped) == config
