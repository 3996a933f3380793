"""SVG line charts of per-epoch metrics (a job's training curves): every coordinate computed
here, so a template only places what it is given (``templates/jobs/_chart.html`` draws one)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

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
    caption: str


def _nice_step(span: float, target: int = 4) -> float:
    raw = span / target if span > 0 else 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def format_value(value: float) -> str:
    if value != 0 and (abs(value) >= 1000 or abs(value) < 0.01):
        return f"{value:.2g}"
    return f"{value:.3g}"


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
    left, right = float(CHART_LEFT), float(CHART_WIDTH - CHART_RIGHT)
    top, bottom = float(CHART_TOP), float(CHART_HEIGHT - CHART_BOTTOM)
    if percent:
        low, high = 0.0, max(1.0, max(finite))
    else:
        low = min(0.0, min(finite))
        high = max(finite)
    step = _nice_step(high - low)
    high = math.ceil(high / step) * step if high > low else low + step
    first, last = min(epochs), max(epochs)

    def x_of(epoch: int) -> float:
        if last == first:
            return (left + right) / 2
        return left + (right - left) * (epoch - first) / (last - first)

    def y_of(value: float) -> float:
        return bottom - (bottom - top) * (value - low) / (high - low)

    def label(value: float) -> str:
        return f"{value * 100:.0f}%" if percent else format_value(value)

    series = []
    for slot, name in enumerate(names):
        pairs = [
            (m.epoch, v)
            for m in metrics
            if (v := m.values.get(name)) is not None and math.isfinite(v)
        ]
        if not pairs:
            continue
        coords = [(round(x_of(e), 2), round(y_of(v), 2)) for e, v in pairs]
        series.append(
            Series(
                name=name,
                slot=slot % SERIES_SLOTS,
                points=" ".join(f"{x},{y}" for x, y in coords),
                dots=[
                    (x, y, f"{name}, epoch {e}: {label(v)}")
                    for (x, y), (e, v) in zip(coords, pairs, strict=True)
                ],
                last=label(pairs[-1][1]),
            )
        )
    y_ticks = []
    tick = low
    while tick <= high + step / 1000:
        y_ticks.append(AxisTick(round(y_of(tick), 2), label(tick)))
        tick += step
    x_step = max(1, math.ceil((last - first + 1) / 8))
    x_ticks = [AxisTick(round(x_of(e), 2), str(e)) for e in range(first, last + 1, x_step)]
    return MetricChart(
        title=title,
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        plot_left=left,
        plot_right=right,
        plot_top=top,
        plot_bottom=bottom,
        series=series,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
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
    "format_value",
    "metric_chart",
    "metric_names",
]
