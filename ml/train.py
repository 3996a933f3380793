"""The one training loop, used by every job kind (fold models, pull-back rounds, the junk
classifier, final training).

What a recipe (:class:`ml.recipes.Recipe`) switches on, and where it happens:

* data: rows of a uint8 array ``[N, H, W, 3]`` (the decoded cache), per-sample augmentation
  (:func:`ml.augment.build_sample_transform`) in DataLoader workers, class-balanced sampling
  (:class:`ml.sampler.ClassBalancedSampler`) or a seeded shuffle, CutMix/mixup on the device
  (:class:`ml.augment.BatchMixer`);
* loss: soft cross-entropy with label smoothing, or the logit-adjusted loss; Flooding;
  distillation from teacher checkpoints (:mod:`ml.losses`);
* optimisation: SGD or AdamW (no weight decay on biases and norms), linear warmup then cosine,
  gradient clipping, EMA of the weights;
* device: bfloat16 autocast on CUDA, float32 on CPU; channels-last.

**Determinism.** Every random choice derives from the recipe's seed: initial weights from
``torch.manual_seed(seed)``, the epoch's order from ``(seed, epoch)``, a sample's augmentation from
``(seed, epoch, row)``, batch mixing from ``(seed, epoch, step)``, dropout from the global RNG
re-seeded at each epoch. On the CPU two runs give identical weights; on CUDA, up to the
non-determinism of cuDNN kernels.

**Resume.** With ``checkpoint_dir`` a checkpoint is saved after every epoch (and when stopped);
a later call with the same arguments continues from the newest one, mid-epoch included, and ends
with the same weights as an uninterrupted run (on the CPU). Resuming with another recipe or
another training set is refused.

**Progress and cancellation.** ``callback`` receives a :class:`Progress` after every step (and
with the epoch's metrics at its end); returning :attr:`Control.STOP` stops the run at that step
boundary, saving a checkpoint first.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from ml.augment import BatchMixer, build_sample_transform, sample_generator
from ml.checkpoint import (
    CheckpointError,
    InferenceAdjustment,
    TrainedModel,
    TrainState,
    latest_checkpoint,
    load_train_state,
    load_trained_model,
    save_checkpoint,
)
from ml.data import ArrayDataset
from ml.ema import ModelEma
from ml.embeddings import EmbeddingArray
from ml.heads import HeadTargets, TrainedHead
from ml.losses import (
    distillation_loss,
    ensemble_teacher_logits,
    flooding,
    init_frozen_log_prior_bias,
    log_prior,
    logit_adjusted_cross_entropy,
    soft_cross_entropy,
    with_distillation,
)
from ml.metrics import EvalReport, evaluate
from ml.models import classifier_of, create_model, data_config
from ml.predict import Normaliser, predict_logits, resolve_device
from ml.recipes import Recipe, dump_recipe
from ml.sampler import ClassBalancedSampler

__all__ = [
    "Control",
    "EpochMetrics",
    "EpochOrder",
    "EvalSet",
    "Progress",
    "ProgressCallback",
    "TrainResult",
    "TrainingError",
    "build_optimizer",
    "lr_factor",
    "set_scheduled_lr",
    "setup_logit_adjustment",
    "train_model",
    "training_fingerprint",
]

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """The data or the checkpoint does not allow training as asked."""


class Control(enum.Enum):
    """What a progress callback asks the loop to do next."""

    CONTINUE = "continue"
    STOP = "stop"


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch's summary.

    Attributes:
        epoch: 0-based.
        train_loss: mean training loss over the epoch's steps (as optimised: smoothing,
            adjustment, flooding and distillation included).
        train_accuracy: fraction of training images whose top prediction is their label
            (before mixing), on the augmented images.
        learning_rate: at the epoch's last step.
        images_per_second: training throughput, data loading included.
        seconds: wall time of the epoch (validation excluded).
        steps: optimizer steps in the epoch.
        val: the validation report, when a validation set is given.
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    learning_rate: float
    images_per_second: float
    seconds: float
    steps: int
    val: EvalReport | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochMetrics:
        values = dict(data)
        if values.get("val") is not None:
            values["val"] = EvalReport(**values["val"])
        return cls(**values)


@dataclass(frozen=True)
class Progress:
    """Reported to the callback after every optimizer step.

    Attributes:
        epoch: 0-based epoch; ``step``: steps done in this epoch (1-based count).
        global_step, total_steps: steps done in the run / planned.
        images_per_second: throughput since the epoch (or the resumed part of it) began.
        loss: this step's loss; ``learning_rate``: this step's learning rate.
        epoch_end: the epoch's metrics, set only on the report after its last step.
    """

    epoch: int
    step: int
    steps_per_epoch: int
    global_step: int
    total_steps: int
    images_per_second: float
    loss: float
    learning_rate: float
    epoch_end: EpochMetrics | None = None


ProgressCallback = Callable[[Progress], "Control | None"]


@dataclass(frozen=True)
class EvalSet:
    """Validation data: rows ``indices`` (default all) of ``images`` with labels ``[N]``."""

    images: NDArray[np.uint8]
    labels: NDArray[np.integer]
    indices: NDArray[np.integer] | None = None


@dataclass
class TrainResult:
    """What :func:`train_model` returns.

    Attributes:
        trained: the model for inference (EMA weights when EMA is on), on the training device;
            a :class:`~ml.heads.TrainedHead` for a recipe with a head.
        history: metrics of every completed epoch, resumed ones included.
        stopped: the callback stopped the run before its last epoch.
        checkpoint: the last checkpoint written, if any.
        class_counts: training samples per class ``[C]`` (before any resampling).
    """

    trained: TrainedModel | TrainedHead
    history: list[EpochMetrics]
    stopped: bool
    checkpoint: Path | None
    class_counts: NDArray[np.int64]


def lr_factor(
    step: int, *, total_steps: int, warmup_steps: int, warmup_start: float, floor: float
) -> float:
    """Learning-rate multiplier for optimizer step ``step`` (0-based): linear from
    ``warmup_start`` to 1 over ``warmup_steps``, then cosine from 1 to ``floor`` at the end."""
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_start + (1.0 - warmup_start) * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_scheduled_lr(
    optimizer: torch.optim.Optimizer,
    recipe: Recipe,
    step: int,
    *,
    total_steps: int,
    warmup_steps: int,
) -> float:
    """Set every parameter group's learning rate for optimizer step ``step`` from the recipe's
    schedule (:func:`lr_factor`); returns it."""
    lr = recipe.optimizer.lr * lr_factor(
        step,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        warmup_start=recipe.schedule.warmup_start,
        floor=recipe.schedule.min_lr_ratio,
    )
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


class _EpochBatches(Sampler[list[tuple[int, int]]]):
    """The batches of one epoch as lists of ``(epoch, position)``; the epoch travels with every
    index so that persistent workers pick the right augmentation stream."""

    def __init__(
        self, order: Callable[[int], NDArray[np.int64]], batch_size: int, steps: int
    ) -> None:
        self.order = order
        self.batch_size = batch_size
        self.steps = steps
        self.epoch = 0
        self.start_step = 0

    def set_position(self, epoch: int, start_step: int) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return self.steps - self.start_step

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        positions = self.order(self.epoch)
        for step in range(self.start_step, self.steps):
            chunk = positions[step * self.batch_size : (step + 1) * self.batch_size]
            yield [(self.epoch, int(p)) for p in chunk]


class _TrainSet(ArrayDataset):
    """:class:`ArrayDataset` addressed by ``(epoch, position)``."""

    def __getitem__(self, item: Any) -> tuple[Tensor, int]:
        epoch, position = item
        row = int(self.indices[position])
        image = torch.from_numpy(np.array(self.images[row])).permute(2, 0, 1)
        image = image.contiguous()
        if self.transform is not None:
            image = self.transform(image, sample_generator(self.seed, 0, epoch, row))
        return image, int(self.labels[row])


def training_fingerprint(
    labels: NDArray[np.int64], rows: NDArray[np.int64], num_classes: int
) -> str:
    digest = hashlib.sha256(f"{num_classes}:".encode())
    digest.update(np.ascontiguousarray(rows).tobytes())
    digest.update(np.ascontiguousarray(labels[rows]).tobytes())
    return digest.hexdigest()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        (decay if parameter.ndim > 1 else no_decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``model``'s trainable parameters (no weight decay on biases
    and normalisation parameters)."""
    config = recipe.optimizer
    groups = _param_groups(model, config.weight_decay)
    # The multi-tensor implementations: far fewer kernel launches per step, on any device.
    if config.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0,
            foreach=True,
        )
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, foreach=True)


