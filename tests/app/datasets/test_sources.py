"""Resolving a source without a database: formats, refusals naming the field, class lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.datasets.sources import ResolvedSource, read_class_list, resolve_source
from app.errors import Invalid
from app.models import ImportFormat
from tests.app.datasets.files import write_csv, write_jsonl


def test_format_is_detected_from_the_path(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    csv_file = write_csv(tmp_path / "a.csv", [])
    jsonl_file = write_jsonl(tmp_path / "a.ndjson", [{"path": "x", "label": "y"}])
    assert resolve_source(str(tmp_path / "tree")).format is ImportFormat.IMAGEFOLDER
    assert resolve_source(str(csv_file)).format is ImportFormat.CSV
    assert resolve_source(str(jsonl_file)) == ResolvedSource(
        source=str(jsonl_file), format=ImportFormat.JSONL, root=str(tmp_path)
    )


@pytest.mark.parametrize(
    ("make", "kwargs", "field"),
    [
        (lambda tmp: tmp / "nope", {}, "path"),
        (lambda tmp: tmp / "a.txt", {}, "format"),
        (lambda tmp: tmp / "a.txt", {"format": ImportFormat.IMAGEFOLDER}, "path"),
        (lambda tmp: tmp, {"format": ImportFormat.CSV}, "path"),
        (lambda tmp: tmp / "a.txt", {"format": ImportFormat.JSONL}, "path"),
        (lambda tmp: tmp / "a.csv", {"root": "/nope"}, "root"),
        (lambda tmp: tmp, {"root": "/tmp"}, "root"),
    ],
)
def test_bad_sources_are_invalid_naming_the_field(
    tmp_path: Path, make: object, kwargs: dict[str, object], field: str
) -> None:
    (tmp_path / "a.txt").write_text("just text\n")
    write_csv(tmp_path / "a.csv", [])
    assert callable(make)
    with pytest.raises(Invalid) as caught:
        resolve_source(str(make(tmp_path)), **kwargs)  # type: ignore[arg-type]
    assert caught.value.details == {"field": field}


def test_class_list_file_is_read_one_name_per_line(tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_text("cat\n\n dog \ncat\n")
    assert read_class_list(str(tmp_path / "classes.txt")) == ["cat", "dog"]
    with pytest.raises(Invalid):
        read_class_list(str(tmp_path / "missing.txt"))
