"""Computing embeddings with the bundled backbone (ml/embed.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml.cache import CacheBuildError, content_hashes
from ml.embed import Embedder, embed_missing, embeddings_for
from ml.embeddings import EmbeddingStore
from ml.recipes import ModelConfig
from tests.ml.factories import balanced_labels, colour_images, write_image

LITE0 = ModelConfig(name="efficientnet_lite0", pretrained=True)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(LITE0, image_size=32, flip=True, device="cpu")


def _files(root: Path, n: int, seed: int = 0) -> list[Path]:
    images = colour_images(balanced_labels(n, 3, seed=seed), size=24, seed=seed)
    return [write_image(root / f"{i:03d}.png", pixels) for i, pixels in enumerate(images)]


def test_a_second_embed_computes_nothing(tmp_path: Path, embedder: Embedder) -> None:
    paths = _files(tmp_path / "images", 10)
    hashes = content_hashes(paths)
    store = EmbeddingStore(tmp_path / "emb", embedder.space)

    first = embed_missing(store, embedder, paths, hashes, workers=0)
    second = embed_missing(
        EmbeddingStore(tmp_path / "emb", embedder.space), embedder, paths, hashes
    )

    assert (first.computed, first.reused) == (10, 0)
    assert (second.computed, second.reused) == (0, 10)
    assert store.gather(hashes).shape == (10, 1280)


def test_only_a_changed_image_is_embedded_again(tmp_path: Path, embedder: Embedder) -> None:
    paths = _files(tmp_path / "images", 6)
    store = EmbeddingStore(tmp_path / "emb", embedder.space)
    embed_missing(store, embedder, paths, content_hashes(paths), workers=0)
    before = store.gather(content_hashes(paths))

    write_image(paths[2], colour_images(np.array([1]), size=24, seed=99)[0])
    hashes = content_hashes(paths)
    again = embed_missing(store, embedder, paths, hashes, workers=0)

    assert (again.computed, again.reused) == (1, 5)
    after = store.gather(hashes)
    np.testing.assert_array_equal(after[[0, 1, 3, 4, 5]], before[[0, 1, 3, 4, 5]])
    assert not np.array_equal(after[2], before[2])


def test_features_match_the_backbone_on_the_image_and_its_mirror(
    tmp_path: Path, embedder: Embedder
) -> None:
    paths = _files(tmp_path / "images", 2)
    features = embeddings_for(
        LITE0, paths, content_hashes(paths), image_size=32, flip=True, root=tmp_path / "emb"
    )
    from ml.decode import load_image

    pixels = np.stack([load_image(p, size=32) for p in paths])
    mirrored = pixels[:, :, ::-1]
    plain = Embedder(LITE0, image_size=32, flip=False, device="cpu")

    expected = (plain(pixels) + plain(mirrored)) / 2
    np.testing.assert_allclose(np.asarray(features, np.float32), expected, rtol=0.02, atol=0.02)


def test_a_stopped_embed_resumes_without_redoing_stored_chunks(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ml.embed.CHUNK_ROWS", 4)
    paths = _files(tmp_path / "images", 10)
    hashes = content_hashes(paths)
    store = EmbeddingStore(tmp_path / "emb", embedder.space)

    stopped = embed_missing(store, embedder, paths, hashes, workers=0, progress=lambda d, n: True)
    resumed = embed_missing(store, embedder, paths, hashes, workers=0)

    assert stopped.stopped and stopped.computed == 4
    assert (resumed.computed, resumed.reused) == (6, 4)


def test_an_undecodable_file_is_reported_by_path(tmp_path: Path, embedder: Embedder) -> None:
    paths = _files(tmp_path / "images", 3)
    paths[1].write_bytes(b"not an image")
    store = EmbeddingStore(tmp_path / "emb", embedder.space)

    with pytest.raises(CacheBuildError, match=r"001\.png"):
        embed_missing(store, embedder, paths, content_hashes(paths), workers=0)


def test_the_space_names_the_weights(embedder: Embedder) -> None:
    assert embedder.space.backbone == "efficientnet_lite0"
    assert embedder.space.weights_sha256.startswith("5793442")
    assert embedder.space.flip and embedder.space.image_size == 32


def test_embeddings_need_pretrained_weights() -> None:
    with pytest.raises(ValueError, match="pretrained"):
        Embedder(ModelConfig(name="efficientnet_lite0"), image_size=32, flip=False)
