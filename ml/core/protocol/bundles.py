"""The typed bundles (see :mod:`ml.core.protocol.bundle_format` for the byte layout).

Each ``encode_*`` checks its own output by decoding it; each ``decode_*`` raises
:class:`~ml.core.protocol.bundle_format.BundleError` with the reason.

**Results** (``type = "results"``): one row per sample, any subset of a job's samples per chunk:

* ``sample_id`` ``<i8 [N]``, unique in the chunk;
* ``topk_class_id`` ``<i4 [N, K]`` and ``topk_prob`` ``<f4 [N, K]``, together or not at all:
  the K most probable classes (server class ids, most probable first) and their probabilities;
* ``label_prob`` ``<f4 [N]`` (optional): the probability of the sample's given label;
* ``junk_score`` ``<f4 [N]`` (optional): p(junk) from the junk classifier, 0..1.

At least one of ``topk_*`` and ``junk_score`` is present. Probabilities are finite and in 0..1
(NaN allowed in ``label_prob``: label unknown).

**Manifests** (``type = "manifest"``), row ``i`` = sample ``i``: ``sample_id`` ``<i8 [N]``,
``label`` ``<i4 [N]`` (index into the classes, -1 = none), ``fold`` ``<i1 [N]`` (-1 = none),
``sha256`` ``|u1 [N, 32]``, paths relative to ``meta.root`` as ``path_offsets`` ``<i8 [N+1]`` +
``path_bytes`` ``|u1`` (UTF-8), the classes as ``class_id`` ``<i8 [C]`` + ``class_name_offsets`` +
``class_name_bytes``.

**Embeddings** (``type = "embeddings"``), one row per image: ``sha256`` ``|u1 [N, 32]`` (the
image file's content hash, unique), ``features`` ``<f2 [N, D]`` (finite); ``meta.space`` is the
embedding space (:class:`ml.embeddings.EmbeddingSpace` as a mapping).

**Label issues** (``type = "label_issues"``), one row per judged sample: ``sample_id`` ``<i8 [N]``
(unique), ``is_issue`` ``|u1 [N]`` (1 = cleanlab finds the given label wrong), ``label_quality``
``<f4 [N]`` (cleanlab's label-quality score in 0..1, lower = more likely mislabeled).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ml.core.protocol.bundle_format import (
    BundleError,
    check_probabilities,
    decode_bundle,
    decode_strings,
    encode_bundle,
    encode_strings,
    expect_array,
)

__all__ = [
    "RESULT_CHUNK_ROWS",
    "EmbeddingRows",
    "JobManifest",
    "LabelIssues",
    "ResultChunk",
    "decode_embeddings",
    "decode_label_issues",
    "decode_manifest",
    "decode_results",
    "encode_embeddings",
    "encode_label_issues",
    "encode_manifest",
    "encode_results",
]

#: Results are uploaded in chunks of at most this many samples.
RESULT_CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class ResultChunk:
    """Per-sample outputs of a job (see the module docstring for shapes and meanings)."""

    sample_id: NDArray[np.int64]
    topk_class_id: NDArray[np.int32] | None = None
    topk_prob: NDArray[np.float32] | None = None
    label_prob: NDArray[np.float32] | None = None
    junk_score: NDArray[np.float32] | None = None

    def __len__(self) -> int:
        return int(self.sample_id.shape[0])

    @property
    def k(self) -> int:
        return 0 if self.topk_class_id is None else int(self.topk_class_id.shape[1])

    def slice(self, start: int, stop: int) -> ResultChunk:
        def part(array: NDArray[Any] | None) -> Any:
            return None if array is None else array[start:stop]

        return ResultChunk(
            sample_id=self.sample_id[start:stop],
            topk_class_id=part(self.topk_class_id),
            topk_prob=part(self.topk_prob),
            label_prob=part(self.label_prob),
            junk_score=part(self.junk_score),
        )

    def chunks(self, rows: int = RESULT_CHUNK_ROWS) -> list[ResultChunk]:
        """This chunk split into pieces of at most ``rows`` samples (one empty piece if empty)."""
        return [self.slice(s, s + rows) for s in range(0, max(len(self), 1), rows)]


def encode_results(chunk: ResultChunk) -> bytes:
    """The bundle of ``chunk``; raises :class:`BundleError` if the chunk is not valid."""
    arrays: list[tuple[str, NDArray[Any]]] = [("sample_id", np.asarray(chunk.sample_id, "<i8"))]
    if chunk.topk_class_id is not None:
        arrays.append(("topk_class_id", np.asarray(chunk.topk_class_id, "<i4")))
    if chunk.topk_prob is not None:
        arrays.append(("topk_prob", np.asarray(chunk.topk_prob, "<f4")))
    for name in ("label_prob", "junk_score"):
        value = getattr(chunk, name)
        if value is not None:
            arrays.append((name, np.asarray(value, "<f4")))
    data = encode_bundle("results", {"k": chunk.k}, arrays)
    decode_results(data)
    return data


def decode_results(data: bytes | bytearray | memoryview) -> ResultChunk:
    """Reads and validates a results bundle; raises :class:`BundleError` with the reason."""
    bundle = decode_bundle(data, kind="results")
    arrays = bundle.arrays
    known = {"sample_id", "topk_class_id", "topk_prob", "label_prob", "junk_score"}
    if unknown := sorted(set(arrays) - known):
        raise BundleError(f"unknown arrays {unknown}; a results bundle holds {sorted(known)}")
    sample_id = expect_array(arrays, "sample_id", "<i8", (None,))
    n = int(sample_id.shape[0])
    if np.unique(sample_id).shape[0] != n:
        raise BundleError("sample_id has duplicates")
    topk_ids = topk_prob = None
    if ("topk_class_id" in arrays) != ("topk_prob" in arrays):
        raise BundleError("topk_class_id and topk_prob come together")
    if "topk_class_id" in arrays:
        topk_ids = expect_array(arrays, "topk_class_id", "<i4", (n, None))
        k = int(topk_ids.shape[1])
        if not 1 <= k <= 100:
            raise BundleError(f"top-k needs 1 <= k <= 100, got {k}")
        topk_prob = expect_array(arrays, "topk_prob", "<f4", (n, k))
        check_probabilities(topk_prob, "topk_prob", allow_nan=False)
    label_prob = junk = None
    if "label_prob" in arrays:
        label_prob = expect_array(arrays, "label_prob", "<f4", (n,))
        check_probabilities(label_prob, "label_prob", allow_nan=True)
    if "junk_score" in arrays:
        junk = expect_array(arrays, "junk_score", "<f4", (n,))
        check_probabilities(junk, "junk_score", allow_nan=False)
    if topk_ids is None and junk is None:
        raise BundleError("a results bundle needs topk_class_id/topk_prob or junk_score")
    return ResultChunk(sample_id, topk_ids, topk_prob, label_prob, junk)


# --- manifests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobManifest:
    """The samples a job runs on, in order (see the module docstring).

    ``labels`` index ``class_names``/``class_ids`` (-1: no label); ``folds`` is -1 where a
    sample has no fold; ``sha256`` is ``[N, 32]`` raw digests of the image files.
    """

    root: str
    sample_ids: NDArray[np.int64]
    labels: NDArray[np.int32]
    folds: NDArray[np.int8]
    sha256: NDArray[np.uint8]
    paths: list[str]
    class_ids: NDArray[np.int64]
    class_names: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.sample_ids.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def hex_digests(self) -> list[str]:
        return [row.tobytes().hex() for row in self.sha256]


def encode_manifest(manifest: JobManifest) -> bytes:
    """The bundle of ``manifest``; raises :class:`BundleError` when its arrays disagree."""
    n = len(manifest)
    if len(manifest.paths) != n:
        raise BundleError(f"{len(manifest.paths)} paths for {n} samples")
    path_offsets, path_bytes = encode_strings(manifest.paths)
    name_offsets, name_bytes = encode_strings(manifest.class_names)
    data = encode_bundle(
        "manifest",
        {**manifest.meta, "root": manifest.root},
        [
            ("sample_id", np.asarray(manifest.sample_ids, "<i8")),
            ("label", np.asarray(manifest.labels, "<i4")),
            ("fold", np.asarray(manifest.folds, "|i1")),
            ("sha256", np.asarray(manifest.sha256, "|u1").reshape(n, 32)),
            ("path_offsets", path_offsets),
            ("path_bytes", path_bytes),
            ("class_id", np.asarray(manifest.class_ids, "<i8")),
            ("class_name_offsets", name_offsets),
            ("class_name_bytes", name_bytes),
        ],
    )
    decode_manifest(data)
    return data


def decode_manifest(data: bytes | bytearray | memoryview) -> JobManifest:
    """Reads and validates a manifest bundle; raises :class:`BundleError` with the reason."""
    bundle = decode_bundle(data, kind="manifest")
    arrays = bundle.arrays
    sample_ids = expect_array(arrays, "sample_id", "<i8", (None,))
    n = int(sample_ids.shape[0])
    class_ids = expect_array(arrays, "class_id", "<i8", (None,))
    c = int(class_ids.shape[0])
    labels = expect_array(arrays, "label", "<i4", (n,))
    if n and (int(labels.min()) < -1 or int(labels.max()) >= c):
        raise BundleError(f"labels must be -1 or a class index below {c}")
    root = bundle.meta.get("root")
    if not isinstance(root, str):
        raise BundleError("meta.root must be a string")
    meta = {key: value for key, value in bundle.meta.items() if key != "root"}
    paths = decode_strings(
        expect_array(arrays, "path_offsets", "<i8", (n + 1,)),
        expect_array(arrays, "path_bytes", "|u1", (None,)),
        "paths",
    )
    names = decode_strings(
        expect_array(arrays, "class_name_offsets", "<i8", (c + 1,)),
        expect_array(arrays, "class_name_bytes", "|u1", (None,)),
        "class names",
    )
    return JobManifest(
        root=root,
        sample_ids=sample_ids,
        labels=labels,
        folds=expect_array(arrays, "fold", "|i1", (n,)),
        sha256=expect_array(arrays, "sha256", "|u1", (n, 32)),
        paths=paths,
        class_ids=class_ids,
        class_names=names,
        meta=meta,
    )


# --- label issues -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelIssues:
    """cleanlab's verdict per sample (see the module docstring)."""

    sample_id: NDArray[np.int64]
    is_issue: NDArray[np.bool_]
    label_quality: NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.sample_id.shape[0])


