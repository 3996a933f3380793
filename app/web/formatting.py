"""Numbers, shares, sizes, durations and moments as the pages print them (en-US, UTC)."""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Fact:
    """A labelled value, printed as it is: a stat card, a row of facts. ``url``: where the value
    links to; ``tone``: ``ok``, ``warn``, ``bad``, ``running`` or none; ``hint``: a tooltip."""

    label: str
    value: str
    _: KW_ONLY
    url: str | None = None
    tone: str = ""
    hint: str = ""


def number(value: int) -> str:
    return f"{value:,}"


def plural(count: int, singular: str, many: str | None = None) -> str:
    word = singular if count == 1 else (many or f"{singular}s")
    return f"{count:,} {word}"


def short_number(value: int) -> str:
    """1, 10, 100, 1k, 10k, 100k, 1M… for axis ticks."""
    for limit, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if value >= limit and value % limit == 0:
            return f"{value // limit}{suffix}"
    return str(value)


def percent(part: int, whole: int) -> str:
    """``part`` as a share of ``whole``, one decimal; "–" without a whole."""
    if whole <= 0:
        return "–"
    share = 100 * part / whole
    if 0 < share < 0.1:
        return "<0.1%"
    return f"{share:.1f}%"


def rate_text(value: float | None) -> str:
    """A proportion as a percentage: two decimals under 10%, one above."""
    if value is None or not math.isfinite(value):
        return "–"
    share = value * 100
    if share == 0:
        return "0%"
    return f"{share:.2f}%" if share < 10 else f"{share:.1f}%"


def format_value(value: float) -> str:
    """A metric's value: three significant digits, two when very large or small."""
    if value != 0 and (abs(value) >= 1000 or abs(value) < 0.01):
        return f"{value:.2g}"
    return f"{value:.3g}"


def byte_size(byte_count: int) -> str:
    """A file size in bytes, KiB, MiB or GiB."""
    size = float(byte_count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{byte_count} bytes"


def words(value: str) -> str:
    """An enum value or key (``junk_bulk``) as words."""
    return value.replace("_", " ")


def duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class Moment:
    """A point in time for a ``<time>`` element: ISO value, absolute text and relative text."""

    iso: str
    text: str
    ago: str


def timestamp(at: datetime) -> str:
    """``at`` to the minute, as the pages show times (UTC)."""
    return at.strftime("%Y-%m-%d %H:%M UTC")


def moment(at: datetime, *, now: datetime) -> Moment:
    return Moment(iso=at.isoformat(), text=timestamp(at), ago=_ago(now - at))


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 45:
        return "just now"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min ago"
    hours = round(seconds / 3600)
    if hours < 36:
        return f"{hours} h ago"
    return f"{round(seconds / 86400)} days ago"
