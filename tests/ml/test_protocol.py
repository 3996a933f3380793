"""The wire protocol: specs, and the binary bundles of results and manifests."""

from __future__ import annotations

import subprocess
import sys
import zlib

import numpy as np
import pytest
from pydantic import ValidationError

from ml.protocol import (
    BundleError,
    JobKind,
    JobManifest,
    ManifestRef,
    ResultChunk,
    TrainFoldSpec,
    decode_manifest,
    decode_results,
    device_kind,
    encode_manifest,
    encode_results,
    parse_spec,
    result_set,
    spec_json,
)

SHA = "ab" * 32


def results(n: int = 6, k: int = 3) -> ResultChunk:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(k + 2), size=n)[:, :k].astype(np.float32)
    return ResultChunk(
        sample_id=np.arange(100, 100 + n, dtype=np.int64),
        topk_class_id=rng.integers(0, 50, size=(n, k)).astype(np.int32),
        topk_prob=probs,
        label_prob=np.linspace(0, 1, n).astype(np.float32),
    )


def test_results_round_trip_exactly() -> None:
    chunk = results()
    decoded = decode_results(encode_results(chunk))
    assert decoded.k == 3
    np.testing.assert_array_equal(decoded.sample_id, chunk.sample_id)
    assert decoded.topk_class_id is not None and decoded.topk_prob is not None
    np.testing.assert_array_equal(decoded.topk_class_id, chunk.topk_class_id)
    np.testing.assert_array_equal(decoded.topk_prob, chunk.topk_prob)
    assert decoded.junk_score is None


def test_junk_scores_alone_are_a_valid_bundle() -> None:
    chunk = ResultChunk(np.arange(4), junk_score=np.array([0, 0.5, 0.9, 1], dtype=np.float32))
    decoded = decode_results(encode_results(chunk))
    assert decoded.topk_class_id is None
    assert decoded.junk_score is not None and decoded.junk_score.tolist()[2] == pytest.approx(0.9)


@pytest.mark.parametrize("cut", [0, 10, 17, -1, -5])
def test_truncated_bundle_is_refused_with_a_reason(cut: int) -> None:
    data = encode_results(results())
    with pytest.raises(BundleError, match=r"truncated|short"):
        decode_results(data[:cut])


def test_corrupted_byte_fails_the_checksum() -> None:
    data = bytearray(encode_results(results()))
    data[-3] ^= 0xFF
    with pytest.raises(BundleError, match="checksum"):
        decode_results(bytes(data))


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(BundleError, match="unexpected bytes"):
        decode_results(encode_results(results()) + b"\0" * 8)


def test_other_formats_are_refused() -> None:
    with pytest.raises(BundleError, match="magic"):
        decode_results(b"PK\x03\x04" + b"\0" * 40)


def _bundle_with_header(header: bytes, body: bytes = b"") -> bytes:
    import struct

    payload = header + body
    return struct.pack("<4sHHII", b"THRB", 1, 0, len(header), zlib.crc32(payload)) + payload


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
        (b'{"type": "results", "meta": {}, "arrays": []}', "missing array 'sample_id'"),
    ],
)
def test_malformed_headers_are_refused(header: bytes, reason: str) -> None:
    with pytest.raises(BundleError, match=reason):
        decode_results(_bundle_with_header(header))


def test_probabilities_outside_zero_one_are_refused() -> None:
    chunk = results()
    assert chunk.topk_prob is not None
    bad = ResultChunk(chunk.sample_id, chunk.topk_class_id, chunk.topk_prob * 3)
    with pytest.raises(BundleError, match=r"outside 0\.\.1"):
        encode_results(bad)


def test_duplicate_samples_in_a_chunk_are_refused() -> None:
    chunk = results()
    ids = chunk.sample_id.copy()
    ids[1] = ids[0]
    with pytest.raises(BundleError, match="duplicates"):
        encode_results(ResultChunk(ids, chunk.topk_class_id, chunk.topk_prob))


def test_chunks_split_rows_in_order() -> None:
    parts = results(n=10).chunks(rows=4)
    assert [len(p) for p in parts] == [4, 4, 2]
    assert np.concatenate([p.sample_id for p in parts]).tolist() == list(range(100, 110))


def manifest(n: int = 5) -> JobManifest:
    return JobManifest(
        root="/data/images",
        sample_ids=np.arange(10, 10 + n, dtype=np.int64),
        labels=np.array([0, 1, 1, -1, 0][:n], dtype=np.int32),
        folds=np.array([0, 1, 2, 0, 1][:n], dtype=np.int8),
        sha256=np.arange(n * 32, dtype=np.uint8).reshape(n, 32),
        paths=["cat/a.jpg", "dög/b.jpg", "dög/c.png", "x/d", "cat/e.jpg"][:n],
        class_ids=np.array([7, 9], dtype=np.int64),
        class_names=["cat", "dög"],
        meta={"dataset_id": 3},
    )


def test_manifest_round_trips_with_unicode_paths() -> None:
    decoded = decode_manifest(encode_manifest(manifest()))
    assert decoded.paths[1] == "dög/b.jpg"
    assert decoded.class_names == ["cat", "dög"]
    assert decoded.root == "/data/images"
    assert decoded.meta == {"dataset_id": 3}
    assert decoded.hex_digests()[0] == bytes(range(32)).hex()


def test_manifest_labels_must_index_its_classes() -> None:
    bad = manifest()
    bad.labels[0] = 2
    with pytest.raises(BundleError, match="labels"):
        encode_manifest(bad)


def test_specs_are_discriminated_by_kind() -> None:
    ref = {"sha256": SHA, "count": 5, "num_classes": 2}
    spec = parse_spec({"kind": "train_fold", "recipe": "cifar-small", "train": ref, "fold": 2})
    assert isinstance(spec, TrainFoldSpec)
    assert spec.kind is JobKind.TRAIN_FOLD
    assert parse_spec(spec_json(spec)) == spec
    assert result_set(spec) == (ManifestRef(**ref), 2)


def test_unknown_spec_fields_are_refused() -> None:
    ref = {"sha256": SHA, "count": 5, "num_classes": 2}
    with pytest.raises(ValidationError):
        parse_spec({"kind": "predict", "predict": ref, "model": None, "typo": 1})


def test_device_kinds() -> None:
    assert device_kind("cuda:3").value == "cuda"
    assert device_kind("cpu").value == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        device_kind("tpu")


def test_protocol_imports_without_torch() -> None:
    code = "import sys, ml.protocol; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_declared_shape_too_large_to_hold_is_refused_not_wrapped() -> None:
    import json
    import struct

    # [2**61, 8] int64s is 2**67 bytes: in int64 arithmetic the size wraps around to 0.
    header = json.dumps(
        {
            "type": "results",
            "meta": {},
            "arrays": [{"name": "sample_id", "dtype": "<i8", "shape": [2**61, 8]}],
        },
        separators=(",", ":"),
    ).encode()
    prefix_size = struct.calcsize("<4sHHII")
    body = header + b"\0" * (-(prefix_size + len(header)) % 8)  # where the array would start
    data = struct.pack("<4sHHII", b"THRB", 1, 0, len(header), zlib.crc32(body)) + body

    with pytest.raises(BundleError, match="truncated"):
        decode_results(data)