def _autocast(device: torch.device) -> torch.autocast | nullcontext[None]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _loader_workers(recipe: Recipe, device: torch.device) -> int:
    if recipe.loader_workers is not None:
        return recipe.loader_workers
    if device.type != "cuda":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def _seed_from(*keys: int) -> int:
    return int(sample_generator(*keys).initial_seed())


class _Teachers:
    """Distillation teachers: one model or the ensemble of several, inputs normalised each with
    its own statistics."""

    def __init__(self, paths: Sequence[Path], device: torch.device, num_classes: int) -> None:
        self.models = [load_trained_model(p, device=device) for p in paths]
        self.normalisers = [Normaliser(t.mean, t.std, device) for t in self.models]
        for path, teacher in zip(paths, self.models, strict=True):
            if teacher.num_classes != num_classes:
                raise TrainingError(
                    f"teacher {path} predicts {teacher.num_classes} classes, not {num_classes}"
                )

    @torch.no_grad()
    def logits(self, raw: Tensor, device: torch.device) -> Tensor:
        outputs = []
        for teacher, normaliser in zip(self.models, self.normalisers, strict=True):
            x = normaliser(raw)
            with _autocast(device):
                outputs.append(teacher.model(x).float())
        return outputs[0] if len(outputs) == 1 else ensemble_teacher_logits(outputs)