def encode_label_issues(issues: LabelIssues) -> bytes:
    """The bundle of ``issues``; raises :class:`BundleError` when its arrays disagree."""
    data = encode_bundle(
        "label_issues",
        {},
        [
            ("sample_id", np.asarray(issues.sample_id, "<i8")),
            ("is_issue", np.asarray(issues.is_issue, "|u1")),
            ("label_quality", np.asarray(issues.label_quality, "<f4")),
        ],
    )
    decode_label_issues(data)
    return data


def decode_label_issues(data: bytes | bytearray | memoryview) -> LabelIssues:
    """Reads and validates a label-issues bundle; raises :class:`BundleError` with the reason."""
    bundle = decode_bundle(data, kind="label_issues")
    sample_id = expect_array(bundle.arrays, "sample_id", "<i8", (None,))
    n = int(sample_id.shape[0])
    if np.unique(sample_id).shape[0] != n:
        raise BundleError("sample_id has duplicates")
    flags = expect_array(bundle.arrays, "is_issue", "|u1", (n,))
    if n and int(flags.max()) > 1:
        raise BundleError("is_issue must be 0 or 1")
    quality = expect_array(bundle.arrays, "label_quality", "<f4", (n,))
    check_probabilities(quality, "label_quality", allow_nan=False)
    return LabelIssues(sample_id=sample_id, is_issue=flags.astype(bool), label_quality=quality)


