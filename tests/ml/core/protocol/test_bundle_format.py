"""The bundle container: refuses truncated, corrupt and malformed bytes with a reason."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest

from ml.core.protocol.bundle_format import BundleError, decode_bundle, encode_bundle

PREFIX = "<4sHHII"


def bundle() -> bytes:
    return encode_bundle(
        "results",
        {"k": 1},
        [("sample_id", np.arange(6, dtype="<i8")), ("p", np.linspace(0, 1, 6, dtype="<f4"))],
    )


def with_header(header: bytes, body: bytes = b"") -> bytes:
    payload = header + body
    return struct.pack(PREFIX, b"THRB", 1, 0, len(header), zlib.crc32(payload)) + payload


def test_arrays_round_trip_with_type_and_meta() -> None:
    decoded = decode_bundle(bundle())
    assert decoded.kind == "results"
    assert decoded.meta == {"k": 1}
    assert decoded.arrays["sample_id"].tolist() == list(range(6))


@pytest.mark.parametrize("cut", [0, 10, 17, -1, -5])
def test_truncated_bundle_is_refused_with_a_reason(cut: int) -> None:
    with pytest.raises(BundleError, match=r"truncated|short"):
        decode_bundle(bundle()[:cut])


def test_corrupted_byte_fails_the_checksum() -> None:
    data = bytearray(bundle())
    data[-3] ^= 0xFF
    with pytest.raises(BundleError, match="checksum"):
        decode_bundle(bytes(data))


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(BundleError, match="unexpected bytes"):
        decode_bundle(bundle() + b"\0" * 8)


def test_other_formats_are_refused() -> None:
    with pytest.raises(BundleError, match="magic"):
        decode_bundle(b"PK\x03\x04" + b"\0" * 40)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"not json", "not JSON"),
        (
            b'{"type": "results", "meta": {}, "arrays": [{"name": "sample_id", "dtype": "|O", '
            b'"shape": [1]}]}',
            "dtype",
        ),
        (
            b'{"type": "results", "meta": {}, "arrays": [{"name": "sample_id", "dtype": "<i8", '
            b'"shape": [-1]}]}',
            "shape",
        ),
    ],
)
def test_malformed_headers_are_refused(header: bytes, reason: str) -> None:
    with pytest.raises(BundleError, match=reason):
        decode_bundle(with_header(header))


def test_a_declared_shape_too_large_to_hold_is_refused_not_wrapped() -> None:
    # [2**61, 8] int64s is 2**67 bytes: in int64 arithmetic the size wraps around to 0.
    header = json.dumps(
        {
            "type": "results",
            "meta": {},
            "arrays": [{"name": "sample_id", "dtype": "<i8", "shape": [2**61, 8]}],
        },
        separators=(",", ":"),
    ).encode()
    prefix_size = struct.calcsize(PREFIX)
    body = header + b"\0" * (-(prefix_size + len(header)) % 8)  # where the array would start
    data = struct.pack(PREFIX, b"THRB", 1, 0, len(header), zlib.crc32(body)) + body

    with pytest.raises(BundleError, match="truncated"):
        decode_bundle(data)


def test_a_bundle_of_another_type_is_refused_by_name() -> None:
    assert decode_bundle(bundle(), kind="results").kind == "results"
    with pytest.raises(BundleError, match="expected an embeddings bundle, got 'results'"):
        decode_bundle(bundle(), kind="embeddings")