class _Objective:
    """The recipe's training loss on one batch: (smoothed) soft-target cross-entropy or the
    logit-adjusted loss, then Flooding, then distillation."""

    def __init__(
        self,
        recipe: Recipe,
        num_classes: int,
        prior: Tensor | None,
        teachers: _Teachers | None,
        device: torch.device,
    ) -> None:
        self.recipe = recipe
        self.num_classes = num_classes
        adjusted = recipe.logit_adjustment is not None and recipe.logit_adjustment.mode == "loss"
        self.prior = prior.to(device) if prior is not None and adjusted else None
        self.tau = recipe.logit_adjustment.tau if recipe.logit_adjustment is not None else 1.0
        self.teachers = teachers
        self.device = device

    def __call__(self, logits: Tensor, soft: Tensor, raw: Tensor) -> Tensor:
        """``logits`` ``[B, C]``, soft targets ``[B, C]``, the (mixed) raw pixels
        ``[B, 3, H, W]`` the teachers see; returns the scalar loss."""
        smoothing = self.recipe.label_smoothing
        if smoothing > 0:
            soft = soft * (1.0 - smoothing) + smoothing / self.num_classes
        if self.prior is not None:
            loss = logit_adjusted_cross_entropy(logits, soft, self.prior, self.tau)
        else:
            loss = soft_cross_entropy(logits, soft)
        if self.recipe.flooding is not None:
            loss = flooding(loss, self.recipe.flooding)
        distillation = self.recipe.distillation
        if self.teachers is not None and distillation is not None:
            teacher_logits = self.teachers.logits(raw, self.device)
            loss = with_distillation(
                loss,
                distillation_loss(logits, teacher_logits, distillation.temperature),
                distillation.weight,
            )
        return loss


