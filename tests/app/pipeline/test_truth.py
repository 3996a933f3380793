"""The ground-truth file of the simulated annotators: its columns, junk flags, and how a truth
path finds its sample."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import Invalid
from app.pipeline.truth import load_truth


def test_a_truth_file_without_the_label_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "truth.csv"
    path.write_text("path,label\na.png,cat\n")
    with pytest.raises(Invalid, match="no column 'clean'"):
        load_truth(path, column="clean")


def test_a_junk_flag_or_an_empty_label_reads_as_junk(tmp_path: Path) -> None:
    path = tmp_path / "truth.csv"
    path.write_text("path,clean,junk\na/x.png,cat,0\nb/y.png,dog,yes\nc/z.png,,0\n")
    assert load_truth(path, column="clean").labels == {
        "a/x.png": "cat",
        "b/y.png": None,
        "c/z.png": None,
    }


def test_a_path_is_indexed_by_its_tail_and_name_only_when_unique(tmp_path: Path) -> None:
    path = tmp_path / "truth.csv"
    path.write_text("path,clean\nroot/cat/1.png,cat\nother/cat/1.png,cat\nroot/dog/2.png,dog\n")
    index = load_truth(path, column="clean").index()
    assert index["path"]["other/cat/1.png"] == "cat"
    assert "cat/1.png" not in index["tail"] and index["tail"]["dog/2.png"] == "dog"
    assert "1.png" not in index["name"] and index["name"]["2.png"] == "dog"
