"""The bundle format: little-endian numpy arrays behind a small header, and its checks.

The typed bundles built on it (results, manifests, label issues, embeddings) are in
:mod:`ml.core.protocol.bundles`. Layout::

    offset  size  field
    0       4     magic b"THRB"
    4       2     format version (uint16, 1)
    6       2     reserved (0)
    8       4     header length H (uint32)
    12      4     CRC-32 of everything after these 16 bytes (uint32)
    16      H     header: UTF-8 JSON {"type": str, "meta": {...},
                  "arrays": [{"name": str, "dtype": str, "shape": [int, ...]}, ...]}
    16+H    …     the arrays' bytes in header order, each starting at a multiple of 8
                  (zero padding), C order; the bundle ends exactly after the last array.

Only plain numeric dtypes are allowed (never objects, never pickle); decoding checks the magic,
the CRC, the header, every dtype and shape, and that the length is exact, and raises
:class:`BundleError` with the reason. Arrays are read without copying (``np.frombuffer``).
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Bundle",
    "BundleError",
    "check_probabilities",
    "decode_bundle",
    "decode_strings",
    "encode_bundle",
    "encode_strings",
    "expect_array",
]

_MAGIC = b"THRB"
_FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sHHII")
_MAX_HEADER_BYTES = 1 << 20
_ALLOWED_DTYPES = frozenset({"<i8", "<i4", "|i1", "|u1", "<f2", "<f4", "<f8"})


class BundleError(ValueError):
    """A bundle is truncated, corrupt or does not hold what its type needs; the message says
    what is wrong."""


def _align(offset: int) -> int:
    return -(-offset // 8) * 8


def encode_bundle(
    kind: str, meta: Mapping[str, Any], arrays: Sequence[tuple[str, NDArray[Any]]]
) -> bytes:
    """A bundle of type ``kind`` holding ``arrays`` in order; raises :class:`BundleError` for
    a dtype that is not a plain number."""
    descriptions = []
    prepared = []
    for name, array in arrays:
        data = np.ascontiguousarray(array)
        dtype = data.dtype.newbyteorder("<") if data.dtype.byteorder == ">" else data.dtype
        data = data.astype(dtype, copy=False)
        if data.dtype.str not in _ALLOWED_DTYPES:
            raise BundleError(f"array {name!r} has dtype {data.dtype.str}, not a plain number")
        descriptions.append({"name": name, "dtype": data.dtype.str, "shape": list(data.shape)})
        prepared.append(data)
    header = json.dumps(
        {"type": kind, "meta": dict(meta), "arrays": descriptions}, separators=(",", ":")
    ).encode()
    parts = [header]
    offset = _PREFIX.size + len(header)
    for data in prepared:
        padding = _align(offset) - offset
        parts.append(b"\0" * padding)
        parts.append(data.tobytes())
        offset += padding + data.nbytes
    body = b"".join(parts)
    prefix = _PREFIX.pack(_MAGIC, _FORMAT_VERSION, 0, len(header), zlib.crc32(body))
    return prefix + body


@dataclass(frozen=True)
class Bundle:
    """A decoded bundle: its type, its ``meta`` object and its arrays by name (read-only views
    of the bytes)."""

    kind: str
    meta: dict[str, Any]
    arrays: dict[str, NDArray[Any]]


def decode_bundle(data: bytes | bytearray | memoryview, *, kind: str | None = None) -> Bundle:
    """Reads a bundle of type ``kind`` (any type when ``None``), checking everything but what
    its type needs; raises :class:`BundleError` with the reason."""
    view = memoryview(data).cast("B")
    header_len, crc = _read_prefix(view)
    found, meta, descriptions = _read_header(view, header_len)
    layout, end = _layout(descriptions, _PREFIX.size + header_len)
    if end > len(view):
        raise BundleError(f"truncated: the arrays need {end} bytes, got {len(view)}")
    if end < len(view):
        raise BundleError(f"{len(view) - end} unexpected bytes after the last array")
    if zlib.crc32(view[_PREFIX.size :]) != crc:
        raise BundleError("checksum mismatch: the bundle is corrupt")
    arrays: dict[str, NDArray[Any]] = {}
    for name, dtype, shape, start in layout:
        if name in arrays:
            raise BundleError(f"array {name!r} appears twice")
        count = math.prod(shape)
        arrays[name] = np.frombuffer(view, dtype=dtype, count=count, offset=start).reshape(shape)
    if kind is not None and found != kind:
        article = "an" if kind[0] in "aeiou" else "a"
        raise BundleError(f"expected {article} {kind} bundle, got {found!r}")
    return Bundle(kind=found, meta=meta, arrays=arrays)


def _read_prefix(view: memoryview) -> tuple[int, int]:
    """The header length and CRC from the 16-byte prefix, checked."""
    if len(view) < _PREFIX.size:
        raise BundleError(f"truncated: {len(view)} bytes is shorter than the 16-byte prefix")
    magic, version, _reserved, header_len, crc = _PREFIX.unpack_from(view)
    if magic != _MAGIC:
        raise BundleError("not a bundle: wrong magic bytes")
    if version != _FORMAT_VERSION:
        raise BundleError(f"bundle format version {version} is not supported")
    if header_len > _MAX_HEADER_BYTES:
        raise BundleError(f"header of {header_len} bytes is over the limit")
    if _PREFIX.size + header_len > len(view):
        raise BundleError(
            f"truncated: the header needs {_PREFIX.size + header_len} bytes, got {len(view)}"
        )
    return int(header_len), int(crc)


def _read_header(view: memoryview, header_len: int) -> tuple[str, dict[str, Any], list[Any]]:
    """The header's type, meta and array descriptions (not yet checked one by one)."""
    try:
        header = json.loads(bytes(view[_PREFIX.size : _PREFIX.size + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"header is not JSON: {error}") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise BundleError("header must be an object with an 'arrays' list")
    kind, meta = header.get("type"), header.get("meta", {})
    if not isinstance(kind, str) or not isinstance(meta, dict):
        raise BundleError("header needs a 'type' string and a 'meta' object")
    return kind, meta, header["arrays"]


def _layout(
    descriptions: list[Any], offset: int
) -> tuple[list[tuple[str, str, tuple[int, ...], int]], int]:
    """Each array's name, dtype, shape and byte offset, from ``offset`` on; and where the last
    one ends."""
    layout = []
    for index, item in enumerate(descriptions):
        name, dtype, shape = _array_description(index, item)
        offset = _align(offset)
        # Python integers: a declared shape like [2**61, 8] must not wrap around in int64.
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        layout.append((name, dtype, shape, offset))
        offset += nbytes
    return layout, offset


def _array_description(index: int, item: Any) -> tuple[str, str, tuple[int, ...]]:
    if not isinstance(item, dict):
        raise BundleError(f"array #{index}: description must be an object")
    name, dtype, shape = item.get("name"), item.get("dtype"), item.get("shape")
    if not isinstance(name, str) or not name:
        raise BundleError(f"array #{index}: needs a name")
    if dtype not in _ALLOWED_DTYPES:
        raise BundleError(
            f"array {name!r}: dtype {dtype!r} is not one of {sorted(_ALLOWED_DTYPES)}"
        )
    if (
        not isinstance(shape, list)
        or len(shape) > 4
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise BundleError(f"array {name!r}: shape must be a list of up to 4 non-negative ints")
    return name, str(dtype), tuple(shape)


def expect_array(
    arrays: Mapping[str, NDArray[Any]], name: str, dtype: str, shape: tuple[int | None, ...]
) -> NDArray[Any]:
    """``arrays[name]``, checked to have ``dtype`` and ``shape`` (``None``: any length)."""
    if name not in arrays:
        raise BundleError(f"missing array {name!r}")
    array = arrays[name]
    if array.dtype.str != dtype:
        raise BundleError(f"array {name!r} must be {dtype}, got {array.dtype.str}")
    if array.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(array.shape, shape, strict=True)
    ):
        wanted = ", ".join("*" if n is None else str(n) for n in shape)
        raise BundleError(f"array {name!r} must have shape [{wanted}], got {list(array.shape)}")
    return array


def encode_strings(values: Sequence[str]) -> tuple[NDArray[np.int64], NDArray[np.uint8]]:
    """Strings as ``offsets`` ``<i8 [N+1]`` into ``bytes`` ``|u1`` (UTF-8)."""
    encoded = [value.encode() for value in values]
    offsets = np.zeros(len(encoded) + 1, dtype="<i8")
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return offsets, np.frombuffer(b"".join(encoded), dtype=np.uint8)


def decode_strings(offsets: NDArray[np.int64], blob: NDArray[np.uint8], name: str) -> list[str]:
    """The strings :func:`encode_strings` wrote; ``name`` is for the error message."""
    if offsets[0] != 0 or offsets[-1] != blob.shape[0] or np.any(np.diff(offsets) < 0):
        raise BundleError(f"{name}: offsets do not partition the bytes")
    raw = blob.tobytes()
    bounds = offsets.tolist()
    try:
        return [raw[bounds[i] : bounds[i + 1]].decode() for i in range(len(bounds) - 1)]
    except UnicodeDecodeError:
        raise BundleError(f"{name}: not UTF-8") from None


def check_probabilities(values: NDArray[np.float32], name: str, *, allow_nan: bool) -> None:
    """Raises :class:`BundleError` unless every value is finite (or NaN, when allowed) and in
    0..1, give or take rounding."""
    finite = values[~np.isnan(values)] if allow_nan else values
    if not allow_nan and not np.all(np.isfinite(values)):
        raise BundleError(f"{name} has values that are not finite")
    if finite.size and (float(finite.min()) < -1e-4 or float(finite.max()) > 1 + 1e-4):
        raise BundleError(f"{name} has values outside 0..1")
