"""The dashboard's view models where the database adds nothing: class-size charts of thousands
of classes, and dropped classes."""

from __future__ import annotations

from app.models import ClassState
from app.pipeline.schemas import ClassSize
from app.pipeline.views import results


def size(class_id: int, before: int, after: int, *, dropped: bool = False) -> ClassSize:
    return ClassSize(
        class_id=class_id,
        name=f"class{class_id:04d}",
        state=ClassState.DROPPED if dropped else ClassState.ACTIVE,
        before=before,
        after=0 if dropped else after,
        sampled=0.0 if dropped else float(max(after, 10)),
        kept=after,
        rejected=before - after,
        junk=0,
        decision_id=None,
    )


def test_thousands_of_classes_are_drawn_in_a_few_hundred_bars_and_the_caption_says_so() -> None:
    classes = [size(i, 5000 // (i + 1) + 1, 4000 // (i + 1) + 1) for i in range(5000)]
    view = results.classes_view(classes)
    assert [c.key for c in view.charts] == ["before", "after", "sampled"]
    for item in view.charts:
        assert item.chart is not None
        assert len(item.chart.bars) == results.CLASS_CHART_BARS
        assert "each bar stands for up to 25 neighbouring classes" in item.chart.caption
        heights = [bar.height for bar in item.chart.bars]
        assert heights == sorted(heights, reverse=True)
    assert view.classes == "5,000"


def test_the_charts_share_one_scale() -> None:
    view = results.classes_view([size(1, 1000, 10), size(2, 50, 5)])
    ticks = [[t.label for t in item.chart.ticks] for item in view.charts if item.chart]
    assert ticks == [["1", "10", "100", "1k"]] * 3


def test_dropped_classes_are_left_out_after_cleaning_and_said_to_be() -> None:
    view = results.classes_view([size(1, 100, 80), size(2, 30, 20), size(3, 5, 3, dropped=True)])
    before, after, sampled = view.charts
    assert before.chart is not None and len(before.chart.bars) == 3
    assert after.chart is not None and len(after.chart.bars) == 2
    assert sampled.chart is not None and len(sampled.chart.bars) == 2
    assert "1 dropped class left out" in after.note
    assert [b.title for b in sampled.chart.bars] == ["class0001: 80 draws", "class0002: 20 draws"]
