"""Files over 2 GiB (sparse: they cost no disk): an image is hashed whole in bounded memory; a
file that is no image is refused from its first bytes, never read through."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.datasets.probe import ProbeResult, probe_file
from app.models import IssueReason
from tests.app.datasets.files import image_bytes

#: Past the largest single read Linux does (0x7ffff000 bytes), which once cut such files short.
SIZE = (2 << 30) + (5 << 20) + 123
#: What a probe may allocate: chunks and a decoded small image, nothing the size of the file.
MEMORY_BOUND = 64 << 20
CHUNK = 1 << 20


def bytes_read_by_this_process() -> int:
    """Bytes this process has read through read() calls so far (Linux's /proc/self/io)."""
    io_stats = Path("/proc/self/io")
    if not io_stats.exists():
        pytest.skip("needs /proc/self/io")
    for line in io_stats.read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def probe_measured(path: Path) -> tuple[ProbeResult, int, int]:
    """The probe's result, the peak of Python memory it allocated, and the bytes it read."""
    before = bytes_read_by_this_process()
    tracemalloc.start()
    try:
        result = probe_file(str(path), max_pixels=89_478_485)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak, bytes_read_by_this_process() - before


def zeros(count: int) -> Iterator[bytes]:
    block = bytes(CHUNK)
    while count > 0:
        yield block[: min(count, CHUNK)]
        count -= CHUNK


@pytest.fixture
def huge(tmp_path: Path) -> Iterator[Path]:
    """Where to put a file of ``SIZE`` bytes; removed after the test, with the page cache the
    kernel filled with its zeros when it was read."""
    path = tmp_path / "huge"
    yield path
    path.unlink(missing_ok=True)


@pytest.mark.slow  # the kernel zero-fills 2 GiB of page cache: seconds, mostly system time
def test_an_image_over_2_gib_is_hashed_whole_in_bounded_memory(huge: Path) -> None:
    png = image_bytes("PNG", size=(64, 48))
    path = huge
    with path.open("wb") as handle:
        handle.write(png)
        handle.truncate(SIZE)  # a PNG ends at IEND; readers ignore what follows
    expected = hashlib.sha256(png)
    for block in zeros(SIZE - len(png)):
        expected.update(block)

    result, peak, read = probe_measured(path)

    assert result.error is None, result.detail
    assert (result.image_format, result.width, result.height) == ("PNG", 64, 48)
    assert result.byte_size == SIZE
    assert result.sha256 == expected.hexdigest()
    assert peak < MEMORY_BOUND
    assert read >= SIZE


def test_a_file_over_2_gib_that_is_no_image_is_refused_unread(huge: Path) -> None:
    path = huge
    with path.open("wb") as handle:
        handle.truncate(SIZE)

    result, peak, read = probe_measured(path)

    assert result.error is IssueReason.NOT_AN_IMAGE
    assert result.byte_size == SIZE
    assert result.sha256 is None
    assert peak < MEMORY_BOUND
    assert read < MEMORY_BOUND
