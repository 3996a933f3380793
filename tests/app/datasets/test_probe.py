"""Probing single files: the facts of good images, and one clear reason per kind of bad file."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from app.datasets.probe import ProbeResult, escape_text, probe_chunk, probe_file
from app.models import IssueReason
from tests.app.datasets.files import (
    HEIC_BYTES,
    corrupt_png,
    image_bytes,
    png_declaring,
    truncated,
    write,
)

LIMIT = 89_478_485
NOBODY = 65534


def probe(path: Path, *, max_pixels: int = LIMIT) -> ProbeResult:
    return probe_file(str(path), max_pixels=max_pixels)


def test_good_jpeg_gives_size_hash_and_image_facts(tmp_path: Path) -> None:
    data = image_bytes("JPEG", size=(48, 40))
    path = write(tmp_path / "a.jpg", data)
    assert isinstance(path, Path)
    result = probe(path)
    assert result.error is None
    assert result.byte_size == len(data)
    assert result.mtime_ns == path.stat().st_mtime_ns
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (result.width, result.height) == (48, 40)
    assert (result.mode, result.channels, result.image_format) == ("RGB", 3, "JPEG")


@pytest.mark.parametrize(
    ("fmt", "mode", "expected_mode", "channels"),
    [
        ("PNG", "L", "L", 1),
        ("PNG", "P", "P", 1),
        ("PNG", "RGBA", "RGBA", 4),
        ("JPEG", "CMYK", "CMYK", 4),
        ("BMP", "RGB", "RGB", 3),
        ("TIFF", "RGB", "RGB", 3),
        ("WEBP", "RGB", "RGB", 3),
    ],
)
def test_mode_and_channel_count_are_recorded(
    tmp_path: Path, fmt: str, mode: str, expected_mode: str, channels: int
) -> None:
    path = tmp_path / f"image.{fmt.lower()}"
    write(path, image_bytes(fmt, mode=mode))
    result = probe(path)
    assert result.error is None, result.detail
    assert (result.mode, result.channels, result.image_format) == (expected_mode, channels, fmt)


def test_animated_gif_is_accepted_by_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (20, 10), color) for color in ("red", "green", "blue")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    result = probe(path)
    assert result.error is None
    assert (result.image_format, result.width, result.height) == ("GIF", 20, 10)


def test_image_without_extension_is_probed_by_content(tmp_path: Path) -> None:
    path = write(tmp_path / "tmp", image_bytes("JPEG"))
    assert isinstance(path, Path)
    assert probe(path).image_format == "JPEG"


def test_missing_file(tmp_path: Path) -> None:
    assert probe(tmp_path / "gone.jpg").error is IssueReason.MISSING_FILE


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").touch()
    result = probe(tmp_path / "empty.jpg")
    assert (result.error, result.byte_size) == (IssueReason.EMPTY_FILE, 0)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"cut.{fmt.lower()}"
    write(path, truncated(image_bytes(fmt, size=(96, 96))))
    result = probe(path)
    assert result.error is IssueReason.TRUNCATED
    assert "truncated" in (result.detail or "")
    assert result.sha256 is None and result.width is None
    assert result.byte_size == path.stat().st_size


def test_text_file_with_image_extension_is_not_an_image(tmp_path: Path) -> None:
    path = write(tmp_path / "readme.jpg", b"hello, I am text\n")
    assert isinstance(path, Path)
    assert probe(path).error is IssueReason.NOT_AN_IMAGE


@pytest.mark.parametrize(
    ("name", "data", "named"),
    [
        ("icon.ico", image_bytes("ICO", size=(32, 32)), "ICO"),
        ("pic.ppm", image_bytes("PPM"), "PPM"),
        ("photo.heic", HEIC_BYTES, "HEIC"),
    ],
)
def test_unsupported_format_names_the_format(
    tmp_path: Path, name: str, data: bytes, named: str
) -> None:
    path = write(tmp_path / name, data)
    assert isinstance(path, Path)
    result = probe(path)
    assert result.error is IssueReason.UNSUPPORTED_FORMAT
    assert named in (result.detail or "")


def test_decompression_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    path = write(tmp_path / "bomb.png", png_declaring(100_000, 100_000))
    assert isinstance(path, Path)
    result = probe(path)
    assert result.error is IssueReason.TOO_MANY_PIXELS
    assert "10,000,000,000" in (result.detail or "")


def test_image_just_over_the_pixel_limit_is_refused_without_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path / "big.png", image_bytes("PNG", size=(120, 100)))
    assert isinstance(path, Path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = probe(path, max_pixels=10_000)
    assert result.error is IssueReason.TOO_MANY_PIXELS
    assert "120×100" in (result.detail or "")
    assert caught == []


def test_damaged_pixel_data_is_corrupt(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.png", corrupt_png())
    assert isinstance(path, Path)
    assert probe(path).error is IssueReason.CORRUPT


@pytest.mark.timeout(20)
def test_fifo_is_not_a_file_and_is_never_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    result = probe(tmp_path / "pipe.jpg")  # opening it for reading would block forever
    assert result.error is IssueReason.NOT_A_FILE
    assert "FIFO" in (result.detail or "")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "folder.jpg").mkdir()
    assert probe(tmp_path / "folder.jpg").error is IssueReason.NOT_A_FILE


def test_broken_symlink(tmp_path: Path) -> None:
    (tmp_path / "link.jpg").symlink_to(tmp_path / "gone.jpg")
    assert probe(tmp_path / "link.jpg").error is IssueReason.BROKEN_SYMLINK


@pytest.fixture
def world_traversable_dir() -> Iterator[Path]:
    """A folder another user can enter (pytest's tmp_path is private to its owner)."""
    folder = Path(tempfile.mkdtemp(prefix="thresher-probe-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def _probe_as_nobody(path: Path) -> ProbeResult:
    """Probes ``path`` in a forked child that dropped to uid/gid 65534 (root reads anything)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write_end, pickle.dumps(probe(path)))
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged probe failed"
    result: ProbeResult = pickle.loads(payload)  # noqa: S301 - our own child's output
    return result


def test_file_without_read_permission_is_unreadable(world_traversable_dir: Path) -> None:
    path = write(world_traversable_dir / "locked.jpg", image_bytes("JPEG"))
    assert isinstance(path, Path)
    path.chmod(0o000)
    result = _probe_as_nobody(path) if os.geteuid() == 0 else probe(path)
    assert result.error is IssueReason.UNREADABLE
    assert "Permission denied" in (result.detail or "")


def test_probe_chunk_keeps_the_order_of_its_paths(tmp_path: Path) -> None:
    good = write(tmp_path / "a.jpg", image_bytes("JPEG"))
    empty = write(tmp_path / "b.jpg", b"")
    results = probe_chunk([str(empty), str(good), str(tmp_path / "c.jpg")], LIMIT)
    assert [result.error for result in results] == [
        IssueReason.EMPTY_FILE,
        None,
        IssueReason.MISSING_FILE,
    ]


def test_escape_text_makes_undecodable_names_storable() -> None:
    name = os.fsdecode(b"caf\xe9\x00.jpg")
    assert escape_text(name) == "caf\\xe9\\x00.jpg"
    assert escape_text("ünïcødé 猫") == "ünïcødé 猫"
