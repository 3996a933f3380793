"""The class-size chart: one bar per class (or per run of neighbouring classes), largest first,
over a log10 axis; every coordinate computed here, so ``templates/_charts.html`` only places what
it is given. The dataset page draws one, the cleaning dashboard three side by side."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from app.web.formatting import number, plural, short_number

# The class-size chart, in SVG user units (it scales to the page width).
CHART_WIDTH = 960
CHART_HEIGHT = 260
CHART_MARGIN_LEFT = 44
CHART_MARGIN_RIGHT = 8
CHART_MARGIN_TOP = 10
CHART_MARGIN_BOTTOM = 8
#: Above this many classes, neighbouring classes (in size order) share a bar: the SVG stays small.
MAX_BARS = 300
#: A class with one image sits at the log axis's 1; it still gets this many units of bar.
MIN_BAR_HEIGHT = 3.0


class NamedCount(Protocol):
    """A class and how many of something it has (a dataset's ``ClassCount``)."""

    @property
    def name(self) -> str: ...

    @property
    def count(self) -> int: ...


@dataclass(frozen=True)
class Bar:
    """One bar, up to the largest class it stands for. A bar for several classes also has a
    floor: the part up to the smallest of them (``floor_height`` 0 for a single class)."""

    x: float
    y: float
    width: float
    height: float
    floor_y: float
    floor_height: float
    title: str


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class ChartNote:
    label: str
    value: str


@dataclass(frozen=True)
class ClassChart:
    """Bars sorted by class size, descending, over a log10 y axis with ticks at powers of ten.

    A bar's height is ``log10(count) / top_exponent`` of the plot height, at least
    ``MIN_BAR_HEIGHT`` for any class with an image; with more than ``MAX_BARS`` classes each bar
    stands for a run of neighbouring classes and is as tall as the largest of them.
    """

    width: int
    height: int
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float
    tick_label_x: float
    bars: list[Bar]
    ticks: list[Tick]
    classes_per_bar: int
    grouped: bool
    caption: str
    axis_label: str
    axis_label_x: float  # along the axis label's rotated baseline: the plot's middle, negated
    notes: list[ChartNote]


def class_chart(
    classes: Sequence[NamedCount],
    *,
    unit: str = "image",
    max_bars: int = MAX_BARS,
    width: int = CHART_WIDTH,
    height: int = CHART_HEIGHT,
    largest: int = 0,
) -> ClassChart | None:
    """The chart for ``classes`` (any order), or None when there are no classes. ``unit``:
    what a class counts (``image``: images per class); ``largest``: draw the axis up to at least
    this count (charts drawn side by side share their scale)."""
    if not classes:
        return None
    ordered = sorted(classes, key=lambda c: (-c.count, c.name))
    top_exponent = _top_exponent(max(ordered[0].count, largest))

    left, right = float(CHART_MARGIN_LEFT), float(width - CHART_MARGIN_RIGHT)
    top, bottom = float(CHART_MARGIN_TOP), float(height - CHART_MARGIN_BOTTOM)
    plot_height = bottom - top

    def bar_height(count: int) -> float:
        if count <= 0:
            return 0.0
        return max(MIN_BAR_HEIGHT, plot_height * math.log10(count) / top_exponent)

    groups = _group(len(ordered), max_bars)
    bars = _bars(ordered, groups, unit, left=left, right=right, bottom=bottom, height=bar_height)
    ticks = [
        Tick(y=_r(bottom - plot_height * exponent / top_exponent), label=short_number(10**exponent))
        for exponent in range(top_exponent + 1)
    ]
    per_bar = -(-len(ordered) // len(groups))
    return ClassChart(
        width=width,
        height=height,
        plot_left=left,
        plot_right=right,
        plot_top=top,
        plot_bottom=bottom,
        tick_label_x=left - 6,
        bars=bars,
        ticks=ticks,
        classes_per_bar=per_bar,
        grouped=per_bar > 1,
        caption=_caption(len(ordered), unit, per_bar),
        axis_label=f"{unit}s per class (log scale)",
        axis_label_x=-(top + bottom) / 2,
        notes=_chart_notes(ordered),
    )


def _bars(
    ordered: Sequence[NamedCount],
    groups: list[tuple[int, int]],
    unit: str,
    *,
    left: float,
    right: float,
    bottom: float,
    height: Callable[[int], float],
) -> list[Bar]:
    """A bar per run of ``groups`` side by side from ``left`` to ``right``, standing on
    ``bottom``; ``height``: a count's bar height."""
    slot = (right - left) / len(groups)
    gap = slot * 0.2 if slot >= 4 else 0.0
    bars = []
    for index, (start, end) in enumerate(groups):
        tallest = height(ordered[start].count)
        floor = height(ordered[end - 1].count) if end - start > 1 else 0.0
        bars.append(
            Bar(
                x=_r(left + index * slot + gap / 2),
                y=_r(bottom - tallest),
                width=_r(max(slot - gap, 0.5)),
                height=_r(tallest),
                floor_y=_r(bottom - floor),
                floor_height=_r(floor),
                title=_bar_title(ordered, start, end, unit),
            )
        )
    return bars


def _caption(classes: int, unit: str, per_bar: int) -> str:
    caption = f"{plural(classes, 'class', 'classes')}, largest first; {unit}s per class, log scale"
    if per_bar > 1:
        caption += (
            f"; each bar stands for up to {per_bar} neighbouring classes, "
            "dark up to the smallest of them, light up to the largest"
        )
    return caption


def _top_exponent(largest: int) -> int:
    """The smallest k >= 1 with 10**k >= largest: the axis top."""
    exponent = 1
    while 10**exponent < largest:
        exponent += 1
    return exponent


def _group(count: int, most: int) -> list[tuple[int, int]]:
    """Splits ``range(count)`` into at most ``most`` consecutive, non-empty, near-equal runs."""
    parts = min(count, most)
    return [(i * count // parts, (i + 1) * count // parts) for i in range(parts)]


def _bar_title(ordered: Sequence[NamedCount], start: int, end: int, unit: str) -> str:
    first = ordered[start]
    if end - start == 1:
        return f"{first.name}: {plural(first.count, unit)}"
    last = ordered[end - 1]
    if first.count == last.count:
        sizes = plural(first.count, unit) + " each"
    else:
        sizes = f"{number(last.count)}–{number(first.count)} {unit}s"
    return (
        f"classes #{number(start + 1)}–#{number(end)} by size: {sizes} ({first.name} … {last.name})"
    )


def _chart_notes(ordered: Sequence[NamedCount]) -> list[ChartNote]:
    largest, smallest = ordered[0], ordered[-1]
    median = statistics.median(c.count for c in ordered)
    median_text = number(int(median)) if float(median).is_integer() else f"{median:,.1f}"
    notes = [
        ChartNote("Largest", f"{largest.name} ({number(largest.count)})"),
        ChartNote("Median", median_text),
        ChartNote("Smallest", f"{smallest.name} ({number(smallest.count)})"),
    ]
    if smallest.count > 0:
        ratio = largest.count / smallest.count
        notes.append(ChartNote("Imbalance", f"{ratio:,.1f}×"))
    else:
        empty = sum(1 for c in ordered if c.count == 0)
        notes.append(ChartNote("Empty classes", number(empty)))
    return notes


def _r(value: float) -> float:
    return round(value, 2)
