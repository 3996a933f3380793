"""How the pages print numbers and times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.web.formatting import byte_size, moment, percent, rate_text, short_number

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_short_numbers_for_ticks() -> None:
    assert [short_number(10**k) for k in range(7)] == [
        "1", "10", "100", "1k", "10k", "100k", "1M",
    ]  # fmt: skip


def test_times_read_relative_to_now() -> None:
    when = moment(NOW - timedelta(hours=5), now=NOW)
    assert when.ago == "5 h ago"
    assert when.text == "2026-03-01 07:00 UTC"


def test_shares_too_small_to_print_say_so() -> None:
    assert percent(1, 10_000) == "<0.1%"
    assert percent(0, 0) == "–"
    assert rate_text(0.05) == "5.00%" and rate_text(0.5) == "50.0%"


def test_file_sizes_in_binary_units() -> None:
    assert [byte_size(n) for n in (512, 1536, 5 * 2**30)] == ["512 bytes", "1.5 KiB", "5.0 GiB"]
