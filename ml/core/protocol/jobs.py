"""Jobs: what a job does (:class:`JobKind`), where it may run (:class:`DeviceKind`) and its spec.

A job's spec is one pydantic model per kind, discriminated by ``kind`` (see :data:`JobSpec`).
Specs are small JSON: the sample lists they run on are *manifests*, stored by the server as
bundles (:mod:`ml.core.protocol.bundles`) and named in the spec by content hash
(:class:`ManifestRef`); the worker downloads them. Model checkpoints are job artifacts
(:class:`ArtifactRef`, :class:`ModelRef`).

With ``keep_probs`` (fold, train-and-predict and predict jobs) the worker also uploads the full
probability matrix as the artifact ``probs.npy`` (float16 ``[M, C]``, rows in the order of the
artifact ``probs_sample_ids.npy``, int64 ``[M]``; columns: the classes of the result manifest),
for rules that need every class's probability (confident learning).

A ``confident_learning`` job reads those artifacts of the fold jobs (:class:`ProbsRef`), runs
cleanlab on them and uploads its verdicts as the artifact ``label_issues.thrb`` (a label-issues
bundle); it reports no per-sample results.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

__all__ = [
    "EMBEDDINGS_FILE",
    "KNN_ISSUES_FILE",
    "LABEL_ISSUES_FILE",
    "MODEL_FILES",
    "ArtifactRef",
    "ConfidentLearningSpec",
    "DeviceKind",
    "EmbedSpec",
    "EmbeddingRequest",
    "EvaluateSpec",
    "JobKind",
    "JobSpec",
    "KnnSpec",
    "ManifestRef",
    "ModelRef",
    "PredictSpec",
    "ProbsRef",
    "Recipe",
    "ScoreJunkSpec",
    "TrainFinalSpec",
    "TrainFoldSpec",
    "TrainJunkSpec",
    "TrainPredictSpec",
    "WireModel",
    "device_kind",
    "parse_spec",
    "result_set",
    "spec_inputs",
    "spec_json",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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


class WireModel(BaseModel):
    """Every JSON body of the protocol: unknown fields are refused, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestRef(WireModel):
    """A manifest stored on the server, by the SHA-256 of its bundle."""

    sha256: Annotated[str, Field(pattern=_SHA256.pattern)]
    count: Annotated[int, Field(ge=0)]
    num_classes: Annotated[int, Field(ge=0)]


class ArtifactRef(WireModel):
    """One stored file of a job (e.g. ``model.safetensors``)."""

    id: int
    job_id: int
    name: str
    sha256: Annotated[str, Field(pattern=_SHA256.pattern)]
    byte_size: Annotated[int, Field(ge=0)]


class ModelRef(WireModel):
    """A trained model: the checkpoint files a training job uploaded."""

    job_id: int
    files: Annotated[list[ArtifactRef], Field(min_length=1)]


#: A recipe: the name of one the worker knows, or the recipe itself (its YAML as a mapping).
Recipe = str | dict[str, Any]


class EmbeddingRequest(WireModel):
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


class _EmbeddingsFrom(WireModel):
    """``embeddings``: stored embedding artifacts (``embeddings.thrb`` of embed jobs) the worker
    may take rows from before it computes what is still missing itself."""

    embeddings: list[ArtifactRef] = Field(default_factory=list)


class _Spec(_EmbeddingsFrom):
    """``seed``: replaces the recipe's seed when given. ``embeddings``: see
    :class:`_EmbeddingsFrom` (used by recipes and models on embeddings)."""

    seed: int | None = None


class ProbsRef(WireModel):
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


def spec_inputs(spec: JobSpec) -> tuple[frozenset[str], frozenset[int]]:
    """What a job reads from the server: its manifests (by SHA-256) and artifacts (by id),
    wherever the spec names them; what the job's worker may download."""
    manifests: set[str] = set()
    artifacts: set[int] = set()

    def visit(value: object) -> None:
        if isinstance(value, ManifestRef):
            manifests.add(value.sha256)
        elif isinstance(value, ArtifactRef):
            artifacts.add(value.id)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                visit(getattr(value, name))
        elif isinstance(value, list | tuple):
            for item in value:
                visit(item)
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)

    visit(spec)
    return frozenset(manifests), frozenset(artifacts)
