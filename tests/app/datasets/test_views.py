"""The dataset pages' view models, built from hand-made service results (no database)."""

from __future__ import annotations

from app.datasets import views
from app.datasets.schemas import ModeCount


def test_mode_rows_have_shares_and_flag_images_that_are_not_three_channel() -> None:
    rows = views.mode_rows(
        [ModeCount("L", 1, 250), ModeCount("RGB", 3, 9_750), ModeCount("RGBA", 4, 0)]
    )
    assert [(r.mode, r.count, r.share, r.not_three_channel) for r in rows] == [
        ("RGB", "9,750", "97.5%", False),
        ("L", "250", "2.5%", True),
        ("RGBA", "0", "0.0%", True),
    ]
