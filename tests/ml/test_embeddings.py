"""The embedding cache's store (ml/embeddings.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from ml.embeddings import (
    EmbeddingArray,
    EmbeddingsMissing,
    EmbeddingStore,
    default_embeddings_dir,
    digests_from_hex,
)
from tests.ml.factories import synthetic_space


def _hashes(n: int, salt: str = "") -> list[str]:
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest() for i in range(n)]


def test_rows_come_back_by_content_hash_in_request_order(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path, synthetic_space())
    hashes = _hashes(6)
    values = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    store.put(hashes[:3], values[:3])
    store.put(hashes[3:], values[3:])

    gathered = store.gather([hashes[5], hashes[0], hashes[3]])

    np.testing.assert_array_equal(gathered, values[[5, 0, 3]].astype(np.float16))
    assert gathered.dtype == np.float16
    assert isinstance(gathered, EmbeddingArray) and gathered.space == synthetic_space()


def test_missing_rows_are_named(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path, synthetic_space())
    hashes = _hashes(4)
    store.put(hashes[1:3], np.ones((2, 3)))

    assert store.missing(hashes).tolist() == [0, 3]
    with pytest.raises(EmbeddingsMissing) as raised:
        store.gather(hashes)
    assert raised.value.missing.tolist() == [0, 3]


def test_a_second_store_sees_parts_written_by_the_first(tmp_path: Path) -> None:
    writer, reader = (
        EmbeddingStore(tmp_path, synthetic_space()),
        EmbeddingStore(tmp_path, synthetic_space()),
    )
    hashes = _hashes(2)
    assert reader.missing(hashes).tolist() == [0, 1]

    writer.put(hashes, np.eye(2))

    assert reader.missing(hashes).size == 0


def synthetic_spaces_do_not_share_rows(tmp_path: Path) -> None:
    hashes = _hashes(2)
    EmbeddingStore(tmp_path, synthetic_space()).put(hashes, np.ones((2, 3)))

    other = EmbeddingStore(tmp_path, synthetic_space(image_size=64))

    assert other.missing(hashes).tolist() == [0, 1]
    assert synthetic_space().key != synthetic_space(image_size=64).key
    assert synthetic_space().key != synthetic_space(flip=False).key


def test_a_part_without_its_hashes_is_not_used(tmp_path: Path) -> None:
    """A writer killed between the two files leaves features nobody reads."""
    store = EmbeddingStore(tmp_path, synthetic_space())
    store.put(_hashes(1), np.ones((1, 3)))
    orphan = store.directory / "part-orphan.npy"
    np.save(orphan, np.zeros((5, 3), dtype=np.float16))

    assert len(EmbeddingStore(tmp_path, synthetic_space())) == 1


def test_compaction_keeps_every_row(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path, synthetic_space())
    hashes = _hashes(20)
    values = np.random.default_rng(0).normal(size=(20, 5))
    for i in range(20):
        store.put(hashes[i : i + 1], values[i : i + 1])

    assert store.compact(min_parts=16)

    fresh = EmbeddingStore(tmp_path, synthetic_space())
    assert len(list(fresh.directory.glob("part-*.sha256.npy"))) == 1
    np.testing.assert_array_equal(fresh.gather(hashes), values.astype(np.float16))


def test_non_finite_features_are_refused(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path, synthetic_space())

    with pytest.raises(ValueError, match="finite"):
        store.put(_hashes(1), np.array([[np.nan, 1.0]]))


def test_embedding_arrays_keep_their_space_through_selections() -> None:
    array = EmbeddingArray(np.zeros((4, 2), dtype=np.float16), synthetic_space())

    assert array[[0, 2]].space == synthetic_space()
    assert array[1:].space == synthetic_space()


def test_digests_round_trip() -> None:
    hashes = _hashes(3)

    assert [d.tobytes().hex() for d in digests_from_hex(hashes)] == hashes


def test_the_cache_directory_is_the_setting_then_the_workers_then_the_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("THRESHER_EMBEDDINGS_DIR", raising=False)
    assert default_embeddings_dir(tmp_path / "worker") == tmp_path / "worker" / "embeddings"
    assert default_embeddings_dir() == Path.home() / ".cache" / "thresher" / "embeddings"
    monkeypatch.setenv("THRESHER_EMBEDDINGS_DIR", str(tmp_path / "shared"))
    assert default_embeddings_dir(tmp_path / "worker") == tmp_path / "shared"
    assert default_embeddings_dir() == tmp_path / "shared"
