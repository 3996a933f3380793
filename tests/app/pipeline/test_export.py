"""The export: every sample in the manifest with its final label, status, reason and history,
the final set as an ImageFolder of symlinks, the final model, the report, and the same bytes
when exported twice."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from app.errors import Invalid
from app.models import SampleStatus
from tests.app.pipeline.factories import Toy
from tests.app.pipeline.loop import Loop


def _files(root: Path) -> dict[str, bytes | str]:
    return {
        str(path.relative_to(root)): str(path.readlink())
        if path.is_symlink()
        else path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_symlink() or path.is_file()
    }


def test_exporting_twice_gives_identical_files(finished: Loop, tmp_path: Path) -> None:
    finished.export(tmp_path / "a", require_model=True)
    finished.export(tmp_path / "b", require_model=True)
    finished.export(tmp_path / "a", require_model=True)  # over a previous export
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_a_folder_with_other_files_is_refused_and_left_as_it_was(
    finished: Loop, tmp_path: Path
) -> None:
    out = tmp_path / "mine"
    (out / "images").mkdir(parents=True)
    (out / "images" / "holiday.jpg").write_bytes(b"precious")
    (out / "manifest.csv").write_text("mine")
    before = _files(out)

    with pytest.raises(Invalid, match="not empty and holds no earlier export"):
        finished.export(out, require_model=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(Invalid, match="is a file"):
        finished.export(tmp_path / "file", require_model=True)

    assert _files(out) == before
    finished.export(tmp_path / "empty", require_model=True)  # new folders are fine
    (tmp_path / "made").mkdir()
    finished.export(tmp_path / "made", require_model=True)  # and empty ones


def test_the_manifest_has_every_sample_with_its_label_status_reason_and_history(
    finished: Loop, toy: Toy, tmp_path: Path
) -> None:
    result = finished.export(tmp_path / "out", require_model=True)
    text = (tmp_path / "out" / "manifest.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == result.samples == len(toy.given) + len(toy.duplicates) + 1
    assert [row["path"] for row in rows] == sorted(row["path"] for row in rows)
    by_id = {int(row["sample_id"]): row for row in rows if row["sample_id"]}
    statuses = finished.statuses()
    names = {cid: name for name, cid in toy.classes.items()}
    for sample_id, status in statuses.items():
        row = by_id[sample_id]
        assert row["status"] == status.value
        assert row["final"] == ("1" if status.trainable else "0")
        if status is SampleStatus.RELABELLED:
            assert row["label"] == names[toy.true[sample_id]]  # type: ignore[index]
            assert row["reason"].startswith("verdict: label_check relabel")
        if status is SampleStatus.KEPT:
            assert row["label"] == row["given_label"]
            assert "top-1 rule" in row["reason"]
            assert row["training_jobs"]  # the folds and the final model trained on it
    assert {row["status"] for row in rows if row["path"] == "broken.png"} == {"unusable"}
    lines = [
        json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    ]
    some = next(line for line in lines if line["status"] == "relabelled")
    assert [entry["event"] for entry in some["history"]] == ["rejected", "queued", "verdict"]


def test_the_final_set_becomes_an_imagefolder_of_links_beside_the_model(
    finished: Loop, toy: Toy, tmp_path: Path
) -> None:
    result = finished.export(tmp_path / "out", require_model=True)
    final = {sid for sid, status in finished.statuses().items() if status.trainable}
    links = sorted((tmp_path / "out" / "images").rglob("*.png"))
    assert len(links) == result.images == len(final)
    assert all(link.is_symlink() for link in links)
    assert {link.parent.name for link in links} == set(toy.classes)
    assert links[0].readlink().is_relative_to(toy.root)
    assert sorted(p.name for p in (tmp_path / "out" / "model").iterdir()) == [
        "model.safetensors",
        "model_config.json",
    ]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["export"]["final"] == len(final)
    assert report["final"]["eval_source"] == "held_out"
    assert [r["kind"] for r in report["rounds"]] == [
        "cross_validation",
        "human_sample",
        "final_training",
    ]
