"""Factories for image files, hostile files and manifests used by the dataset tests."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from app.models import IssueReason

T = TypeVar("T")


def image_bytes(
    fmt: str = "JPEG", *, size: tuple[int, int] = (48, 40), mode: str = "RGB", seed: int = 0
) -> bytes:
    """A noisy image (noise compresses badly, so truncating it really cuts pixel data)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def write(path: Path | bytes, data: bytes) -> Path | bytes:
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` × ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def corrupt_png() -> bytes:
    """A PNG whose compressed pixel data is damaged (a broken zlib stream)."""
    data = bytearray(image_bytes("PNG", size=(64, 64)))
    start = data.find(b"IDAT") + 4
    for offset in range(start + 2, start + 40):
        data[offset] ^= 0x5A
    return bytes(data)


HEIC_BYTES = b"\x00\x00\x00\x18ftypheic" + bytes(64)

#: Odd but valid file names that must import like any other.
ODD_NAMES = (
    "with space.jpg",
    "ünïcødé 猫.jpg",
    'quote\'s "double".jpg',
    "-leading-dash.jpg",
    "new\nline.jpg",
    "semi;colon,comma.jpg",
)


def hostile_folder(root: Path, outside: Path) -> dict[str, IssueReason | None]:
    """An ImageFolder with every kind of bad file, next to good ones.

    Returns the expected outcome per reported path: None for a sample imported as usable,
    else the reason it is reported with. Dot-files are left out: they are skipped silently.
    """
    cat, dog = root / "cat", root / "dog"
    expected: dict[str, IssueReason | None] = {}
    good = image_bytes("JPEG", seed=1)

    def add(rel: str, data: bytes, outcome: IssueReason | None) -> None:
        write(root / rel, data)
        expected[rel] = outcome

    add("cat/ok.jpg", good, None)
    add("cat/gray.png", image_bytes("PNG", mode="L", seed=2), None)
    add("cat/palette.gif", image_bytes("GIF", seed=3), None)
    add("cat/sub/deeper/nested.webp", image_bytes("WEBP", seed=4), None)
    add("cat/tmp", image_bytes("JPEG", seed=5), None)  # a JPEG with no extension
    add("cat/empty.jpg", b"", IssueReason.EMPTY_FILE)
    add(
        "cat/truncated.jpg",
        truncated(image_bytes("JPEG", size=(96, 96), seed=6)),
        IssueReason.TRUNCATED,
    )
    add(
        "cat/truncated.png",
        truncated(image_bytes("PNG", size=(96, 96), seed=7)),
        IssueReason.TRUNCATED,
    )
    add("cat/notes.jpg", b"this is a text file, not a JPEG\n", IssueReason.NOT_AN_IMAGE)
    add("cat/icon.ico", image_bytes("ICO", size=(32, 32)), IssueReason.UNSUPPORTED_FORMAT)
    add("cat/photo.heic", HEIC_BYTES, IssueReason.UNSUPPORTED_FORMAT)
    add("cat/bomb.png", png_declaring(100_000, 100_000), IssueReason.TOO_MANY_PIXELS)
    add("cat/broken-stream.png", corrupt_png(), IssueReason.CORRUPT)
    os.mkfifo(cat / "pipe.jpg")
    expected["cat/pipe.jpg"] = IssueReason.NOT_A_FILE
    (cat / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    expected["cat/dangling.jpg"] = IssueReason.BROKEN_SYMLINK
    write(outside / "secret.jpg", image_bytes("JPEG", seed=8))
    (cat / "escape.jpg").symlink_to(outside / "secret.jpg")
    expected["cat/escape.jpg"] = IssueReason.SYMLINK_OUTSIDE_ROOT
    (root / "elsewhere").symlink_to(outside, target_is_directory=True)
    expected["elsewhere"] = IssueReason.SYMLINK_OUTSIDE_ROOT
    (cat / "inside-link.jpg").symlink_to(cat / "ok.jpg")
    expected["cat/inside-link.jpg"] = None  # a symlink within the root is an ordinary file
    for index, name in enumerate(ODD_NAMES):
        add(f"dog/{name}", image_bytes("JPEG", seed=20 + index), None)
    write(os.fsencode(dog) + b"/bad-\xff\xfe.jpg", good)
    expected["dog/bad-\\xff\\xfe.jpg"] = IssueReason.BAD_FILENAME
    bad_folder = os.fsencode(root) + b"/\xe9t\xe9"
    os.mkdir(bad_folder)  # noqa: PTH102 - a bytes name, which Path cannot hold
    write(bad_folder + b"/x.jpg", good)
    expected["\\xe9t\\xe9"] = IssueReason.BAD_FILENAME
    add("stray.jpg", good, IssueReason.NO_CLASS_FOLDER)
    write(root / ".hidden.jpg", good)
    write(cat / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    write(root / ".cache" / "cat" / "x.jpg", good)
    return expected


def write_csv(path: Path, rows: Iterable[Iterable[str]], header: str = "path,label") -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        handle.write(header + "\n")
        csv.writer(handle).writerows(rows)
    return path


def write_jsonl(path: Path, lines: Iterable[object]) -> Path:
    """Objects are written as JSON; strings are written as they are (for broken lines)."""
    with path.open("w", encoding="utf-8") as handle:
        for line in lines:
            handle.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


def only(items: Iterable[T], where: Callable[[T], bool]) -> T:
    found = [item for item in items if where(item)]
    assert len(found) == 1, found
    return found[0]