def _check_inputs(
    images: NDArray[np.uint8], labels: NDArray[np.int64], rows: NDArray[np.int64], num_classes: int
) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise TrainingError(
            f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}"
        )
    if labels.shape != (images.shape[0],):
        raise TrainingError(f"labels {labels.shape} do not match {images.shape[0]} images")
    if rows.ndim != 1 or rows.shape[0] < 2:
        raise TrainingError(f"need at least 2 training samples, got {rows.shape[0]}")
    if rows.min() < 0 or rows.max() >= images.shape[0]:
        raise TrainingError(f"training indices must lie in [0, {images.shape[0]})")
    used = labels[rows]
    if used.min() < 0 or used.max() >= num_classes:
        raise TrainingError(f"training labels must lie in [0, {num_classes})")


class EpochOrder:
    """The order of an epoch: a seeded shuffle of the training rows, or class-balanced draws.

    ``order(epoch)`` gives positions into the training rows; ``prior_counts`` ``[C]`` is the
    class distribution the model sees (the sampler's expected draws when balancing).
    """

    def __init__(self, recipe: Recipe, labels: NDArray[np.int64], num_classes: int) -> None:
        self.seed = recipe.seed
        self.balanced: ClassBalancedSampler | None = None
        if recipe.balance is not None:
            self.balanced = ClassBalancedSampler(
                labels,
                min_fraction=recipe.balance.min_fraction,
                seed=recipe.seed,
                num_samples=recipe.balance.epoch_samples,
                num_classes=num_classes,
            )
            self.epoch_length = len(self.balanced)
            self.prior_counts: NDArray[Any] = self.balanced.expected_class_draws()
        else:
            self.epoch_length = int(labels.shape[0])
            self.prior_counts = np.bincount(labels, minlength=num_classes)

    def order(self, epoch: int) -> NDArray[np.int64]:
        if self.balanced is not None:
            self.balanced.set_epoch(epoch)
            return np.fromiter(iter(self.balanced), dtype=np.int64, count=len(self.balanced))
        rng = np.random.default_rng([self.seed & (2**63 - 1), epoch])
        return rng.permutation(self.epoch_length).astype(np.int64)


def setup_logit_adjustment(
    recipe: Recipe, prior_counts: NDArray[Any], model: nn.Module
) -> tuple[Tensor | None, InferenceAdjustment, float]:
    """The recipe's logit adjustment for a model about to train: the log prior of
    ``prior_counts`` ``[C]`` (``None`` without adjustment), what inference does with it, and
    ``tau``. The ``frozen_bias`` form sets and freezes the classifier's bias here."""
    adjustment = recipe.logit_adjustment
    if adjustment is None:
        return None, "none", 1.0
    # A class with no training sample gets a tiny prior instead of -inf.
    prior = log_prior(prior_counts, pseudo_count=1e-3 if (prior_counts == 0).any() else 0.0)
    inference: InferenceAdjustment = "none"
    if adjustment.mode == "frozen_bias":
        init_frozen_log_prior_bias(classifier_of(model), adjustment.tau * prior)
        inference = "remove_prior"
    elif adjustment.mode == "posthoc":
        inference = "posthoc"
    return prior, inference, adjustment.tau


@dataclass
class _BuiltModel:
    model: nn.Module
    model_kwargs: dict[str, Any]
    prior: Tensor | None
    adjustment: InferenceAdjustment
    tau: float


def _build_model(
    recipe: Recipe, num_classes: int, prior_counts: NDArray[Any], device: torch.device
) -> _BuiltModel:
    """The recipe's network (seeded initialisation) on ``device``, with its logit adjustment:
    the log prior of ``prior_counts`` and what inference does with it."""
    torch.manual_seed(recipe.seed)
    model_kwargs: dict[str, Any] = dict(recipe.model.kwargs)
    if recipe.model.drop_rate is not None:
        model_kwargs["drop_rate"] = recipe.model.drop_rate
    model = create_model(
        recipe.model.name,
        num_classes=num_classes,
        pretrained=recipe.model.pretrained,
        weights_file=recipe.model.weights_file,
        **model_kwargs,
    )
    prior, inference, tau = setup_logit_adjustment(recipe, prior_counts, model)
    model.to(device)
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    return _BuiltModel(model, model_kwargs, prior, inference, tau)


