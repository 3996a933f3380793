"""The typed bundles: results and manifests round-trip, and refuse what their type forbids."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from ml.core.protocol.bundle_format import BundleError
from ml.core.protocol.bundles import (
    JobManifest,
    ResultChunk,
    decode_manifest,
    decode_results,
    encode_manifest,
    encode_results,
)


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


def test_a_results_bundle_needs_sample_ids() -> None:
    header = b'{"type": "results", "meta": {}, "arrays": []}'
    data = struct.pack("<4sHHII", b"THRB", 1, 0, len(header), zlib.crc32(header)) + header
    with pytest.raises(BundleError, match="missing array 'sample_id'"):
        decode_results(data)


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
