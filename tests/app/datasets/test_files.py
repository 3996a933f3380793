"""Files an import names that are not regular files (a FIFO, a folder, an endless device) are
refused at once, as an image, a manifest or a class list; manifest lines and class lists are
bounded; no refusal quotes the file."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from app.datasets.files import NotARegularFile, open_regular_file
from app.datasets.probe import probe_file
from app.datasets.scanning import scan
from app.datasets.sources import (
    MAX_CLASS_LIST_BYTES,
    MAX_MANIFEST_LINE,
    ResolvedSource,
    read_class_list,
    resolve_source,
)
from app.errors import Invalid
from app.models import ImportFormat, IssueReason
from tests.app.datasets.files import image_bytes, write

T = TypeVar("T")

#: Far more than a refusal takes, far less than "forever".
PROMPTLY_S = 5.0
SECRET = "s3cret-hunter2-do-not-echo"


def within(seconds: float, call: Callable[[], T]) -> T | BaseException:
    """``call()``'s result or the exception it raised, failing the test if it has not returned
    after ``seconds`` (it keeps running in a daemon thread: a hang must not hang the suite)."""
    outcome: list[T | BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: it blocked on the file"
    return outcome[0]


@pytest.fixture(params=["fifo", "directory", "/dev/zero"])
def not_a_file(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    """A path that is no regular file, and the word a refusal names it by."""
    if request.param == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
        return path, "FIFO"
    if request.param == "directory":
        path = tmp_path / "folder"
        path.mkdir()
        return path, "directory"
    path = Path(request.param)
    if not path.exists():
        pytest.skip("this system has no /dev/zero")
    return path, "device"


def test_open_regular_file_refuses_what_is_not_one(not_a_file: tuple[Path, str]) -> None:
    path, kind = not_a_file
    outcome = within(PROMPTLY_S, lambda: open_regular_file(path))
    assert isinstance(outcome, NotARegularFile)
    assert kind in str(outcome)


def test_as_an_image_it_is_not_a_file(not_a_file: tuple[Path, str]) -> None:
    path, kind = not_a_file
    result = within(PROMPTLY_S, lambda: probe_file(str(path), max_pixels=10_000))
    assert not isinstance(result, BaseException)
    assert result.error is IssueReason.NOT_A_FILE
    assert kind in (result.detail or "")


@pytest.mark.parametrize("format", [ImportFormat.CSV, ImportFormat.JSONL])
def test_as_a_manifest_it_is_refused(not_a_file: tuple[Path, str], format: ImportFormat) -> None:
    path, _ = not_a_file
    outcome = within(PROMPTLY_S, lambda: resolve_source(str(path), format=format))
    assert isinstance(outcome, Invalid)
    assert outcome.details == {"field": "path"}
    assert f"is not a {format.value} file" in outcome.message


@pytest.mark.parametrize("format", [ImportFormat.CSV, ImportFormat.JSONL])
def test_a_manifest_swapped_for_one_after_the_check_fails_the_scan_at_once(
    not_a_file: tuple[Path, str], format: ImportFormat, tmp_path: Path
) -> None:
    path, kind = not_a_file
    resolved = ResolvedSource(source=str(path), format=format, root=str(tmp_path))
    outcome = within(PROMPTLY_S, lambda: scan(resolved))
    assert isinstance(outcome, NotARegularFile)
    assert kind in str(outcome)


def test_as_a_class_list_it_is_refused(not_a_file: tuple[Path, str]) -> None:
    path, kind = not_a_file
    outcome = within(PROMPTLY_S, lambda: read_class_list(str(path)))
    assert isinstance(outcome, Invalid)
    assert outcome.details == {"field": "classes"}
    assert f"it is a {kind}, not a regular file" in outcome.message.replace("an ", "a ")


def test_a_class_list_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    with path.open("wb") as handle:
        handle.truncate(MAX_CLASS_LIST_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(Invalid, match="over 16 MiB") as caught:
        read_class_list(str(path))
    assert caught.value.details == {"field": "classes"}


@pytest.mark.parametrize("format", [ImportFormat.CSV, ImportFormat.JSONL])
def test_an_over_long_manifest_line_is_a_bad_row_and_the_next_rows_are_read(
    tmp_path: Path, format: ImportFormat
) -> None:
    write(tmp_path / "cat/a.jpg", image_bytes())
    write(tmp_path / "cat/b.jpg", image_bytes(seed=1))
    long_path = "x" * (MAX_MANIFEST_LINE + 10)
    if format is ImportFormat.CSV:
        rows = ["path,label", "cat/a.jpg,cat", f"{long_path},cat", "cat/b.jpg,cat"]
    else:
        rows = [
            '{"path": "cat/a.jpg", "label": "cat"}',
            f'{{"path": "{long_path}", "label": "cat"}}',
            '{"path": "cat/b.jpg", "label": "cat"}',
        ]
    manifest = tmp_path / f"manifest.{format.value}"
    manifest.write_text("\n".join(rows) + "\n")

    result = scan(resolve_source(str(manifest)))

    assert [entry.path for entry in result.entries] == ["cat/a.jpg", "cat/b.jpg"]
    [issue] = result.issues
    assert issue.reason is IssueReason.BAD_ROW
    line = 3 if format is ImportFormat.CSV else 2
    assert issue.detail == f"line {line}: the line is over {MAX_MANIFEST_LINE:,} characters"


@pytest.mark.parametrize(
    ("name", "format", "text"),
    [
        ("notes.csv", ImportFormat.CSV, f"{SECRET},{SECRET}\n"),
        ("notes.jsonl", ImportFormat.JSONL, f"{SECRET}\n"),
        ("notes.csv", ImportFormat.CSV, f'"{SECRET}\n'),  # an unterminated quote
        ("notes.jsonl", ImportFormat.JSONL, SECRET * (MAX_MANIFEST_LINE // len(SECRET) + 1)),
    ],
)
def test_a_file_that_is_no_manifest_is_refused_without_quoting_it(
    tmp_path: Path, name: str, format: ImportFormat, text: str
) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(Invalid) as caught:
        resolve_source(str(tmp_path / name), format=format)
    assert caught.value.details == {"field": "path"}
    assert SECRET not in caught.value.message
    assert SECRET[:8] not in caught.value.message
