"""The wire protocol between the server and its workers: the one definition both sides import.

Imports only pydantic and numpy (no torch, no ``app``), so the server can use it without the ML
stack and the worker without the server.

**Jobs.** A job has a :class:`JobKind` and a spec (one pydantic model per kind, discriminated by
``kind``; see :data:`JobSpec`). Specs are small JSON: the sample lists they run on are
*manifests*, stored by the server as files in the :ref:`bundle format <bundle>` and named in the
spec by content hash (:class:`ManifestRef`); the worker downloads them. Model checkpoints are job
artifacts (:class:`ArtifactRef`, :class:`ModelRef`).

**Messages.** JSON bodies of the worker endpoints (:class:`LeaseRequest` → :class:`LeaseGrant`,
:class:`Heartbeat` → :class:`HeartbeatReply`, :class:`Complete`, :class:`Fail`, :class:`Release`).
Every write carries the job's *fence*: the number of the lease it holds. The server bumps the
fence on every lease and refuses (409) a write with an older one.

.. _bundle:

**Bundles** (results and manifests): little-endian numpy arrays behind a small header::

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

With ``keep_probs`` (fold, train-and-predict and predict jobs) the worker also uploads the full
probability matrix as the artifact ``probs.npy`` (float16 ``[M, C]``, rows in the order of the
artifact ``probs_sample_ids.npy``, int64 ``[M]``; columns: the classes of the result manifest),
for rules that need every class's probability (confident learning).

A ``confident_learning`` job reads those artifacts of the fold jobs (:class:`ProbsRef`), runs
cleanlab on them and uploads its verdicts as the artifact ``label_issues.thrb`` (a
:ref:`label-issues bundle <bundle>`); it reports no per-sample results.

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

import enum
import hashlib
import json
import math
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

__all__ = [
    "EMBEDDINGS_FILE",
    "FENCE_HEADER",
    "KNN_ISSUES_FILE",
    "LABEL_ISSUES_FILE",
    "MAX_RESULT_CHUNK_BYTES",
    "MODEL_FILES",
    "PROTOCOL_VERSION",
    "RESULT_CHUNK_ROWS",
    "SHA256_HEADER",
    "ArtifactRef",
    "BundleError",
    "Complete",
    "ConfidentLearningSpec",
    "DeviceKind",
    "EmbedSpec",
    "EmbeddingRequest",
    "EmbeddingRows",
    "EpochMetrics",
    "EvaluateSpec",
    "Fail",
    "Heartbeat",
    "HeartbeatReply",
    "JobKind",
    "JobManifest",
    "JobSpec",
    "KnnSpec",
    "LabelIssues",
    "LeaseGrant",
    "LeaseRequest",
    "ManifestRef",
    "ModelRef",
    "PredictSpec",
    "ProbsRef",
    "Progress",
    "Release",
    "ResultChunk",
    "ResultsStored",
    "ScoreJunkSpec",
    "TrainFinalSpec",
    "TrainFoldSpec",
    "TrainJunkSpec",
    "TrainPredictSpec",
    "decode_embeddings",
    "decode_label_issues",
    "decode_manifest",
    "decode_results",
    "device_kind",
    "encode_embeddings",
    "encode_label_issues",
    "encode_manifest",
    "encode_results",
    "parse_spec",
    "result_set",
    "spec_json",
]

PROTOCOL_VERSION = 1

#: Results are uploaded in chunks of at most this many samples.
RESULT_CHUNK_ROWS = 65_536
#: The server refuses a result chunk larger than this (64 MiB).
MAX_RESULT_CHUNK_BYTES = 64 << 20
#: Binary uploads (result chunks, artifacts) carry the fence in this header.
FENCE_HEADER = "X-Thresher-Fence"
#: Artifact uploads carry the SHA-256 of their bytes in this header; the server checks it.
SHA256_HEADER = "X-Thresher-SHA256"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# --- jobs ---------------------------------------------------------------------------------------


class JobKind(enum.StrEnum):
    """What a job does. Each kind has its own spec model and its own worker handler."""

    TRAIN_JUNK = "train_junk"  # train the binary junk classifier on human junk/normal labels
    SCORE_JUNK = "score_junk"  # p(junk) of every sample of a set, with a junk model
    TRAIN_FOLD = "train_fold"  # train on K-1 folds, predict the held-out fold (out-of-fold)
    TRAIN_PREDICT = "train_predict"  # train on one set (the kept set), predict another (pull-back)
    PREDICT = "predict"  # predict a set with an existing model
    TRAIN_FINAL = "train_final"  # the final training (balance, logit adjustment, distillation)
    EVALUATE = "evaluate"  # a model's accuracy on a labelled set
    CONFIDENT_LEARNING = "confident_learning"  # cleanlab over the fold jobs' probabilities
    EMBED = "embed"  # a pretrained backbone's features of a set, into the embedding cache
    KNN = "knn"  # kNN label agreement of a set in embedding space


class DeviceKind(enum.StrEnum):
    """Where a job may run: a worker on ``cuda:N`` leases ``cuda`` and ``any`` jobs."""

    ANY = "any"
    CPU = "cpu"
    CUDA = "cuda"


def device_kind(device: str) -> DeviceKind:
    """``"cuda:0"`` → CUDA, ``"cpu"`` → CPU."""
    name = device.split(":", 1)[0].strip().lower()
    try:
        kind = DeviceKind(name)
    except ValueError:
        raise ValueError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if kind is DeviceKind.ANY:
        raise ValueError("a worker runs on one device: cpu, cuda or cuda:N")
    return kind


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestRef(_Message):
    """A manifest stored on the server, by the SHA-256 of its bundle."""

    sha256: Annotated[str, Field(pattern=_SHA256.pattern)]
    count: Annotated[int, Field(ge=0)]
    num_classes: Annotated[int, Field(ge=0)]


class ArtifactRef(_Message):
    """One stored file of a job (e.g. ``model.safetensors``)."""

    id: int
    job_id: int
    name: str
    sha256: Annotated[str, Field(pattern=_SHA256.pattern)]
    byte_size: Annotated[int, Field(ge=0)]


class ModelRef(_Message):
    """A trained model: the checkpoint files a training job uploaded."""

    job_id: int
    files: Annotated[list[ArtifactRef], Field(min_length=1)]


#: A recipe: the name of one the worker knows, or the recipe itself (its YAML as a mapping).
Recipe = str | dict[str, Any]


class EmbeddingRequest(_Message):
    """Which embeddings: a backbone (a recipe's ``model`` section: timm name, pretrained
    weights), the input side and whether features average the image and its mirror. The worker
    resolves it to an embedding space (which also names the weights' SHA-256); the server tracks
    what is embedded by :attr:`key`."""

    model: dict[str, Any]
    image_size: Annotated[int, Field(ge=8, le=2048)]
    flip: bool = True

    @field_validator("model")
    @classmethod
    def _backbone_only(cls, model: dict[str, Any]) -> dict[str, Any]:
        """Keep what changes the features, with defaults filled, so that the server (reading a
        recipe's YAML) and the worker (a validated recipe) name the same request alike."""
        name = model.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("model needs a name")
        weights = model.get("weights_file")
        return {
            "name": name,
            "pretrained": bool(model.get("pretrained", False)),
            "weights_file": None if weights is None else str(weights),
            "kwargs": dict(model.get("kwargs") or {}),
        }

    @classmethod
    def from_recipe(cls, document: Mapping[str, Any]) -> EmbeddingRequest | None:
        """The request behind a recipe (a mapping, as its YAML) that trains a head on
        embeddings; ``None`` for a recipe that trains the whole network."""
        if not document.get("head"):
            return None
        return cls(
            model=dict(document.get("model") or {}),
            image_size=int(document.get("image_size", 0)),
            flip=bool(document.get("tta_flip", False)),
        )

    @property
    def key(self) -> str:
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:32]


class _EmbeddingsFrom(_Message):
    """``embeddings``: stored embedding artifacts (``embeddings.thrb`` of embed jobs) the worker
    may take rows from before it computes what is still missing itself."""

    embeddings: list[ArtifactRef] = Field(default_factory=list)


class _Spec(_EmbeddingsFrom):
    """``seed``: replaces the recipe's seed when given. ``embeddings``: see
    :class:`_EmbeddingsFrom` (used by recipes and models on embeddings)."""

    seed: int | None = None


class ProbsRef(_Message):
    """The full probabilities a job uploaded with ``keep_probs``: ``probs.npy`` (float16
    ``[M, C]``) and its row order ``probs_sample_ids.npy`` (int64 ``[M]``)."""

    job_id: int
    probs: ArtifactRef
    sample_ids: ArtifactRef


class TrainJunkSpec(_Spec):
    """Train the junk classifier; ``train`` has the classes ``normal`` and ``junk``. With
    ``predict``, also score that set (results: ``junk_score``). Artifacts: the model."""

    kind: Literal[JobKind.TRAIN_JUNK] = JobKind.TRAIN_JUNK
    recipe: Recipe
    train: ManifestRef
    predict: ManifestRef | None = None


class ScoreJunkSpec(_Spec):
    """Score every sample of ``predict`` with a junk model. Results: ``junk_score``."""

    kind: Literal[JobKind.SCORE_JUNK] = JobKind.SCORE_JUNK
    model: ModelRef
    predict: ManifestRef


class TrainFoldSpec(_Spec):
    """Train on the samples of ``train`` whose fold is not ``fold`` and predict those whose fold
    is. Results: top-k and ``label_prob`` of the held-out samples. Artifacts: the fold model."""

    kind: Literal[JobKind.TRAIN_FOLD] = JobKind.TRAIN_FOLD
    recipe: Recipe
    train: ManifestRef
    fold: Annotated[int, Field(ge=0, le=127)]
    top_k: Annotated[int, Field(ge=1, le=100)] = 5
    keep_probs: bool = False


class TrainPredictSpec(_Spec):
    """Train on ``train`` (e.g. the kept set), predict ``predict`` (e.g. the rejected set).
    Results: top-k and ``label_prob`` of ``predict``. Artifacts: the model."""

    kind: Literal[JobKind.TRAIN_PREDICT] = JobKind.TRAIN_PREDICT
    recipe: Recipe
    train: ManifestRef
    predict: ManifestRef
    top_k: Annotated[int, Field(ge=1, le=100)] = 5
    keep_probs: bool = False


class PredictSpec(_Spec):
    """Predict ``predict`` with an existing model. Results: top-k and ``label_prob``."""

    kind: Literal[JobKind.PREDICT] = JobKind.PREDICT
    model: ModelRef
    predict: ManifestRef
    top_k: Annotated[int, Field(ge=1, le=100)] = 5
    keep_probs: bool = False


class TrainFinalSpec(_Spec):
    """The final training on ``train``; evaluated on ``eval`` when given; distilled from
    ``teachers`` (an ensemble when several) when the recipe asks for it. Artifacts: the model;
    summary: the evaluation metrics and how many samples each source contributed.

    Samples of ``train`` without a label (-1) are the rejected ones: they contribute only as
    ``rejects`` says, through the out-of-fold probabilities ``probs`` of the fold jobs (columns:
    the classes ``probs_class_ids``), never through a given label: ``soft`` trains on those
    probabilities at loss weight ``reject_weight`` (heads on embeddings), ``relabel`` takes the
    top class where its probability reaches ``relabel_threshold``, ``drop`` ignores them."""

    kind: Literal[JobKind.TRAIN_FINAL] = JobKind.TRAIN_FINAL
    recipe: Recipe
    train: ManifestRef
    eval: ManifestRef | None = None
    teachers: list[ModelRef] = Field(default_factory=list)
    rejects: Literal["drop", "soft", "relabel"] = "drop"
    reject_weight: Annotated[float, Field(gt=0.0, le=10.0)] = 0.5
    relabel_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.9
    probs: list[ProbsRef] = Field(default_factory=list)
    probs_class_ids: list[int] = Field(default_factory=list)


class EvaluateSpec(_Spec):
    """Evaluate ``model`` on ``eval``: top-1/top-5, balanced and per-class accuracy, and
    many/medium/few-shot accuracy by the class counts of ``train`` when given. Results: the
    predictions on ``eval``; summary: the metrics."""

    kind: Literal[JobKind.EVALUATE] = JobKind.EVALUATE
    model: ModelRef
    eval: ManifestRef
    train: ManifestRef | None = None
    top_k: Annotated[int, Field(ge=1, le=100)] = 5


class ConfidentLearningSpec(_Spec):
    """Confident learning (cleanlab's ``find_label_issues`` with ``filter_by``) on out-of-fold
    probabilities: the ``probs`` of the fold jobs of ``train`` together cover its samples, and
    their columns are ``train``'s classes. Artifact: ``label_issues.thrb``; no results."""

    kind: Literal[JobKind.CONFIDENT_LEARNING] = JobKind.CONFIDENT_LEARNING
    train: ManifestRef
    probs: Annotated[list[ProbsRef], Field(min_length=1)]
    filter_by: Literal[
        "prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given"
    ] = "prune_by_noise_rate"


class EmbedSpec(_Spec):
    """Embed every image of ``samples`` (one shard of a dataset) into the worker's embedding
    cache; rows already there are not computed again. Artifact: ``embeddings.thrb`` (an
    :ref:`embeddings bundle <bundle>` of the shard's rows); summary: ``computed``, ``reused``,
    ``images_per_second``."""

    kind: Literal[JobKind.EMBED] = JobKind.EMBED
    embedding: EmbeddingRequest
    samples: ManifestRef


class KnnSpec(_Spec):
    """kNN label agreement of the labelled samples of ``train`` in the embedding space of
    ``embedding``: each sample's ``k`` nearest neighbours (cosine) vote, and the sample is
    flagged when its label is not among the ``top_k`` most voted classes. Artifact:
    ``knn_issues.thrb`` (a label-issues bundle whose ``label_quality`` is the share of
    neighbours carrying the sample's label: lower = more likely mislabeled)."""

    kind: Literal[JobKind.KNN] = JobKind.KNN
    train: ManifestRef
    embedding: EmbeddingRequest
    k: Annotated[int, Field(ge=1, le=1000)] = 10
    top_k: Annotated[int, Field(ge=1, le=100)] = 1


JobSpec = Annotated[
    TrainJunkSpec
    | ScoreJunkSpec
    | TrainFoldSpec
    | TrainPredictSpec
    | PredictSpec
    | TrainFinalSpec
    | EvaluateSpec
    | ConfidentLearningSpec
    | EmbedSpec
    | KnnSpec,
    Field(discriminator="kind"),
]
_SPEC_ADAPTER: TypeAdapter[JobSpec] = TypeAdapter(JobSpec)


#: The files of a trained model (as :mod:`ml.checkpoint` writes them): a training job uploads
#: them as artifacts under these names, and later jobs receive them as a :class:`ModelRef`.
MODEL_FILES = ("model.safetensors", "model_config.json")
#: The artifact a confident_learning job uploads (a label-issues bundle).
LABEL_ISSUES_FILE = "label_issues.thrb"
#: The artifact a knn job uploads (a label-issues bundle of kNN agreement).
KNN_ISSUES_FILE = "knn_issues.thrb"
#: The artifact an embed job uploads (an embeddings bundle).
EMBEDDINGS_FILE = "embeddings.thrb"


def result_set(spec: JobSpec) -> tuple[ManifestRef, int | None] | None:
    """The samples a job reports per-sample results for: a manifest and, for a fold job, the
    fold (only that fold's samples); ``None`` for a kind without results."""
    if isinstance(spec, TrainFoldSpec):
        return spec.train, spec.fold
    if isinstance(spec, TrainJunkSpec):
        return (spec.predict, None) if spec.predict is not None else None
    if isinstance(spec, ScoreJunkSpec | TrainPredictSpec | PredictSpec):
        return spec.predict, None
    if isinstance(spec, EvaluateSpec):
        return spec.eval, None
    return None


def parse_spec(data: Mapping[str, Any]) -> JobSpec:
    """The spec of a job from its JSON; raises pydantic's ValidationError when it is invalid."""
    return _SPEC_ADAPTER.validate_python(data)


def spec_json(spec: JobSpec) -> dict[str, Any]:
    """A spec as the JSON stored in the job row."""
    data: dict[str, Any] = spec.model_dump(mode="json")
    return data


# --- messages -----------------------------------------------------------------------------------


class LeaseRequest(_Message):
    worker: Annotated[str, Field(min_length=1, max_length=200)]
    kinds: Annotated[list[JobKind], Field(min_length=1)]
    device: Annotated[str, Field(min_length=1, max_length=32)]
    gpus: Annotated[int, Field(ge=0)] = 0
    protocol: int = PROTOCOL_VERSION


class LeaseGrant(_Message):
    """A job for the worker. ``spec`` is validated by the worker (:func:`parse_spec`), so a spec
    it cannot read becomes a failed job rather than a failed lease."""

    job_id: int
    kind: JobKind
    fence: int
    attempt: int
    max_attempts: int
    spec: dict[str, Any]
    lease_seconds: float
    heartbeat_seconds: float
    lease_expires_at: datetime


class Progress(_Message):
    """Where a job is. ``step``/``steps`` count optimizer steps (or batches, when predicting)
    within the current epoch; ``images_per_second`` is the recent throughput."""

    phase: Annotated[str, Field(max_length=32)] = ""
    epoch: Annotated[int, Field(ge=0)] = 0
    epochs: Annotated[int, Field(ge=0)] = 0
    step: Annotated[int, Field(ge=0)] = 0
    steps: Annotated[int, Field(ge=0)] = 0
    images_per_second: Annotated[float, Field(ge=0)] = 0.0


#: What one heartbeat may carry (the server stores it under the job's row lock): epochs of
#: metrics, metric names per epoch, log lines and characters per line. A worker with more
#: pending sends the rest in its next heartbeats.
MAX_HEARTBEAT_EPOCHS = 100
MAX_METRIC_NAMES = 64
MAX_HEARTBEAT_LOG_LINES = 500
MAX_LOG_LINE_CHARS = 2_000
#: Largest JSON of a completed job's summary.
MAX_SUMMARY_BYTES = 256 << 10


class EpochMetrics(_Message):
    """Metrics of one epoch, e.g. ``{"train_loss": 1.2, "val_accuracy": 0.61}``; finite values
    only (a worker leaves out a NaN or infinite value)."""

    epoch: Annotated[int, Field(ge=0, le=2**31 - 1)]
    values: Annotated[
        dict[Annotated[str, Field(max_length=100)], Annotated[float, Field(allow_inf_nan=False)]],
        Field(max_length=MAX_METRIC_NAMES),
    ]


class Heartbeat(_Message):
    """Renews the lease. ``log`` holds console lines numbered from ``log_from`` (0-based over
    the job's attempt), so a retried heartbeat does not repeat lines."""

    fence: int
    progress: Progress | None = None
    metrics: Annotated[list[EpochMetrics], Field(max_length=MAX_HEARTBEAT_EPOCHS)] = Field(
        default_factory=list
    )
    log_from: Annotated[int, Field(ge=0, le=2**62)] = 0
    log: Annotated[
        list[Annotated[str, Field(max_length=MAX_LOG_LINE_CHARS)]],
        Field(max_length=MAX_HEARTBEAT_LOG_LINES),
    ] = Field(default_factory=list)


class HeartbeatReply(_Message):
    cancel: bool
    lease_expires_at: datetime


class ResultsStored(_Message):
    chunk: int
    rows: int
    duplicate: bool


class Complete(_Message):
    """Finishes a job. ``chunks`` and ``rows``: the result chunks uploaded (numbered 0..n-1) and
    the distinct samples in them; the server checks both before the job succeeds."""

    fence: int
    chunks: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    rows: Annotated[int, Field(ge=0, le=2**62)] = 0
    summary: dict[str, Any] = Field(default_factory=dict)

    @field_validator("summary")
    @classmethod
    def _bounded_summary(cls, summary: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(summary, default=str))
        if size > MAX_SUMMARY_BYTES:
            raise ValueError(f"summary of {size} bytes is over {MAX_SUMMARY_BYTES}")
        return summary


class Fail(_Message):
    """The job failed. ``retriable``: worth another attempt (a crash, out of memory) rather than
    a spec or data problem that would fail again."""

    fence: int
    error: Annotated[str, Field(max_length=20_000)]
    retriable: bool = True


class Release(_Message):
    """Hands the job back unfinished (the worker is stopping); it does not use up an attempt."""

    fence: int
    reason: Annotated[str, Field(max_length=2_000)] = ""


# --- bundles ------------------------------------------------------------------------------------

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


def _encode_bundle(
    kind: str, meta: Mapping[str, Any], arrays: Sequence[tuple[str, NDArray[Any]]]
) -> bytes:
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
class _Bundle:
    kind: str
    meta: dict[str, Any]
    arrays: dict[str, NDArray[Any]]


def _decode_bundle(data: bytes | bytearray | memoryview) -> _Bundle:
    view = memoryview(data).cast("B")
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
    try:
        header = json.loads(bytes(view[_PREFIX.size : _PREFIX.size + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"header is not JSON: {error}") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise BundleError("header must be an object with an 'arrays' list")
    kind, meta = header.get("type"), header.get("meta", {})
    if not isinstance(kind, str) or not isinstance(meta, dict):
        raise BundleError("header needs a 'type' string and a 'meta' object")
    offset = _PREFIX.size + header_len
    layout = []
    for index, item in enumerate(header["arrays"]):
        name, dtype, shape = _array_description(index, item)
        offset = _align(offset)
        # Python integers: a declared shape like [2**61, 8] must not wrap around in int64.
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        layout.append((name, dtype, shape, offset))
        offset += nbytes
    if offset > len(view):
        raise BundleError(f"truncated: the arrays need {offset} bytes, got {len(view)}")
    if offset < len(view):
        raise BundleError(f"{len(view) - offset} unexpected bytes after the last array")
    if zlib.crc32(view[_PREFIX.size :]) != crc:
        raise BundleError("checksum mismatch: the bundle is corrupt")
    arrays: dict[str, NDArray[Any]] = {}
    for name, dtype, shape, start in layout:
        if name in arrays:
            raise BundleError(f"array {name!r} appears twice")
        count = math.prod(shape)
        arrays[name] = np.frombuffer(view, dtype=dtype, count=count, offset=start).reshape(shape)
    return _Bundle(kind=kind, meta=meta, arrays=arrays)


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


def _expect(
    arrays: Mapping[str, NDArray[Any]], name: str, dtype: str, shape: tuple[int | None, ...]
) -> NDArray[Any]:
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


def _encode_strings(values: Sequence[str]) -> tuple[NDArray[np.int64], NDArray[np.uint8]]:
    encoded = [value.encode() for value in values]
    offsets = np.zeros(len(encoded) + 1, dtype="<i8")
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return offsets, np.frombuffer(b"".join(encoded), dtype=np.uint8)


def _decode_strings(offsets: NDArray[np.int64], blob: NDArray[np.uint8], name: str) -> list[str]:
    if offsets[0] != 0 or offsets[-1] != blob.shape[0] or np.any(np.diff(offsets) < 0):
        raise BundleError(f"{name}: offsets do not partition the bytes")
    raw = blob.tobytes()
    bounds = offsets.tolist()
    try:
        return [raw[bounds[i] : bounds[i + 1]].decode() for i in range(len(bounds) - 1)]
    except UnicodeDecodeError:
        raise BundleError(f"{name}: not UTF-8") from None


# --- results ------------------------------------------------------------------------------------


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
    data = _encode_bundle("results", {"k": chunk.k}, arrays)
    decode_results(data)
    return data


def decode_results(data: bytes | bytearray | memoryview) -> ResultChunk:
    """Reads and validates a results bundle; raises :class:`BundleError` with the reason."""
    bundle = _decode_bundle(data)
    if bundle.kind != "results":
        raise BundleError(f"expected a results bundle, got {bundle.kind!r}")
    arrays = bundle.arrays
    known = {"sample_id", "topk_class_id", "topk_prob", "label_prob", "junk_score"}
    if unknown := sorted(set(arrays) - known):
        raise BundleError(f"unknown arrays {unknown}; a results bundle holds {sorted(known)}")
    sample_id = _expect(arrays, "sample_id", "<i8", (None,))
    n = int(sample_id.shape[0])
    if np.unique(sample_id).shape[0] != n:
        raise BundleError("sample_id has duplicates")
    topk_ids = topk_prob = None
    if ("topk_class_id" in arrays) != ("topk_prob" in arrays):
        raise BundleError("topk_class_id and topk_prob come together")
    if "topk_class_id" in arrays:
        topk_ids = _expect(arrays, "topk_class_id", "<i4", (n, None))
        k = int(topk_ids.shape[1])
        if not 1 <= k <= 100:
            raise BundleError(f"top-k needs 1 <= k <= 100, got {k}")
        topk_prob = _expect(arrays, "topk_prob", "<f4", (n, k))
        _check_probabilities(topk_prob, "topk_prob", allow_nan=False)
    label_prob = junk = None
    if "label_prob" in arrays:
        label_prob = _expect(arrays, "label_prob", "<f4", (n,))
        _check_probabilities(label_prob, "label_prob", allow_nan=True)
    if "junk_score" in arrays:
        junk = _expect(arrays, "junk_score", "<f4", (n,))
        _check_probabilities(junk, "junk_score", allow_nan=False)
    if topk_ids is None and junk is None:
        raise BundleError("a results bundle needs topk_class_id/topk_prob or junk_score")
    return ResultChunk(sample_id, topk_ids, topk_prob, label_prob, junk)


def _check_probabilities(values: NDArray[np.float32], name: str, *, allow_nan: bool) -> None:
    finite = values[~np.isnan(values)] if allow_nan else values
    if not allow_nan and not np.all(np.isfinite(values)):
        raise BundleError(f"{name} has values that are not finite")
    if finite.size and (float(finite.min()) < -1e-4 or float(finite.max()) > 1 + 1e-4):
        raise BundleError(f"{name} has values outside 0..1")


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
    path_offsets, path_bytes = _encode_strings(manifest.paths)
    name_offsets, name_bytes = _encode_strings(manifest.class_names)
    data = _encode_bundle(
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
    bundle = _decode_bundle(data)
    if bundle.kind != "manifest":
        raise BundleError(f"expected a manifest bundle, got {bundle.kind!r}")
    arrays = bundle.arrays
    sample_ids = _expect(arrays, "sample_id", "<i8", (None,))
    n = int(sample_ids.shape[0])
    class_ids = _expect(arrays, "class_id", "<i8", (None,))
    c = int(class_ids.shape[0])
    labels = _expect(arrays, "label", "<i4", (n,))
    if n and (int(labels.min()) < -1 or int(labels.max()) >= c):
        raise BundleError(f"labels must be -1 or a class index below {c}")
    root = bundle.meta.get("root")
    if not isinstance(root, str):
        raise BundleError("meta.root must be a string")
    meta = {key: value for key, value in bundle.meta.items() if key != "root"}
    paths = _decode_strings(
        _expect(arrays, "path_offsets", "<i8", (n + 1,)),
        _expect(arrays, "path_bytes", "|u1", (None,)),
        "paths",
    )
    names = _decode_strings(
        _expect(arrays, "class_name_offsets", "<i8", (c + 1,)),
        _expect(arrays, "class_name_bytes", "|u1", (None,)),
        "class names",
    )
    return JobManifest(
        root=root,
        sample_ids=sample_ids,
        labels=labels,
        folds=_expect(arrays, "fold", "|i1", (n,)),
        sha256=_expect(arrays, "sha256", "|u1", (n, 32)),
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
    data = _encode_bundle(
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
    bundle = _decode_bundle(data)
    if bundle.kind != "label_issues":
        raise BundleError(f"expected a label_issues bundle, got {bundle.kind!r}")
    sample_id = _expect(bundle.arrays, "sample_id", "<i8", (None,))
    n = int(sample_id.shape[0])
    if np.unique(sample_id).shape[0] != n:
        raise BundleError("sample_id has duplicates")
    flags = _expect(bundle.arrays, "is_issue", "|u1", (n,))
    if n and int(flags.max()) > 1:
        raise BundleError("is_issue must be 0 or 1")
    quality = _expect(bundle.arrays, "label_quality", "<f4", (n,))
    _check_probabilities(quality, "label_quality", allow_nan=False)
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
    data = _encode_bundle(
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
    bundle = _decode_bundle(data)
    if bundle.kind != "embeddings":
        raise BundleError(f"expected an embeddings bundle, got {bundle.kind!r}")
    space = bundle.meta.get("space")
    if not isinstance(space, dict):
        raise BundleError("meta.space must be the embedding space")
    digests = _expect(bundle.arrays, "sha256", "|u1", (None, 32))
    n = int(digests.shape[0])
    features = _expect(bundle.arrays, "features", "<f2", (n, None))
    if not np.isfinite(features).all():
        raise BundleError("features has values that are not finite")
    return EmbeddingRows(space=space, sha256=digests, features=features)