def _restore(
    checkpoint: Path,
    recipe_yaml: str,
    fingerprint: str,
    model: nn.Module,
    ema: ModelEma | None,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> TrainState:
    """Load a checkpoint's weights and optimizer state into the run, after checking it is a
    checkpoint of the same recipe and training set."""
    state = load_train_state(checkpoint)
    if state.recipe_yaml != recipe_yaml:
        raise TrainingError(
            f"{checkpoint} was made with another recipe; use a fresh checkpoint_dir or resume=False"
        )
    if state.fingerprint != fingerprint:
        raise TrainingError(f"{checkpoint} was made on another training set or labels")
    trained = load_trained_model(checkpoint, device=device)
    if ema is not None:
        ema.module.load_state_dict(trained.model.state_dict())
        if state.raw_weights is None:
            raise CheckpointError(f"{checkpoint} lacks the raw weights of an EMA run")
        model.load_state_dict(state.raw_weights)
    else:
        model.load_state_dict(trained.model.state_dict())
    optimizer.load_state_dict(state.optimizer)
    return state


def train_model(
    recipe: Recipe,
    images: NDArray[np.uint8],
    labels: NDArray[np.integer] | Sequence[int],
    *,
    num_classes: int,
    indices: NDArray[np.integer] | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    val: EvalSet | None = None,
    device: str | torch.device | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    callback: ProgressCallback | None = None,
    targets: HeadTargets | None = None,
) -> TrainResult:
    """Train a classifier on ``images[indices]`` with ``labels`` following ``recipe``.

    A recipe with a ``head`` trains only the head, on cached embeddings: ``images`` is then an
    :class:`~ml.embeddings.EmbeddingArray` of the same rows (see :mod:`ml.head_training`).

    Args:
        recipe: the training recipe.
        images: uint8 ``[N, H, W, 3]``, usually the decoded cache's memory map; rows are fitted to
            ``recipe.image_size`` by the per-sample transform when ``H`` differs.
        labels: ``[N]`` class ids in ``[0, num_classes)`` (rows outside ``indices`` may be -1).
        num_classes: ``C``.
        indices: the training rows (default: all); a fold's or the kept set's rows.
        class_names: saved with the model.
        val: evaluated after every epoch (metrics in :attr:`EpochMetrics.val`).
        device: default CUDA when available, else CPU.
        checkpoint_dir: where to save checkpoints; enables resuming.
        resume: continue from the newest checkpoint in ``checkpoint_dir`` if there is one.
        callback: progress reports and the stop signal (see the module docstring).
        targets: soft targets for unlabelled rows and sample weights (heads only).

    Raises:
        TrainingError: bad inputs, too few samples, or a checkpoint of another run.
    """
    if recipe.head is not None:
        # ml.head_training builds on this module's pieces, so it is imported here.
        from ml.head_training import train_head

        return train_head(
            recipe,
            cast(EmbeddingArray, images),
            labels,
            num_classes=num_classes,
            indices=indices,
            class_names=class_names,
            val=val,
            device=device,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            callback=callback,
            targets=targets,
        )
    if targets is not None:
        raise TrainingError("soft targets and sample weights are for heads on embeddings only")
    label_array = np.asarray(labels, dtype=np.int64)
    rows = (
        np.arange(images.shape[0], dtype=np.int64)
        if indices is None
        else np.asarray(indices, dtype=np.int64)
    )
    _check_inputs(images, label_array, rows, num_classes)
    target = resolve_device(device)
    recipe_yaml = dump_recipe(recipe)
    fingerprint = training_fingerprint(label_array, rows, num_classes)
    class_counts = np.bincount(label_array[rows], minlength=num_classes).astype(np.int64)

    sampling = EpochOrder(recipe, label_array[rows], num_classes)
    batch_size = min(recipe.batch_size, sampling.epoch_length)
    steps_per_epoch = sampling.epoch_length // batch_size
    epochs = recipe.epochs_for(steps_per_epoch)
    total_steps = steps_per_epoch * epochs

    built = _build_model(recipe, num_classes, sampling.prior_counts, target)
    model, prior = built.model, built.prior
    ema = ModelEma(model, decay=recipe.ema.decay, warmup=recipe.ema.warmup) if recipe.ema else None
    optimizer = build_optimizer(recipe, model)
    normalisation = data_config(model)
    teachers = (
        _Teachers(recipe.distillation.teachers, target, num_classes)
        if recipe.distillation is not None
        else None
    )

    def trained_model() -> TrainedModel:
        return TrainedModel(
            model=ema.module if ema is not None else model,
            model_name=recipe.model.name,
            num_classes=num_classes,
            image_size=recipe.eval_image_size,
            mean=normalisation["mean"],
            std=normalisation["std"],
            class_names=list(class_names) if class_names is not None else None,
            log_prior=prior,
            adjustment=built.adjustment,
            tau=built.tau,
            tta_flip=recipe.tta_flip,
            model_kwargs=built.model_kwargs,
        )

    # Resume.
    epoch, start_step, global_step = 0, 0, 0
    history: list[EpochMetrics] = []
    checkpoint: Path | None = None
    if checkpoint_dir is not None and resume:
        checkpoint = latest_checkpoint(checkpoint_dir)
        if checkpoint is not None:
            state = _restore(checkpoint, recipe_yaml, fingerprint, model, ema, optimizer, target)
            epoch, start_step, global_step = state.epoch, state.step, state.global_step
            history = [EpochMetrics.from_dict(h) for h in state.history]
            log.info(
                "ml.train.resumed checkpoint=%s epoch=%d step=%d", checkpoint, epoch, start_step
            )

    def save(next_epoch: int, next_step: int) -> Path | None:
        if checkpoint_dir is None:
            return None
        return save_checkpoint(
            checkpoint_dir,
            trained=trained_model(),
            train_state=TrainState(
                epoch=next_epoch,
                step=next_step,
                global_step=global_step,
                raw_weights=model.state_dict() if ema is not None else None,
                optimizer={},
                history=[h.to_dict() for h in history],
                fingerprint=fingerprint,
                recipe_yaml=recipe_yaml,
                extra={"class_counts": class_counts.tolist(), "num_classes": num_classes},
            ),
            optimizer=optimizer,
        )

    transform = build_sample_transform(recipe.augment, image_size=recipe.image_size, train=True)
    dataset = _TrainSet(images, label_array, indices=rows, transform=transform, seed=recipe.seed)
    batches = _EpochBatches(sampling.order, batch_size, steps_per_epoch)
    workers = _loader_workers(recipe, target)
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=target.type == "cuda",
        persistent_workers=workers > 0,
    )
    mixer = BatchMixer(recipe.augment, num_classes)
    normalise = Normaliser(normalisation["mean"], normalisation["std"], target)
    objective = _Objective(recipe, num_classes, prior, teachers, target)
    warmup_steps = round(recipe.schedule.warmup_epochs * steps_per_epoch)

    stopped = False
    while epoch < epochs and not stopped:
        model.train()
        batches.set_position(epoch, start_step)
        started = time.perf_counter()
        seen, steps_run = 0, 0
        loss_total = torch.zeros((), device=target)
        correct_total = torch.zeros((), dtype=torch.int64, device=target)
        previous: Tensor | None = None
        step = start_step
        lr = recipe.optimizer.lr
        loss_value = float("nan")
        for pixels, batch_labels in loader:
            # Dropout and other global-RNG users: seeded per step, so a resumed run matches.
            torch.manual_seed(_seed_from(recipe.seed, 2, epoch, step))
            lr = set_scheduled_lr(
                optimizer, recipe, global_step, total_steps=total_steps, warmup_steps=warmup_steps
            )
            raw = pixels.to(target, non_blocking=True).float()
            hard = batch_labels.to(target, non_blocking=True)
            raw, soft = mixer(raw, hard, sample_generator(recipe.seed, 1, epoch, step))
            x = normalise(raw)
            if recipe.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(target):
                logits = model(x).float()
            loss = objective(logits, soft, raw)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # untyped in torch stubs
            if recipe.optimizer.grad_clip_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), recipe.optimizer.grad_clip_norm)
            optimizer.step()
            if ema is not None:
                ema.update(model, global_step)
            detached = loss.detach()
            loss_total += detached
            correct_total += (logits.detach().argmax(dim=1) == hard).sum()
            # On CUDA, read the previous step's loss: the GPU is already busy with this one, so
            # the read does not leave it idle (on the CPU every step is finished anyway).
            shown = previous if previous is not None and target.type == "cuda" else detached
            loss_value = float(shown)
            if not math.isfinite(loss_value):
                raise TrainingError(
                    f"loss is {loss_value} at epoch {epoch} step {step}; lower the learning rate"
                )
            previous = detached
            global_step += 1
            step += 1
            steps_run += 1
            seen += int(hard.shape[0])
            rate = seen / max(time.perf_counter() - started, 1e-9)
            if callback is not None and step < steps_per_epoch:
                report = Progress(
                    epoch, step, steps_per_epoch, global_step, total_steps, rate, loss_value, lr
                )
                if callback(report) is Control.STOP:
                    stopped = True
                    break
        if stopped:
            checkpoint = save(epoch, step) or checkpoint
            log.info("ml.train.stopped epoch=%d step=%d", epoch, step)
            break
        seconds = time.perf_counter() - started
        val_report = _validate(trained_model(), val, class_counts, recipe, target) if val else None
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=float(loss_total) / max(steps_run, 1),
            train_accuracy=int(correct_total) / max(seen, 1),
            learning_rate=lr,
            images_per_second=seen / max(seconds, 1e-9),
            seconds=seconds,
            steps=steps_run,
            val=val_report,
        )
        history.append(metrics)
        log.info(
            "ml.train.epoch epoch=%d loss=%.4f acc=%.4f img_per_s=%.0f val_top1=%s",
            epoch,
            metrics.train_loss,
            metrics.train_accuracy,
            metrics.images_per_second,
            None if val_report is None else round(val_report.top1, 4),
        )
        epoch, start_step = epoch + 1, 0
        if callback is not None:
            report = Progress(
                epoch - 1,
                step,
                steps_per_epoch,
                global_step,
                total_steps,
                metrics.images_per_second,
                loss_value,
                lr,
                epoch_end=metrics,
            )
            stopped = callback(report) is Control.STOP and epoch < epochs
        checkpoint = save(epoch, 0) or checkpoint
    trained = trained_model()
    trained.model.eval()
    return TrainResult(
        trained=trained,
        history=history,
        stopped=stopped,
        checkpoint=checkpoint,
        class_counts=class_counts,
    )


def _validate(
    trained: TrainedModel,
    val: EvalSet,
    class_counts: NDArray[np.int64],
    recipe: Recipe,
    device: torch.device,
) -> EvalReport:
    logits = predict_logits(
        trained,
        val.images,
        indices=val.indices,
        batch_size=recipe.eval_batch_size,
        device=device,
        channels_last=recipe.channels_last,
    )
    labels = np.asarray(val.labels, dtype=np.int64)
    if val.indices is not None:
        labels = labels[np.asarray(val.indices, dtype=np.int64)]
    return evaluate(logits, labels, train_class_counts=class_counts)