# --- embeddings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingRows:
    """Embeddings of some images by content hash (see the module docstring)."""

    space: dict[str, Any]
    sha256: NDArray[np.uint8]
    features: NDArray[np.float16]

    def __len__(self) -> int:
        return int(self.sha256.shape[0])


def encode_embeddings(rows: EmbeddingRows) -> bytes:
    """The bundle of ``rows``; raises :class:`BundleError` when its arrays disagree."""
    data = encode_bundle(
        "embeddings",
        {"space": rows.space},
        [
            ("sha256", np.asarray(rows.sha256, "|u1")),
            ("features", np.asarray(rows.features, "<f2")),
        ],
    )
    decode_embeddings(data)
    return data


def decode_embeddings(data: bytes | bytearray | memoryview) -> EmbeddingRows:
    """Reads and validates an embeddings bundle; raises :class:`BundleError` with the reason."""
    bundle = decode_bundle(data, kind="embeddings")
    space = bundle.meta.get("space")
    if not isinstance(space, dict):
        raise BundleError("meta.space must be the embedding space")
    digests = expect_array(bundle.arrays, "sha256", "|u1", (None, 32))
    n = int(digests.shape[0])
    features = expect_array(bundle.arrays, "features", "<f2", (n, None))
    if not np.isfinite(features).all():
        raise BundleError("features has values that are not finite")
    return EmbeddingRows(space=space, sha256=digests, features=features)
