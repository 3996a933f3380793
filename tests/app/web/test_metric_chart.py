"""The per-epoch line charts: coordinates, ticks and labels."""

from __future__ import annotations

from app.models import JobMetric
from app.web.metric_chart import metric_chart, metric_names


def metric(epoch: int, **values: float) -> JobMetric:
    return JobMetric(job_id=1, fence=1, epoch=epoch, values=values)


def test_the_chart_spans_the_plot_from_first_to_last_epoch() -> None:
    chart = metric_chart(
        "Loss",
        [metric(1, train_loss=2.0), metric(2, train_loss=1.0), metric(3, train_loss=0.5)],
        ["train_loss"],
    )
    assert chart is not None
    (series,) = chart.series
    xs = [x for x, _, _ in series.dots]
    ys = [y for _, y, _ in series.dots]
    assert xs == [chart.plot_left, (chart.plot_left + chart.plot_right) / 2, chart.plot_right]
    assert ys[0] == chart.plot_top  # 2.0 is the axis top
    assert ys[0] < ys[1] < ys[2] < chart.plot_bottom
    assert series.last == "0.5"
    assert [tick.label for tick in chart.y_ticks] == ["0", "0.5", "1", "1.5", "2"]


def test_accuracy_is_drawn_in_percent_from_zero_to_one() -> None:
    chart = metric_chart("Accuracy", [metric(1, val_accuracy=0.25)], ["val_accuracy"], percent=True)
    assert chart is not None
    assert chart.y_ticks[0].label == "0%" and chart.y_ticks[-1].label == "100%"
    assert chart.series[0].last == "25%"


def test_no_chart_without_metrics() -> None:
    assert metric_chart("Loss", [], ["train_loss"]) is None


def test_metrics_are_split_into_losses_and_accuracies() -> None:
    metrics = [metric(1, train_loss=1.0, train_accuracy=0.5, learning_rate=0.1, val_accuracy=0.4)]
    assert metric_names(metrics) == (["train_loss"], ["train_accuracy", "val_accuracy"])
