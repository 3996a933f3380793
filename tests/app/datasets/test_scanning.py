"""Scanning sources without a database: ImageFolder trees, CSV and JSONL manifests, bad rows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.datasets.scanning import scan
from app.datasets.sources import SourceScan, resolve_source
from app.errors import Invalid
from app.models import IssueReason
from tests.app.datasets.files import image_bytes, write, write_csv, write_jsonl

JPEG = image_bytes("JPEG")


def scan_folder(root: Path, classes: list[str] | None = None) -> SourceScan:
    return scan(resolve_source(str(root)), classes=classes)


def scan_manifest(
    path: Path, *, root: Path | None = None, classes: list[str] | None = None
) -> SourceScan:
    resolved = resolve_source(str(path), root=str(root) if root else None)
    return scan(resolved, classes=classes)


def issues_of(result: SourceScan) -> dict[str, IssueReason]:
    return {issue.path: issue.reason for issue in result.issues}


# --- ImageFolder ------------------------------------------------------------------------------


def test_imagefolder_labels_come_from_class_folders_at_any_depth(tmp_path: Path) -> None:
    write(tmp_path / "cat" / "a.jpg", JPEG)
    write(tmp_path / "cat" / "more" / "deeper" / "b.jpg", JPEG)
    write(tmp_path / "dog" / "c.jpg", JPEG)
    (tmp_path / "empty-class").mkdir()
    result = scan_folder(tmp_path)
    assert [(e.path, e.label) for e in result.entries] == [
        ("cat/a.jpg", "cat"),
        ("cat/more/deeper/b.jpg", "cat"),
        ("dog/c.jpg", "dog"),
    ]
    assert result.labels == ["cat", "dog", "empty-class"]
    assert result.issues == []


def test_files_directly_under_the_root_have_no_class(tmp_path: Path) -> None:
    write(tmp_path / "loose.jpg", JPEG)
    write(tmp_path / "cat" / "a.jpg", JPEG)
    assert issues_of(scan_folder(tmp_path)) == {"loose.jpg": IssueReason.NO_CLASS_FOLDER}


def test_dot_files_and_folders_are_skipped_silently(tmp_path: Path) -> None:
    write(tmp_path / ".thumbs" / "cat" / "a.jpg", JPEG)
    write(tmp_path / "cat" / ".DS_Store", b"junk")
    write(tmp_path / "cat" / ".partial" / "b.jpg", JPEG)
    write(tmp_path / ".hidden.jpg", JPEG)
    result = scan_folder(tmp_path)
    assert result.entries == [] and result.issues == []
    assert result.labels == ["cat"]


def test_non_utf8_names_are_reported_with_their_bytes_escaped(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    write(os.fsencode(tmp_path) + b"/cat/caf\xe9.jpg", JPEG)
    os.mkdir(os.fsencode(tmp_path) + b"/\xff\xfe")  # noqa: PTH102 - Path cannot hold bytes
    write(os.fsencode(tmp_path) + b"/\xff\xfe/x.jpg", JPEG)
    result = scan_folder(tmp_path)
    assert issues_of(result) == {
        "cat/caf\\xe9.jpg": IssueReason.BAD_FILENAME,
        "\\xff\\xfe": IssueReason.BAD_FILENAME,
    }
    assert result.labels == ["cat"]


def test_odd_but_valid_names_are_entries(tmp_path: Path) -> None:
    names = ["a b.jpg", "-dash.jpg", 'q"uote.jpg', "new\nline.jpg", "ünï.jpg"]
    for name in names:
        write(tmp_path / "cls" / name, JPEG)
    assert sorted(e.path for e in scan_folder(tmp_path).entries) == sorted(
        f"cls/{name}" for name in names
    )


def test_symlinks_leaving_the_root_are_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    write(outside / "x.jpg", JPEG)
    write(root / "cat" / "a.jpg", JPEG)
    (root / "cat" / "out.jpg").symlink_to(outside / "x.jpg")
    (root / "cat" / "outdir").symlink_to(outside, target_is_directory=True)
    (root / "ext").symlink_to(outside, target_is_directory=True)
    result = scan_folder(root)
    assert issues_of(result) == {
        "cat/out.jpg": IssueReason.SYMLINK_OUTSIDE_ROOT,
        "cat/outdir": IssueReason.SYMLINK_OUTSIDE_ROOT,
        "ext": IssueReason.SYMLINK_OUTSIDE_ROOT,
    }
    assert [e.path for e in result.entries] == ["cat/a.jpg"]


def test_symlinks_inside_the_root_are_followed(tmp_path: Path) -> None:
    write(tmp_path / "cat" / "a.jpg", JPEG)
    (tmp_path / "cat" / "alias.jpg").symlink_to(tmp_path / "cat" / "a.jpg")
    (tmp_path / "kitten").symlink_to(tmp_path / "cat", target_is_directory=True)
    result = scan_folder(tmp_path)
    assert [(e.path, e.label) for e in result.entries] == [
        ("cat/a.jpg", "cat"),
        ("cat/alias.jpg", "cat"),
        ("kitten/a.jpg", "kitten"),
        ("kitten/alias.jpg", "kitten"),
    ]


@pytest.mark.timeout(20)
def test_symlink_loop_is_not_followed_forever(tmp_path: Path) -> None:
    write(tmp_path / "cat" / "a.jpg", JPEG)
    (tmp_path / "cat" / "again").symlink_to(tmp_path / "cat", target_is_directory=True)
    (tmp_path / "cat" / "top").symlink_to(tmp_path, target_is_directory=True)
    assert [e.path for e in scan_folder(tmp_path).entries] == ["cat/a.jpg"]


def test_broken_symlink_is_an_entry_with_its_error(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    [entry] = scan_folder(tmp_path).entries
    assert (entry.path, entry.error) == ("cat/gone.jpg", IssueReason.BROKEN_SYMLINK)


def test_fifo_is_an_entry_with_its_error(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    os.mkfifo(tmp_path / "cat" / "pipe.jpg")
    [entry] = scan_folder(tmp_path).entries
    assert entry.error is IssueReason.NOT_A_FILE


def test_class_list_refuses_other_class_folders(tmp_path: Path) -> None:
    write(tmp_path / "cat" / "a.jpg", JPEG)
    write(tmp_path / "wolf" / "b.jpg", JPEG)
    result = scan_folder(tmp_path, classes=["cat", "dog"])
    assert [e.path for e in result.entries] == ["cat/a.jpg"]
    assert issues_of(result) == {"wolf/b.jpg": IssueReason.UNKNOWN_LABEL}
    assert result.labels == ["cat", "dog"]


# --- CSV --------------------------------------------------------------------------------------


def test_csv_paths_are_relative_to_the_manifest_folder(tmp_path: Path) -> None:
    write(tmp_path / "img" / "a.jpg", JPEG)
    manifest = write_csv(
        tmp_path / "labels.csv", [["img/a.jpg", "cat", "extra"]], header="path,label,note"
    )
    result = scan_manifest(manifest)
    assert [(e.path, e.label) for e in result.entries] == [("img/a.jpg", "cat")]
    assert result.entries[0].byte_size == len(JPEG)
    assert result.labels == ["cat"]


def test_csv_paths_can_be_relative_to_another_root(tmp_path: Path) -> None:
    write(tmp_path / "images" / "a.jpg", JPEG)
    manifest = write_csv(tmp_path / "meta" / "labels.csv", [["cat", "a.jpg"]], header="label,path")
    result = scan_manifest(manifest, root=tmp_path / "images")
    assert [(e.path, e.label) for e in result.entries] == [("a.jpg", "cat")]


def test_csv_row_problems_each_get_their_reason_and_line(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        write(tmp_path / name, JPEG)
    write(tmp_path.parent / "outside.jpg", JPEG)
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label\n"
        "a.jpg,cat\n"  # 2: fine
        "b.jpg,   \n"  # 3: empty label
        "c.jpg,zebra\n"  # 4: not in the class list
        "../outside.jpg,cat\n"  # 5: leaves the root
        f"{tmp_path.parent / 'outside.jpg'},cat\n"  # 6: absolute, outside
        "a.jpg,dog\n"  # 7: the same path again
        "d.jpg\n"  # 8: a field short
        '"d"x.jpg,cat\n'  # 9: malformed quoting
        "missing.jpg,dog\n"  # 10: no such file (a sample with an error)
        ",cat\n"  # 11: no path
    )
    result = scan_manifest(manifest, classes=["cat", "dog"])
    found = {(issue.reason, issue.detail.split(":")[0]) for issue in result.issues}
    assert found == {
        (IssueReason.EMPTY_LABEL, "line 3"),
        (IssueReason.UNKNOWN_LABEL, "line 4"),
        (IssueReason.PATH_OUTSIDE_ROOT, "line 5"),
        (IssueReason.PATH_OUTSIDE_ROOT, "line 6"),
        (IssueReason.DUPLICATE_PATH, "line 7"),
        (IssueReason.BAD_ROW, "line 8"),
        (IssueReason.BAD_ROW, "line 9"),
        (IssueReason.BAD_ROW, "line 11"),
    }
    assert [(e.path, e.label, e.error) for e in result.entries] == [
        ("a.jpg", "cat", None),
        ("missing.jpg", "dog", IssueReason.MISSING_FILE),
    ]


def test_csv_duplicate_path_keeps_the_first_row(tmp_path: Path) -> None:
    write(tmp_path / "a.jpg", JPEG)
    manifest = write_csv(tmp_path / "m.csv", [["a.jpg", "cat"], ["./a.jpg", "dog"]])
    result = scan_manifest(manifest)
    assert [(e.path, e.label) for e in result.entries] == [("a.jpg", "cat")]
    assert result.issues[0].detail == "line 3: the same file as line 2"


def test_csv_with_byte_order_mark_and_crlf_reads_its_header(tmp_path: Path) -> None:
    write(tmp_path / "a.jpg", JPEG)
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"\xef\xbb\xbfpath,label\r\na.jpg,cat\r\n")
    assert [e.label for e in scan_manifest(manifest).entries] == ["cat"]


def test_csv_path_that_is_not_utf8_is_a_bad_filename(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"path,label\ncaf\xe9.jpg,cat\nok.jpg,caf\xe9\n")
    result = scan_manifest(manifest)
    assert [(issue.path, issue.reason) for issue in result.issues] == [
        ("caf\\xe9.jpg", IssueReason.BAD_FILENAME),
        ("ok.jpg", IssueReason.BAD_ROW),
    ]


def test_csv_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(tmp_path / "secret.jpg", JPEG)
    root.mkdir()
    (root / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    (root / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    manifest = write_csv(root / "m.csv", [["link.jpg", "cat"], ["dirlink/secret.jpg", "cat"]])
    assert set(issues_of(scan_manifest(manifest)).values()) == {IssueReason.SYMLINK_OUTSIDE_ROOT}


def test_csv_without_path_and_label_columns_is_invalid(tmp_path: Path) -> None:
    manifest = write_csv(tmp_path / "m.csv", [["a.jpg", "cat"]], header="file,class")
    with pytest.raises(Invalid) as caught:
        resolve_source(str(manifest))
    assert caught.value.details == {"field": "path"}
    assert "path and label" in caught.value.message


# --- JSONL ------------------------------------------------------------------------------------


def test_jsonl_lines_and_their_problems(tmp_path: Path) -> None:
    write(tmp_path / "a.jpg", JPEG)
    write(tmp_path / "b.jpg", JPEG)
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"path": "a.jpg", "label": "cat", "score": 0.3},  # 1
            "",  # 2: blank lines are skipped
            "{not json",  # 3
            ["a.jpg", "cat"],  # 4: not an object
            {"path": "b.jpg", "label": 7},  # 5: wrong type
            {"path": "b.jpg"},  # 6: no label
            {"path": "b.jpg", "label": ""},  # 7
            {"path": "/etc/passwd", "label": "cat"},  # 8
            {"path": "b.jpg", "label": "dog"},  # 9: fine
        ],
    )
    result = scan_manifest(manifest)
    assert [(e.path, e.label) for e in result.entries] == [("a.jpg", "cat"), ("b.jpg", "dog")]
    found = {(issue.reason, issue.detail.split(":")[0]) for issue in result.issues}
    assert found == {
        (IssueReason.BAD_ROW, "line 3"),
        (IssueReason.BAD_ROW, "line 4"),
        (IssueReason.BAD_ROW, "line 5"),
        (IssueReason.BAD_ROW, "line 6"),
        (IssueReason.EMPTY_LABEL, "line 7"),
        (IssueReason.PATH_OUTSIDE_ROOT, "line 8"),
    }


def test_jsonl_lone_surrogate_path_is_a_bad_filename(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": "caf\\udce9.jpg", "label": "cat"}\n')
    [issue] = scan_manifest(manifest).issues
    assert (issue.path, issue.reason) == ("caf\\xe9.jpg", IssueReason.BAD_FILENAME)
