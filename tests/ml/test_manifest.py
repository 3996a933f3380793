"""Manifests from CSV, JSONL and ImageFolder (ml/manifest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ml.manifest import ManifestError, load_manifest


def test_csv_manifest_reads_paths_labels_and_ids(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,label,sample_id\na/1.jpg,dog,s1\nb/2.jpg,cat,s2\n")

    manifest = load_manifest(tmp_path / "m.csv")

    assert manifest.classes == ("cat", "dog")
    assert manifest.labels.tolist() == [1, 0]
    assert manifest.sample_ids == ["s1", "s2"]
    assert manifest.paths == [tmp_path.resolve() / "a/1.jpg", tmp_path.resolve() / "b/2.jpg"]


def test_csv_label_column_picks_another_column(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("index,path,clean,worse\n0,x.jpg,cat,dog\n1,y.jpg,dog,dog\n")

    manifest = load_manifest(tmp_path / "m.csv", label_column="worse", classes=["cat", "dog"])

    assert manifest.labels.tolist() == [1, 1]
    assert manifest.sample_ids == ["x.jpg", "y.jpg"]


def test_jsonl_manifest_with_root(tmp_path: Path) -> None:
    lines = [{"path": "1.png", "label": "a"}, {"path": "2.png", "label": "b", "sample_id": 7}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")

    manifest = load_manifest(tmp_path / "m.jsonl", root=tmp_path / "images")

    assert manifest.paths[0] == (tmp_path / "images" / "1.png").resolve()
    assert manifest.sample_ids == ["1.png", "7"]


def test_image_folder_keeps_files_without_extension_and_skips_hidden(tmp_path: Path) -> None:
    for relative in ["cat/1.jpg", "cat/tmp", "dog/2.png", "dog/.DS_Store", ".hidden/3.jpg"]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")

    manifest = load_manifest(tmp_path)

    assert manifest.classes == ("cat", "dog")
    assert sorted(manifest.sample_ids) == ["cat/1.jpg", "cat/tmp", "dog/2.png"]
    np.testing.assert_array_equal(manifest.class_counts(), [2, 1])


def test_integer_class_names_sort_numerically(tmp_path: Path) -> None:
    rows = "".join(f"{i}.jpg,{label}\n" for i, label in enumerate(["10", "2", "1"]))
    (tmp_path / "m.csv").write_text("path,label\n" + rows)

    assert load_manifest(tmp_path / "m.csv").classes == ("1", "2", "10")


def test_label_outside_given_classes_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,label\nx.jpg,cow\n")

    with pytest.raises(ManifestError, match="unknown class 'cow'"):
        load_manifest(tmp_path / "m.csv", classes=["cat", "dog"])


def test_missing_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("file,label\nx.jpg,cat\n")

    with pytest.raises(ManifestError, match="no 'path' column"):
        load_manifest(tmp_path / "m.csv")


def test_subset_keeps_classes(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,label\na,x\nb,y\nc,z\n")
    manifest = load_manifest(tmp_path / "m.csv")

    part = manifest.subset([2, 0])

    assert part.sample_ids == ["c", "a"]
    assert part.classes == manifest.classes
