"""Shared pieces of the ML benchmarks: the CIFAR-10 / CIFAR-10N data, decoded caches and
embeddings, a class-balanced subset.

The archives are read from ``../shared/data`` beside the repository (``THRESHER_DATA_DIR``
overrides it) and extracted once to ``~/.cache/thresher/bench-data`` (``THRESHER_BENCH_CACHE``
overrides it), never into the repository. Decoded caches go to ``<that>/decoded``; embeddings go
to the project's embedding cache (``THRESHER_EMBEDDINGS_DIR``), so later runs, and the pipeline,
reuse them.
"""

from __future__ import annotations

import csv
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from ml.embeddings import EmbeddingArray

from bench.harness.reporting import Timer

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("THRESHER_DATA_DIR", REPO.parent / "shared" / "data"))
WORK = Path(
    os.environ.get("THRESHER_BENCH_CACHE", Path.home() / ".cache" / "thresher" / "bench-data")
)
CIFAR_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


class DataMissing(SystemExit):
    """The benchmark's data is not where it should be; exits with status 2 and says where."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"benchmark data not found: {path}\n"
            "expected the shared data directory beside the repository (../shared/data, see its "
            "README), or set THRESHER_DATA_DIR"
        )
        self.code = 2


def _extract_once(archive: Path, target: Path) -> Path:
    """Extract ``archive`` into ``target`` unless an earlier run finished doing so."""
    marker = target / f".{archive.name}.done"
    if marker.is_file():
        return target
    if not archive.is_file():
        raise DataMissing(archive)
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tar:
            if not member.isfile():
                continue
            path = (target / member.name).resolve()
            if not path.is_relative_to(target.resolve()):
                raise ValueError(f"{archive}: member {member.name} escapes the target directory")
            path.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            path.write_bytes(source.read())
    marker.write_text("ok")
    return target


@dataclass(frozen=True)
class CifarSplit:
    """Paths and label columns of a CIFAR-10 split; labels are indices into CIFAR_CLASSES."""

    paths: list[Path]
    labels: dict[str, NDArray[np.int64]]


def cifar_train() -> CifarSplit:
    """The 50,000 training images with their ``clean``, ``aggre``, ``random1..3`` and
    ``worse`` labels (CIFAR-10N)."""
    return _cifar_split("train", ("clean", "aggre", "random1", "random2", "random3", "worse"))


def cifar_test() -> CifarSplit:
    """The 10,000 test images with their ``label``."""
    return _cifar_split("test", ("label",))


def _cifar_split(split: str, columns: Sequence[str]) -> CifarSplit:
    """The images of ``<split>.tar``, labelled by the ``columns`` of ``<split>_labels.csv``."""
    root = _extract_once(DATA / "cifar10" / f"{split}.tar", WORK / "cifar10")
    index = {name: i for i, name in enumerate(CIFAR_CLASSES)}
    csv_path = DATA / "cifar10" / f"{split}_labels.csv"
    if not csv_path.is_file():
        raise DataMissing(csv_path)
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = {c: np.array([index[r[c]] for r in rows], dtype=np.int64) for c in columns}
    return CifarSplit([root / r["path"] for r in rows], labels)


def decoded(paths: list[Path], size: int = 32) -> NDArray[np.uint8]:
    """The decoded cache of ``paths`` (built once, reused by later runs)."""
    from ml.cache import decoded_cache

    cache = decoded_cache(paths, size=size, cache_dir=WORK / "decoded")
    return cache.images


@dataclass(frozen=True)
class Embedded:
    """Embeddings of some images and what computing the missing ones cost."""

    features: EmbeddingArray
    computed: int
    seconds: float

    @property
    def images_per_second(self) -> float | None:
        return self.computed / self.seconds if self.computed else None


def embedded(paths: list[Path], recipe_name: str = "pretrained-cpu") -> Embedded:
    """The embeddings of ``paths`` in the space of a head recipe, from the embedding cache;
    the rows it lacks are computed (and stored) first, with progress on stdout."""
    from ml.cache import content_hashes
    from ml.embed import Embedder, embed_missing
    from ml.embeddings import EmbeddingStore, default_embeddings_dir
    from ml.recipes import load_recipe

    recipe = load_recipe(recipe_name)
    hashes = content_hashes(paths)
    embedder = Embedder(recipe.model, image_size=recipe.image_size, flip=recipe.tta_flip)
    store = EmbeddingStore(default_embeddings_dir(), embedder.space)
    clock = Timer()

    def progress(done: int, total: int) -> bool:
        if done % (20 * 512) < 512 or done == total:
            print(f"  embedded {done}/{total} ({done / clock():.1f} img/s)", flush=True)
        return False

    stats = embed_missing(store, embedder, paths, hashes, progress=progress)
    store.compact()
    return Embedded(store.gather(hashes), stats.computed, stats.seconds)


def embedding_throughput(paths: list[Path], recipe_name: str = "pretrained-cpu") -> float:
    """Images per second of embedding ``paths`` from their files (decode included) into a
    throwaway cache, so nothing cached makes it look faster."""
    import tempfile

    from ml.cache import content_hashes
    from ml.embed import Embedder, embed_missing
    from ml.embeddings import EmbeddingStore
    from ml.recipes import load_recipe

    recipe = load_recipe(recipe_name)
    embedder = Embedder(recipe.model, image_size=recipe.image_size, flip=recipe.tta_flip)
    with tempfile.TemporaryDirectory() as scratch:
        store = EmbeddingStore(scratch, embedder.space)
        stats = embed_missing(store, embedder, paths, content_hashes(paths))
    return stats.images_per_second


def stratified_subset(labels: NDArray[np.int64], size: int, seed: int) -> NDArray[np.int64]:
    """``size`` indices with (nearly) equal shares of every class of ``labels``, sorted."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = size // classes.size
    chosen = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in classes]
    return np.sort(np.concatenate(chosen))
