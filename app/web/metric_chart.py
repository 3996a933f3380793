"""SVG line charts of per-epoch metrics (a job's training curves): every coordinate computed
here, so a template only places what it is given (``templates/_charts.html`` draws one)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from app.web.formatting import format_value

# The metrics chart, in SVG user units (it scales to the panel width).
CHART_WIDTH = 460
CHART_HEIGHT = 220
CHART_LEFT = 48
CHART_RIGHT = 10
CHART_TOP = 10
CHART_BOTTOM = 28
#: Series colours, by position in the legend (the CSS has a class per slot).
SERIES_SLOTS = 6


class EpochValues(Protocol):
    """One epoch's metrics (a job's ``JobMetric`` rows, a training run's ``EpochPoint``)."""

    @property
    def epoch(self) -> int: ...

    @property
    def values(self) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class Series:
    name: str
    slot: int
    points: str  # "x,y x,y …" for a <polyline>
    dots: list[tuple[float, float, str]]  # x, y, tooltip
    last: str


@dataclass(frozen=True)
class AxisTick:
    position: float
    label: str


@dataclass(frozen=True)
class MetricChart:
    """One panel: epochs on x, the series' values on y (linear, from 0 or the lowest value)."""

    title: str
    width: int
    height: int
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float
    series: list[Series]
    y_ticks: list[AxisTick]
    x_ticks: list[AxisTick]
    tick_label_x: float  # where the y ticks' labels end
    x_label_y: float  # the baseline of the x ticks' labels
    caption: str


def _nice_step(span: float, target: int = 4) -> float:
    raw = span / target if span > 0 else 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


@dataclass(frozen=True)
class _Scale:
    """Epochs ``first``..``last`` across ``left``..``right``, values ``low``..``high`` up from
    ``bottom`` to ``top`` (SVG y grows downwards); ``step``: between y ticks."""

    left: float
    right: float
    top: float
    bottom: float
    first: int
    last: int
    low: float
    high: float
    step: float
    percent: bool

    def x(self, epoch: int) -> float:
        if self.last == self.first:
            return (self.left + self.right) / 2
        return self.left + (self.right - self.left) * (epoch - self.first) / (
            self.last - self.first
        )

    def y(self, value: float) -> float:
        return self.bottom - (self.bottom - self.top) * (value - self.low) / (self.high - self.low)

    def label(self, value: float) -> str:
        return f"{value * 100:.0f}%" if self.percent else format_value(value)


def _scale(finite: Sequence[float], epochs: Sequence[int], *, percent: bool) -> _Scale:
    """The axes for these (finite) values: from 0 (or the lowest value) up to a whole tick;
    ``percent``: fractions, at least 0–1."""
    if percent:
        low, high = 0.0, max(1.0, max(finite))
    else:
        low = min(0.0, min(finite))
        high = max(finite)
    step = _nice_step(high - low)
    high = math.ceil(high / step) * step if high > low else low + step
    return _Scale(
        left=float(CHART_LEFT),
        right=float(CHART_WIDTH - CHART_RIGHT),
        top=float(CHART_TOP),
        bottom=float(CHART_HEIGHT - CHART_BOTTOM),
        first=min(epochs),
        last=max(epochs),
        low=low,
        high=high,
        step=step,
        percent=percent,
    )


def _series(metrics: Sequence[EpochValues], name: str, slot: int, scale: _Scale) -> Series | None:
    pairs = [
        (m.epoch, v) for m in metrics if (v := m.values.get(name)) is not None and math.isfinite(v)
    ]
    if not pairs:
        return None
    coords = [(round(scale.x(e), 2), round(scale.y(v), 2)) for e, v in pairs]
    return Series(
        name=name,
        slot=slot % SERIES_SLOTS,
        points=" ".join(f"{x},{y}" for x, y in coords),
        dots=[
            (x, y, f"{name}, epoch {e}: {scale.label(v)}")
            for (x, y), (e, v) in zip(coords, pairs, strict=True)
        ],
        last=scale.label(pairs[-1][1]),
    )


def _y_ticks(scale: _Scale) -> list[AxisTick]:
    ticks = []
    tick = scale.low
    while tick <= scale.high + scale.step / 1000:
        ticks.append(AxisTick(round(scale.y(tick), 2), scale.label(tick)))
        tick += scale.step
    return ticks


def _x_ticks(scale: _Scale) -> list[AxisTick]:
    """At most eight epochs labelled, evenly."""
    step = max(1, math.ceil((scale.last - scale.first + 1) / 8))
    return [
        AxisTick(round(scale.x(e), 2), str(e)) for e in range(scale.first, scale.last + 1, step)
    ]


def metric_chart(
    title: str, metrics: Sequence[EpochValues], names: Sequence[str], *, percent: bool = False
) -> MetricChart | None:
    """A chart of ``names`` (keys of each epoch's values) over epochs; None without data.
    ``percent``: values are fractions, shown 0–100 %."""
    epochs = [m.epoch for m in metrics]
    if not epochs or not names:
        return None
    values = [v for m in metrics for n in names if (v := m.values.get(n)) is not None]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    scale = _scale(finite, epochs, percent=percent)
    series = [
        line
        for slot, name in enumerate(names)
        if (line := _series(metrics, name, slot, scale)) is not None
    ]
    return MetricChart(
        title=title,
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        plot_left=scale.left,
        plot_right=scale.right,
        plot_top=scale.top,
        plot_bottom=scale.bottom,
        tick_label_x=scale.left - 6,
        x_label_y=scale.bottom + 16,
        series=series,
        y_ticks=_y_ticks(scale),
        x_ticks=_x_ticks(scale),
        caption=f"{title} per epoch: " + ", ".join(f"{s.name} {s.last}" for s in series),
    )


def metric_names(metrics: Sequence[EpochValues]) -> tuple[list[str], list[str]]:
    """The loss-like and the accuracy-like metric names, in first-seen order."""
    seen: list[str] = []
    for m in metrics:
        seen.extend(name for name in m.values if name not in seen)
    losses = [n for n in seen if "loss" in n.lower()]
    accuracies = [n for n in seen if "acc" in n.lower()]
    return losses, accuracies


__all__ = [
    "AxisTick",
    "EpochValues",
    "MetricChart",
    "Series",
    "metric_chart",
    "metric_names",
]
