"""What the workflow steps share (ml/steps/files.py): the decisions file and defaults; the steps
end to end are in tests/ml/test_cli.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.manifest import load_manifest
from ml.steps.files import StepError, default_k, read_decisions


def test_default_k_is_five_for_many_classes_and_one_for_few() -> None:
    assert default_k(10) == 1
    assert default_k(5000) == 5


def test_decisions_of_another_manifest_are_refused(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,label\na.png,x\nb.png,y\n")
    (tmp_path / "decisions.csv").write_text("sample_id,status\na.png,kept\nc.png,rejected\n")

    with pytest.raises(StepError, match="does not describe the samples"):
        read_decisions(tmp_path / "decisions.csv", load_manifest(tmp_path / "m.csv"))


def test_decisions_are_read_in_manifest_order(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,label\na.png,x\nb.png,y\n")
    (tmp_path / "decisions.csv").write_text("sample_id,status\nb.png,rejected\na.png,kept\n")

    rows, kept = read_decisions(tmp_path / "decisions.csv", load_manifest(tmp_path / "m.csv"))

    assert [row["sample_id"] for row in rows] == ["a.png", "b.png"]
    assert kept.tolist() == [True, False]
