"""What the review benchmark's server logged: entries per level and per event, and the most
frequent kinds of trouble (error entries, exceptions' summaries, uvicorn's own errors).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Log levels that mean trouble.
TROUBLE_LEVELS = frozenset({"error", "critical", "exception"})
#: Lines outside the JSON log worth showing: an exception's summary (the last line of a
#: traceback), uvicorn's own errors.
_TROUBLE_LINE = re.compile(r"^([\w.]+(Error|Exception|Timeout)\b|ERROR:)")
_JSON = json.JSONDecoder()


def _log_entries(line: str) -> Iterator[dict[str, Any] | str]:
    """The JSON objects on a log line (two processes writing at once may share one), and any
    text around them."""
    position = 0
    while position < len(line):
        start = line.find("{", position)
        if start == -1:
            break
        if line[position:start].strip():
            yield line[position:start].strip()
        try:
            entry, position = _JSON.raw_decode(line, start)
        except json.JSONDecodeError:
            break
        if isinstance(entry, dict):
            yield entry
    if line[position:].strip():
        yield line[position:].strip()


def server_log_summary(path: Path, *, keep: int = 10) -> dict[str, Any]:
    """The server log in numbers: entries per level and per event, and the ``keep`` most
    frequent kinds of trouble (error entries without their timestamps, exceptions' summaries)
    with how often each came."""
    levels: dict[str, int] = {}
    events: dict[str, int] = {}
    trouble: dict[str, int] = {}
    for line in path.read_text(errors="replace").splitlines():
        for entry in _log_entries(line):
            if isinstance(entry, dict):
                level, event = str(entry.get("level", "?")), str(entry.get("event", "?"))
                events[event] = events.get(event, 0) + 1
                if level in TROUBLE_LEVELS:
                    shown = {k: v for k, v in entry.items() if k != "timestamp"}
                    text = json.dumps(shown)[:300]
                    trouble[text] = trouble.get(text, 0) + 1
            else:
                level = "text"
                if _TROUBLE_LINE.match(entry):
                    trouble[entry[:300]] = trouble.get(entry[:300], 0) + 1
            levels[level] = levels.get(level, 0) + 1
    worst = sorted(trouble.items(), key=lambda item: -item[1])[:keep]
    return {
        "entries_by_level": levels,
        "events": events,
        "trouble": [{"line": text, "count": count} for text, count in worst],
    }
