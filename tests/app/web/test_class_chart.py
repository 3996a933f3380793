"""The class-size chart: bar order and heights on the log axis, ticks, grouping, notes."""

from __future__ import annotations

import itertools
import math

from app.datasets.schemas import ClassCount
from app.web.class_chart import MAX_BARS, MIN_BAR_HEIGHT, ChartNote, class_chart


def classes(*counts: int) -> list[ClassCount]:
    return [ClassCount(id=i + 1, name=f"class{i}", count=count) for i, count in enumerate(counts)]


def test_bar_heights_grow_with_class_size() -> None:
    chart = class_chart(classes(5000, 700, 120, 45, 9, 3, 2, 1))
    assert chart is not None
    heights = [bar.height for bar in chart.bars]
    assert heights == sorted(heights, reverse=True)
    assert len(set(heights)) == len(heights)


def test_bars_are_sorted_by_count_descending_whatever_the_input_order() -> None:
    chart = class_chart(classes(3, 300, 30))
    assert chart is not None
    assert [bar.title for bar in chart.bars] == [
        "class1: 300 images",
        "class2: 30 images",
        "class0: 3 images",
    ]


def test_class_with_one_image_gets_a_visible_bar() -> None:
    chart = class_chart(classes(10_000, 1))
    assert chart is not None
    smallest = chart.bars[-1]
    assert smallest.height >= MIN_BAR_HEIGHT
    assert smallest.y + smallest.height == chart.plot_bottom
    assert smallest.title == "class1: 1 image"


def test_bar_height_is_logarithmic_in_count() -> None:
    chart = class_chart(classes(1000, 100, 10))
    assert chart is not None
    plot = chart.plot_bottom - chart.plot_top
    assert [bar.height for bar in chart.bars] == [
        round(plot, 2),
        round(plot * 2 / 3, 2),
        round(plot / 3, 2),
    ]


def test_ticks_are_powers_of_ten_up_to_the_largest_class() -> None:
    chart = class_chart(classes(3500, 12, 1))
    assert chart is not None
    assert [tick.label for tick in chart.ticks] == ["1", "10", "100", "1k", "10k"]
    ys = [tick.y for tick in chart.ticks]
    assert ys[0] == chart.plot_bottom
    assert ys[-1] == chart.plot_top
    gaps = {round(upper - lower, 2) for upper, lower in itertools.pairwise(ys)}
    assert len(gaps) == 1  # evenly spaced: a log axis


def test_top_tick_is_the_largest_class_when_it_is_a_power_of_ten() -> None:
    chart = class_chart(classes(1000, 5))
    assert chart is not None
    assert chart.ticks[-1].label == "1k"
    assert chart.bars[0].y == chart.plot_top


def test_bars_fit_inside_the_plot() -> None:
    chart = class_chart(classes(*range(250, 0, -1)))
    assert chart is not None
    assert chart.bars[0].x >= chart.plot_left
    last = chart.bars[-1]
    assert last.x + last.width <= chart.plot_right + 0.01
    assert all(bar.y >= chart.plot_top for bar in chart.bars)


def test_thousands_of_classes_are_grouped_into_a_few_hundred_bars() -> None:
    counts = [max(1, int(800 * math.exp(-i / 900))) for i in range(5000)]
    chart = class_chart(classes(*counts))
    assert chart is not None
    assert len(chart.bars) == MAX_BARS
    assert chart.grouped and chart.classes_per_bar == 17
    assert "classes #1–#16 by size" in chart.bars[0].title
    heights = [bar.height for bar in chart.bars]
    assert heights == sorted(heights, reverse=True)


def test_grouped_bar_floor_reaches_down_to_its_smallest_class() -> None:
    chart = class_chart(classes(*([100] * 599), 1))
    assert chart is not None
    last = chart.bars[-1]
    assert last.floor_height == MIN_BAR_HEIGHT
    assert last.height > last.floor_height
    assert "1–100 images" in last.title


def test_class_with_no_images_draws_no_bar() -> None:
    chart = class_chart(classes(40, 0))
    assert chart is not None
    assert chart.bars[-1].height == 0
    assert ChartNote("Empty classes", "1") in chart.notes


def test_no_classes_gives_no_chart() -> None:
    assert class_chart([]) is None


def test_chart_notes_give_largest_median_smallest_and_imbalance() -> None:
    chart = class_chart(classes(500, 40, 5))
    assert chart is not None
    assert chart.notes == [
        ChartNote("Largest", "class0 (500)"),
        ChartNote("Median", "40"),
        ChartNote("Smallest", "class2 (5)"),
        ChartNote("Imbalance", "100.0×"),
    ]
