"""The export's report.html: written beside report.json, one self-contained file (no scripts,
nothing fetched, no links out), the dashboard's sections with the run's numbers, and the same
bytes when exported twice."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from app.models import TRAINABLE, SampleStatus
from app.pipeline import export
from tests.app.pipeline.factories import Toy
from tests.app.pipeline.loop import Loop


def test_export_writes_report_html_beside_report_json(finished: Loop, tmp_path: Path) -> None:
    result = finished.export(tmp_path / "out")
    assert result.report_html == tmp_path / "out" / "report.html"
    html = result.report_html.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>")
    assert "Cleaning report · toy" in html


def test_report_html_is_self_contained(finished: Loop, tmp_path: Path) -> None:
    html = (finished.export(tmp_path / "out").report_html or Path()).read_text()
    assert re.findall(r"""(?:src|href)\s*=\s*["']?\s*https?:""", html, re.IGNORECASE) == []
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert "@import" not in html and "url(" not in html
    assert re.findall(r"\shref=", html) == []  # nothing to follow out of the file
    assert "<style>" in html and ".funnel-step" in html  # the styles are inline
    assert html.count("<svg") >= 3 + 1  # three class-size charts and the funnel's bars


def test_report_html_shows_the_funnel_numbers_the_database_holds(
    finished: Loop, toy: Toy, tmp_path: Path
) -> None:
    html = (finished.export(tmp_path / "out").report_html or Path()).read_text()
    statuses = Counter(finished.statuses().values())
    shown = {
        key: int(count.replace(",", ""))
        for key, count in re.findall(
            r'data-step="(\w+)">.*?funnel-count num">([\d,]+)<', html, re.DOTALL
        )
    }
    assert shown["final"] == sum(n for s, n in statuses.items() if s in TRAINABLE)
    assert statuses[SampleStatus.REJECTED] and statuses[SampleStatus.RELABELLED]
    assert shown["rejected"] == statuses[SampleStatus.REJECTED]
    assert shown["relabelled"] == statuses[SampleStatus.RELABELLED]
    assert shown["usable"] == sum(statuses.values())
    assert shown["imported"] == len(toy.given) + len(toy.duplicates) + 1
    for section in ("cleaning-rounds", "cleaning-estimates", "cleaning-classes", "cleaning-final"):
        assert f'id="{section}"' in html
    assert "Top-1" in html and "80.0%" in html and "a random held-out split" in html


def test_report_html_is_byte_identical_across_exports(finished: Loop, tmp_path: Path) -> None:
    first = finished.export(tmp_path / "a").report_html
    second = finished.export(tmp_path / "b").report_html
    assert first is not None and second is not None
    assert first.read_bytes() == second.read_bytes()


def test_report_html_is_drawn_from_report_json_alone(finished: Loop, tmp_path: Path) -> None:
    out = tmp_path / "out"
    written = (finished.export(out).report_html or Path()).read_bytes()
    report = json.loads((out / "report.json").read_text())
    assert export.report_html(report) == written
