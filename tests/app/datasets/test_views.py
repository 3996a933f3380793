"""The dataset pages' view models, built from hand-made service results (no database)."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

from app.datasets import views
from app.datasets.schemas import (
    ClassCount,
    ConflictGroup,
    ConflictMember,
    ImportReport,
    ModeCount,
    ReasonCount,
)
from app.models import ImportIssue, ImportRun, ImportStatus, IssueReason

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def classes(*counts: int) -> list[ClassCount]:
    return [ClassCount(id=i + 1, name=f"class{i}", count=count) for i, count in enumerate(counts)]


def make_run(
    status: ImportStatus = ImportStatus.SUCCEEDED, *, total: int = 10, processed: int = 10
) -> ImportRun:
    started = NOW - timedelta(minutes=3)
    return ImportRun(
        id=7,
        dataset_id=3,
        status=status,
        total=total,
        processed=processed,
        added=8,
        changed=0,
        unchanged=0,
        missing=0,
        issues=2,
        error=None,
        created_at=started,
        finished_at=None if status is ImportStatus.RUNNING else started + timedelta(seconds=75),
    )


def make_report(
    run: ImportRun, *, issues: int = 2, total_issues: int = 2, conflicts: int = 0
) -> ImportReport:
    return ImportReport(
        run=run,
        by_reason=[
            ReasonCount(IssueReason.EMPTY_FILE, 1),
            ReasonCount(IssueReason.NOT_AN_IMAGE, 1),
        ],
        issues=[
            ImportIssue(path=f"cat/bad{i}.jpg", reason=IssueReason.EMPTY_FILE, detail="empty")
            for i in range(issues)
        ],
        total_issues=total_issues,
        conflicts=[
            ConflictGroup(
                sha256=f"{i:064x}",
                samples=[
                    ConflictMember(sample_id=10 * i + 1, path=f"cat/{i}.jpg", class_name="cat"),
                    ConflictMember(sample_id=10 * i + 2, path=f"dog/{i}.jpg", class_name="dog"),
                ],
            )
            for i in range(conflicts)
        ],
    )


# --- the class-size chart ---------------------------------------------------------------------


def test_bar_heights_grow_with_class_size() -> None:
    chart = views.class_chart(classes(5000, 700, 120, 45, 9, 3, 2, 1))
    assert chart is not None
    heights = [bar.height for bar in chart.bars]
    assert heights == sorted(heights, reverse=True)
    assert len(set(heights)) == len(heights)


def test_bars_are_sorted_by_count_descending_whatever_the_input_order() -> None:
    chart = views.class_chart(classes(3, 300, 30))
    assert chart is not None
    assert [bar.title for bar in chart.bars] == [
        "class1: 300 images",
        "class2: 30 images",
        "class0: 3 images",
    ]


def test_class_with_one_image_gets_a_visible_bar() -> None:
    chart = views.class_chart(classes(10_000, 1))
    assert chart is not None
    smallest = chart.bars[-1]
    assert smallest.height >= views.MIN_BAR_HEIGHT
    assert smallest.y + smallest.height == chart.plot_bottom
    assert smallest.title == "class1: 1 image"


def test_bar_height_is_logarithmic_in_count() -> None:
    chart = views.class_chart(classes(1000, 100, 10))
    assert chart is not None
    plot = chart.plot_bottom - chart.plot_top
    assert [bar.height for bar in chart.bars] == [
        round(plot, 2),
        round(plot * 2 / 3, 2),
        round(plot / 3, 2),
    ]


def test_ticks_are_powers_of_ten_up_to_the_largest_class() -> None:
    chart = views.class_chart(classes(3500, 12, 1))
    assert chart is not None
    assert [tick.label for tick in chart.ticks] == ["1", "10", "100", "1k", "10k"]
    ys = [tick.y for tick in chart.ticks]
    assert ys[0] == chart.plot_bottom
    assert ys[-1] == chart.plot_top
    gaps = {round(upper - lower, 2) for upper, lower in itertools.pairwise(ys)}
    assert len(gaps) == 1  # evenly spaced: a log axis


def test_top_tick_is_the_largest_class_when_it_is_a_power_of_ten() -> None:
    chart = views.class_chart(classes(1000, 5))
    assert chart is not None
    assert chart.ticks[-1].label == "1k"
    assert chart.bars[0].y == chart.plot_top


def test_bars_fit_inside_the_plot() -> None:
    chart = views.class_chart(classes(*range(250, 0, -1)))
    assert chart is not None
    assert chart.bars[0].x >= chart.plot_left
    last = chart.bars[-1]
    assert last.x + last.width <= chart.plot_right + 0.01
    assert all(bar.y >= chart.plot_top for bar in chart.bars)


def test_thousands_of_classes_are_grouped_into_a_few_hundred_bars() -> None:
    counts = [max(1, int(800 * math.exp(-i / 900))) for i in range(5000)]
    chart = views.class_chart(classes(*counts))
    assert chart is not None
    assert len(chart.bars) == views.MAX_BARS
    assert chart.grouped and chart.classes_per_bar == 17
    assert "classes #1–#16 by size" in chart.bars[0].title
    heights = [bar.height for bar in chart.bars]
    assert heights == sorted(heights, reverse=True)


def test_grouped_bar_floor_reaches_down_to_its_smallest_class() -> None:
    chart = views.class_chart(classes(*([100] * 599), 1))
    assert chart is not None
    last = chart.bars[-1]
    assert last.floor_height == views.MIN_BAR_HEIGHT
    assert last.height > last.floor_height
    assert "1–100 images" in last.title


def test_class_with_no_images_draws_no_bar() -> None:
    chart = views.class_chart(classes(40, 0))
    assert chart is not None
    assert chart.bars[-1].height == 0
    assert views.ChartNote("Empty classes", "1") in chart.notes


def test_no_classes_gives_no_chart() -> None:
    assert views.class_chart([]) is None


def test_chart_notes_give_largest_median_smallest_and_imbalance() -> None:
    chart = views.class_chart(classes(500, 40, 5))
    assert chart is not None
    assert chart.notes == [
        views.ChartNote("Largest", "class0 (500)"),
        views.ChartNote("Median", "40"),
        views.ChartNote("Smallest", "class2 (5)"),
        views.ChartNote("Imbalance", "100.0×"),
    ]


# --- modes ------------------------------------------------------------------------------------


def test_mode_rows_have_shares_and_flag_images_that_are_not_three_channel() -> None:
    rows = views.mode_rows(
        [ModeCount("L", 1, 250), ModeCount("RGB", 3, 9_750), ModeCount("RGBA", 4, 0)]
    )
    assert [(r.mode, r.count, r.share, r.not_three_channel) for r in rows] == [
        ("RGB", "9,750", "97.5%", False),
        ("L", "250", "2.5%", True),
        ("RGBA", "0", "0.0%", True),
    ]


# --- the import report ------------------------------------------------------------------------


def test_running_import_polls_and_shows_progress() -> None:
    report = views.import_report(
        3,
        make_report(make_run(ImportStatus.RUNNING, total=400, processed=100)),
        now=NOW,
        thumbnail_sizes=(96, 256),
    )
    assert report.running
    assert report.poll_url == "/datasets/3/imports/7/report"
    assert report.progress_text == "100 of 400 files and rows (25.0%)"
    assert report.duration == "3 min 00 s"


def test_finished_import_does_not_poll() -> None:
    report = views.import_report(3, make_report(make_run()), now=NOW, thumbnail_sizes=(96,))
    assert not report.running
    assert report.poll_url is None
    assert report.tone == "ok"
    assert report.duration == "1 min 15 s"


def test_reasons_link_to_the_filtered_issue_list() -> None:
    report = views.import_report(
        3,
        make_report(make_run()),
        now=NOW,
        thumbnail_sizes=(96,),
        reason=IssueReason.NOT_AN_IMAGE,
    )
    first, second = report.reasons
    assert first.label == "Empty file (0 bytes)"
    assert first.filter_url == "/datasets/3/imports/7/issues?reason=empty_file"
    assert first.page_url == "/datasets/3?reason=empty_file"
    assert (first.active, second.active) == (False, True)


def test_issue_page_offers_the_next_page_while_issues_remain() -> None:
    page = views.issue_page(3, make_report(make_run(), issues=100, total_issues=250), offset=100)
    assert page.shown_until == 200
    assert page.remaining == 50
    assert page.more_url == "/datasets/3/imports/7/issues?offset=200"
    assert page.more_label == "Show 50 more (50 left)"


def test_last_issue_page_offers_no_more() -> None:
    page = views.issue_page(3, make_report(make_run(), issues=2, total_issues=2))
    assert page.more_url is None


def test_filtered_issue_page_keeps_the_reason_in_its_links() -> None:
    page = views.issue_page(
        3,
        make_report(make_run(), issues=100, total_issues=101),
        reason=IssueReason.EMPTY_FILE,
    )
    assert page.more_url == "/datasets/3/imports/7/issues?reason=empty_file&offset=100"
    assert page.clear_url == "/datasets/3/imports/7/issues"
    assert page.reason_label == "Empty file (0 bytes)"


def test_conflicts_show_a_thumbnail_named_by_content_and_the_classes() -> None:
    report = views.import_report(
        3, make_report(make_run(), conflicts=1), now=NOW, thumbnail_sizes=(64, 128, 256)
    )
    (conflict,) = report.conflicts
    assert conflict.thumbnail_url == f"/media/samples/1/thumb/128?v={'0' * 16}"
    assert conflict.summary == "2 copies under 2 classes: cat, dog"
    assert [m.original_url for m in conflict.members] == [
        "/media/samples/1/original",
        "/media/samples/2/original",
    ]


def test_conflicts_beyond_the_shown_ones_are_counted() -> None:
    report = views.import_report(
        3,
        make_report(make_run(), conflicts=views.CONFLICTS_SHOWN + 5),
        now=NOW,
        thumbnail_sizes=(96,),
        conflict_total=80,
    )
    assert len(report.conflicts) == views.CONFLICTS_SHOWN
    assert report.conflicts_hidden == 80 - views.CONFLICTS_SHOWN


# --- formatting -------------------------------------------------------------------------------


def test_short_numbers_for_ticks() -> None:
    assert [views.short_number(10**k) for k in range(7)] == [
        "1", "10", "100", "1k", "10k", "100k", "1M",
    ]  # fmt: skip


def test_times_read_relative_to_now() -> None:
    moment = views.moment(NOW - timedelta(hours=5), now=NOW)
    assert moment.ago == "5 h ago"
    assert moment.text == "2026-03-01 07:00 UTC"
