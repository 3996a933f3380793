"""What a run builds before its first step: the network with the recipe's logit adjustment, the
optimiser (no weight decay on biases and norms) and the learning-rate schedule (linear warmup,
then cosine); for a whole network on images, all of it together with the data that feeds it
(:func:`set_up_image_run`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ml.augment.batch import BatchMixer
from ml.checkpoint import InferenceAdjustment, TrainedModel
from ml.ema import ModelEma
from ml.losses import init_frozen_log_prior_bias, log_prior
from ml.models import classifier_of, create_model, data_config
from ml.predict import Normaliser
from ml.recipes import Recipe, dump_recipe
from ml.training.batches import EpochBatches, EpochOrder, image_loader, training_fingerprint
from ml.training.objective import ImageTeachers, Objective
from ml.training.resume import RunIdentity

__all__ = [
    "BuiltModel",
    "Feed",
    "Learner",
    "build_ema",
    "build_model",
    "build_optimizer",
    "lr_factor",
    "set_scheduled_lr",
    "set_up_image_run",
    "setup_logit_adjustment",
]


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


def build_ema(recipe: Recipe, model: nn.Module) -> ModelEma | None:
    """The EMA of ``model``'s weights when the recipe asks for it."""
    if recipe.ema is None:
        return None
    return ModelEma(model, decay=recipe.ema.decay, warmup=recipe.ema.warmup)


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
class BuiltModel:
    """A network ready to train, with what a checkpoint of it records.

    Attributes:
        model_kwargs: the extra timm arguments it was created with.
        prior: ``[C]`` log prior of the classes it sees (``None`` without logit adjustment).
        adjustment, tau: what inference does with the prior.
    """

    model: nn.Module
    model_kwargs: dict[str, Any]
    prior: Tensor | None
    adjustment: InferenceAdjustment
    tau: float


def build_model(
    recipe: Recipe, num_classes: int, prior_counts: NDArray[np.integer], device: torch.device
) -> BuiltModel:
    """The recipe's network (seeded initialisation) on ``device``, with its logit adjustment:
    the log prior of ``prior_counts`` ``[C]`` and what inference does with it."""
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
    return BuiltModel(model, model_kwargs, prior, inference, tau)


@dataclass
class Learner:
    """The network being trained, its EMA and optimizer, and what its checkpoints record."""

    recipe: Recipe
    built: BuiltModel
    ema: ModelEma | None
    optimizer: torch.optim.Optimizer
    device: torch.device
    identity: RunIdentity
    class_names: list[str] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def model(self) -> nn.Module:
        return self.built.model

    def trained(self) -> TrainedModel:
        """The model for inference: the EMA weights when EMA is on."""
        return TrainedModel(
            model=self.ema.module if self.ema is not None else self.model,
            model_name=self.recipe.model.name,
            num_classes=self.identity.num_classes,
            image_size=self.recipe.eval_image_size,
            mean=self.mean,
            std=self.std,
            class_names=self.class_names,
            log_prior=self.built.prior,
            adjustment=self.built.adjustment,
            tau=self.built.tau,
            tta_flip=self.recipe.tta_flip,
            model_kwargs=self.built.model_kwargs,
        )


@dataclass
class Feed:
    """What turns the training rows into losses: the batches, their mixing and normalisation,
    the objective, and the schedule's length."""

    batches: EpochBatches
    loader: DataLoader[tuple[Tensor, int]]
    mixer: BatchMixer
    normalise: Normaliser
    objective: Objective
    steps_per_epoch: int
    epochs: int
    warmup_steps: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def set_up_image_run(
    recipe: Recipe,
    images: NDArray[np.uint8],
    labels: NDArray[np.int64],
    rows: NDArray[np.int64],
    num_classes: int,
    class_names: list[str] | None,
    device: torch.device,
) -> tuple[Learner, Feed]:
    """The seeded network with its EMA, optimizer and teachers, and the data that feeds it."""
    identity = RunIdentity(
        recipe_yaml=dump_recipe(recipe),
        fingerprint=training_fingerprint(labels, rows, num_classes),
        num_classes=num_classes,
        class_counts=np.bincount(labels[rows], minlength=num_classes).astype(np.int64),
    )
    sampling = EpochOrder(recipe, labels[rows], num_classes)
    batch_size = min(recipe.batch_size, sampling.epoch_length)
    steps_per_epoch = sampling.epoch_length // batch_size
    built = build_model(recipe, num_classes, sampling.prior_counts, device)
    ema = build_ema(recipe, built.model)
    optimizer = build_optimizer(recipe, built.model)
    normalisation = data_config(built.model)
    teachers = (
        ImageTeachers(recipe.distillation.teachers, device, num_classes)
        if recipe.distillation is not None
        else None
    )
    learner = Learner(
        recipe,
        built,
        ema,
        optimizer,
        device,
        identity,
        class_names,
        normalisation["mean"],
        normalisation["std"],
    )
    batches = EpochBatches(sampling.order, batch_size, steps_per_epoch)
    feed = Feed(
        batches=batches,
        loader=image_loader(recipe, images, labels, rows, batches, device),
        mixer=BatchMixer(recipe.augment, num_classes),
        normalise=Normaliser(normalisation["mean"], normalisation["std"], device),
        objective=Objective(
            recipe, num_classes, built.prior, teachers.logits if teachers else None, device
        ),
        steps_per_epoch=steps_per_epoch,
        epochs=recipe.epochs_for(steps_per_epoch),
        warmup_steps=round(recipe.schedule.warmup_epochs * steps_per_epoch),
    )
    return learner, feed
