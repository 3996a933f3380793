"""Training a head on cached embeddings (:mod:`ml.heads`): what :func:`ml.train.train_model`
runs for a recipe with a ``head``.

The features of the training rows live in memory as one float32 tensor, so an epoch is a few
matrix products: a head trains in seconds on a CPU. Everything a recipe can ask for that makes
sense on features applies:

* the class-balanced sampler or a seeded shuffle, per epoch (:class:`ml.train.EpochOrder`);
* the three logit-adjustment forms (frozen log-prior bias, logit-adjusted loss, post-hoc);
* label smoothing, mixup in feature space, Flooding;
* distillation from teacher heads in the same embedding space (e.g. the fold models), computed
  on the (mixed) features of each batch;
* EMA of the weights, SGD or AdamW with warmup and cosine decay.

Besides hard labels, rows may carry **soft targets** (a distribution over classes, e.g. the fold
ensemble's out-of-fold prediction for a rejected sample) and **sample weights**. A row whose
label is -1 trains only on its soft target: its given label never reaches the loss.

**Determinism and resume.** Initialisation, epoch order, dropout and mixing derive from the
recipe's seed. A head is saved once, when training ends (``checkpoint_dir/step-N``); a later call
with the same recipe and data loads it instead of training again. Training is too short to be
worth resuming midway: a stopped run saves nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from safetensors.torch import save_file
from torch import Tensor

from ml.checkpoint import latest_checkpoint
from ml.ema import ModelEma
from ml.embeddings import EmbeddingArray, EmbeddingSpace
from ml.heads import HeadNet, HeadTargets, TrainedHead, head_logits, load_model
from ml.losses import (
    distillation_loss,
    ensemble_teacher_logits,
    flooding,
    logit_adjusted_cross_entropy,
    soft_cross_entropy,
    with_distillation,
)
from ml.metrics import evaluate
from ml.recipes import Recipe, dump_recipe
from ml.train import (
    Control,
    EpochMetrics,
    EpochOrder,
    EvalSet,
    Progress,
    ProgressCallback,
    TrainingError,
    TrainResult,
    build_optimizer,
    set_scheduled_lr,
    setup_logit_adjustment,
    training_fingerprint,
)

__all__ = ["train_head"]

log = logging.getLogger(__name__)


def _targets(
    labels: NDArray[np.int64],
    rows: NDArray[np.int64],
    num_classes: int,
    extra: HeadTargets,
) -> tuple[Tensor, Tensor, NDArray[np.int64]]:
    """Per training row: the target distribution ``[M, C]``, the loss weight ``[M]`` and the
    class used for balancing and accuracy ``[M]`` (the label, else the soft target's argmax)."""
    used = labels[rows]
    if (used >= num_classes).any() or (used < -1).any():
        raise TrainingError(f"training labels must lie in [-1, {num_classes})")
    unlabelled = used < 0
    targets = torch.zeros((rows.shape[0], num_classes), dtype=torch.float32)
    labelled = np.flatnonzero(~unlabelled)
    targets[labelled, used[labelled]] = 1.0
    classes = used.copy()
    if unlabelled.any():
        if extra.soft is None:
            raise TrainingError("training rows without a label need soft targets")
        soft = np.asarray(extra.soft, dtype=np.float32)
        if soft.shape != (labels.shape[0], num_classes):
            raise TrainingError(f"soft targets {soft.shape} do not fit {labels.shape[0]} rows")
        chosen = soft[rows[unlabelled]]
        if not np.isfinite(chosen).all() or (chosen < 0).any():
            raise TrainingError("soft targets must be finite and non-negative")
        sums = chosen.sum(axis=1, keepdims=True)
        if (sums <= 0).any():
            raise TrainingError("every soft target needs some probability mass")
        chosen = chosen / sums
        targets[np.flatnonzero(unlabelled)] = torch.from_numpy(chosen)
        classes[unlabelled] = chosen.argmax(axis=1)
    weights = torch.ones(rows.shape[0], dtype=torch.float32)
    if extra.weights is not None:
        given = np.asarray(extra.weights, dtype=np.float32)
        if given.shape != labels.shape or not np.isfinite(given).all() or (given < 0).any():
            raise TrainingError("sample weights must be [N], finite and non-negative")
        weights = torch.from_numpy(given[rows].copy())
    return targets, weights, classes


class _Teachers:
    """Teacher heads in the student's embedding space; their ensemble's logits on a batch."""

    def __init__(
        self, paths: list[Path], space: EmbeddingSpace, num_classes: int, device: torch.device
    ) -> None:
        self.heads: list[TrainedHead] = []
        for path in paths:
            teacher = load_model(path, device=device)
            if not isinstance(teacher, TrainedHead) or teacher.space != space:
                raise TrainingError(
                    f"teacher {path} is not a head on the student's embeddings: distil a head "
                    "from heads in the same embedding space"
                )
            if teacher.num_classes != num_classes:
                raise TrainingError(
                    f"teacher {path} predicts {teacher.num_classes} classes, not {num_classes}"
                )
            self.heads.append(teacher)

    @torch.no_grad()
    def logits(self, features: Tensor) -> Tensor:
        outputs = [t.adjust_logits(t.model(features)) for t in self.heads]
        return outputs[0] if len(outputs) == 1 else ensemble_teacher_logits(outputs)


def _mix(recipe: Recipe, batch: list[Tensor], generator: torch.Generator) -> list[Tensor]:
    """Mixup in feature space with the recipe's probability and Beta(alpha, alpha) weight: every
    tensor of ``batch`` (features, targets, weights: ``[B, ...]``) is mixed with the same weight
    and partners."""
    mixup = recipe.augment.mixup
    if mixup is None or mixup.p <= 0:
        return batch
    if float(torch.rand((), generator=generator)) >= mixup.p:
        return batch
    seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
    lam = float(np.random.default_rng(seed).beta(mixup.alpha, mixup.alpha))
    perm = torch.randperm(batch[0].shape[0], generator=generator)
    return [lam * t + (1 - lam) * t[perm] for t in batch]


def _save(
    run_dir: Path, trained: TrainedHead, *, recipe_yaml: str, state: dict[str, Any], step: int
) -> Path:
    """Write ``run_dir/step-<step>/`` atomically (model, config, recipe, state)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    temporary = run_dir / f".tmp-{uuid.uuid4().hex}"
    temporary.mkdir()
    try:
        tensors = {
            k: v.detach().cpu().contiguous().clone() for k, v in trained.model.state_dict().items()
        }
        save_file(tensors, str(temporary / "model.safetensors"))
        (temporary / "model_config.json").write_text(
            json.dumps(trained.config(), indent=1), encoding="utf-8"
        )
        (temporary / "recipe.yaml").write_text(recipe_yaml, encoding="utf-8")
        (temporary / "train_state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
        final = run_dir / f"step-{step:09d}"
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        temporary.replace(final)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    return final


def _finished(
    run_dir: Path | None, recipe_yaml: str, fingerprint: str, device: torch.device
) -> tuple[TrainedHead, list[EpochMetrics], Path] | None:
    """A finished run of the same recipe on the same data in ``run_dir``, if there is one."""
    if run_dir is None:
        return None
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None or not (checkpoint / "train_state.json").is_file():
        return None
    state = json.loads((checkpoint / "train_state.json").read_text(encoding="utf-8"))
    recipe_file = checkpoint / "recipe.yaml"
    if state.get("fingerprint") != fingerprint or not recipe_file.is_file():
        return None
    if recipe_file.read_text(encoding="utf-8") != recipe_yaml:
        return None
    trained = load_model(checkpoint, device=device)
    if not isinstance(trained, TrainedHead):
        return None
    history = [EpochMetrics.from_dict(h) for h in state.get("history", [])]
    return trained, history, checkpoint


def _fingerprint(
    labels: NDArray[np.int64],
    rows: NDArray[np.int64],
    num_classes: int,
    features: EmbeddingArray,
    extra: HeadTargets,
) -> str:
    """Identifies the training data: labels, rows, the space, the first rows' features and the
    extra targets."""
    digest = hashlib.sha256(training_fingerprint(labels, rows, num_classes).encode())
    digest.update(features.space.key.encode())
    digest.update(np.ascontiguousarray(features[rows[: min(rows.shape[0], 64)]]).tobytes())
    for array in (extra.soft, extra.weights):
        if array is not None:
            digest.update(np.ascontiguousarray(np.asarray(array)[rows]).tobytes())
    return digest.hexdigest()


def train_head(
    recipe: Recipe,
    features: EmbeddingArray,
    labels: NDArray[np.integer] | Any,
    *,
    num_classes: int,
    indices: NDArray[np.integer] | Any | None = None,
    class_names: Any | None = None,
    val: EvalSet | None = None,
    device: str | torch.device | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    callback: ProgressCallback | None = None,
    targets: HeadTargets | None = None,
) -> TrainResult:
    """Train the recipe's head on ``features[indices]``.

    Args:
        recipe: a recipe with ``head``.
        features: ``[N, D]`` embeddings with their space (saved with the head).
        labels: ``[N]`` class ids; -1 for rows that learn only from ``targets.soft``.
        indices: the training rows (default all).
        val: validation features and labels (``EvalSet.images`` holds features).
        targets: soft targets and sample weights (see :class:`HeadTargets`).
        Others: as for :func:`ml.train.train_model`.

    Raises:
        TrainingError: bad inputs, or a teacher that is not a head in the same space.
    """
    if recipe.head is None:
        raise TrainingError(f"recipe {recipe.name} has no head")
    if not isinstance(features, EmbeddingArray):
        raise TrainingError(
            f"recipe {recipe.name} trains a head on embeddings: give an EmbeddingArray, not "
            f"{type(features).__name__} {getattr(features, 'shape', '')}"
        )
    space = features.space
    extra = targets or HeadTargets()
    label_array = np.asarray(labels, dtype=np.int64)
    if features.ndim != 2 or features.shape[0] != label_array.shape[0]:
        raise TrainingError(
            f"expected features [N, D] for {label_array.shape[0]} labels, got {features.shape}"
        )
    rows = (
        np.arange(features.shape[0], dtype=np.int64)
        if indices is None
        else np.asarray(indices, dtype=np.int64)
    )
    if rows.ndim != 1 or rows.shape[0] < 2:
        raise TrainingError(f"need at least 2 training samples, got {rows.shape[0]}")
    if rows.min() < 0 or rows.max() >= features.shape[0]:
        raise TrainingError(f"training indices must lie in [0, {features.shape[0]})")
    target_device = torch.device(device) if device is not None else torch.device("cpu")
    recipe_yaml = dump_recipe(recipe)
    fingerprint = _fingerprint(label_array, rows, num_classes, features, extra)
    run_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    soft_targets, weights, classes = _targets(label_array, rows, num_classes, extra)
    class_counts = np.bincount(classes, minlength=num_classes).astype(np.int64)
    if resume and (done := _finished(run_dir, recipe_yaml, fingerprint, target_device)):
        log.info("ml.head.reused checkpoint=%s", done[2])
        return TrainResult(done[0], done[1], False, done[2], class_counts)

    raw = torch.from_numpy(np.asarray(features[rows], dtype=np.float32)).to(target_device)
    soft_targets, weights = soft_targets.to(target_device), weights.to(target_device)
    sampling = EpochOrder(recipe, classes, num_classes)
    batch_size = min(recipe.batch_size, sampling.epoch_length)
    steps_per_epoch = max(1, sampling.epoch_length // batch_size)
    epochs = recipe.epochs_for(steps_per_epoch)
    total_steps = steps_per_epoch * epochs

    torch.manual_seed(recipe.seed)
    model = HeadNet(int(features.shape[1]), num_classes, recipe.head)
    model.norm.fit(raw)
    prior, inference, tau = setup_logit_adjustment(recipe, sampling.prior_counts, model)
    model.to(target_device)
    ema = ModelEma(model, decay=recipe.ema.decay, warmup=recipe.ema.warmup) if recipe.ema else None
    optimizer = build_optimizer(recipe, model)
    adjusted_loss = recipe.logit_adjustment is not None and recipe.logit_adjustment.mode == "loss"
    loss_prior = prior.to(target_device) if prior is not None and adjusted_loss else None
    teachers = (
        _Teachers(list(recipe.distillation.teachers), space, num_classes, target_device)
        if recipe.distillation is not None
        else None
    )
    with torch.no_grad():
        # The normalisation is fixed once fitted: apply it once, not at every step.
        x = model.norm(raw)
    generator = torch.Generator().manual_seed(recipe.seed)
    warmup_steps = round(recipe.schedule.warmup_epochs * steps_per_epoch)
    smoothing = recipe.label_smoothing

    def trained_head() -> TrainedHead:
        return TrainedHead(
            model=ema.module if ema is not None else model,  # type: ignore[arg-type]
            space=space,
            head=recipe.head,  # type: ignore[arg-type]
            dim=int(features.shape[1]),
            num_classes=num_classes,
            class_names=list(class_names) if class_names is not None else None,
            log_prior=prior,
            adjustment=inference,
            tau=tau,
        )

    history: list[EpochMetrics] = []
    global_step, stopped = 0, False
    for epoch in range(epochs):
        model.train()
        started = time.perf_counter()
        order = torch.from_numpy(sampling.order(epoch))
        loss_total, correct, seen = 0.0, 0, 0
        lr = recipe.optimizer.lr
        loss_value = float("nan")
        for step in range(steps_per_epoch):
            batch = order[step * batch_size : (step + 1) * batch_size].to(target_device)
            lr = set_scheduled_lr(
                optimizer, recipe, global_step, total_steps=total_steps, warmup_steps=warmup_steps
            )
            parts = [x[batch], soft_targets[batch], weights[batch]]
            if teachers is not None:
                parts.append(raw[batch])
            parts = _mix(recipe, parts, generator)
            xb, tb, wb = parts[0], parts[1], parts[2]
            if smoothing > 0:
                tb = tb * (1.0 - smoothing) + smoothing / num_classes
            logits = model.head(xb)
            if loss_prior is not None:
                loss = logit_adjusted_cross_entropy(logits, tb, loss_prior, tau, wb)
            else:
                loss = soft_cross_entropy(logits, tb, wb)
            if recipe.flooding is not None:
                loss = flooding(loss, recipe.flooding)
            if teachers is not None and recipe.distillation is not None:
                loss = with_distillation(
                    loss,
                    distillation_loss(logits, teachers.logits(xb), recipe.distillation.temperature),
                    recipe.distillation.weight,
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # untyped in torch stubs
            if recipe.optimizer.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.optimizer.grad_clip_norm)
            optimizer.step()
            if ema is not None:
                ema.update(model, global_step)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise TrainingError(
                    f"loss is {loss_value} at epoch {epoch} step {step}; lower the learning rate"
                )
            loss_total += loss_value
            hard = soft_targets[batch].argmax(dim=1)
            correct += int((logits.detach().argmax(dim=1) == hard).sum())
            seen += int(batch.shape[0])
            global_step += 1
            rate = seen / max(time.perf_counter() - started, 1e-9)
            if callback is not None and step + 1 < steps_per_epoch:
                report = Progress(
                    epoch, step + 1, steps_per_epoch, global_step, total_steps, rate, loss_value, lr
                )
                if callback(report) is Control.STOP:
                    stopped = True
                    break
        if stopped:
            break
        seconds = time.perf_counter() - started
        val_report = None
        if val is not None:
            model.eval()
            val_logits = head_logits(
                trained_head(), val.images, indices=val.indices, device=target_device
            )
            val_labels = np.asarray(val.labels, dtype=np.int64)
            if val.indices is not None:
                val_labels = val_labels[np.asarray(val.indices, dtype=np.int64)]
            val_report = evaluate(val_logits, val_labels, train_class_counts=class_counts)
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=loss_total / steps_per_epoch,
            train_accuracy=correct / max(seen, 1),
            learning_rate=lr,
            images_per_second=seen / max(seconds, 1e-9),
            seconds=seconds,
            steps=steps_per_epoch,
            val=val_report,
        )
        history.append(metrics)
        if callback is not None:
            report = Progress(
                epoch,
                steps_per_epoch,
                steps_per_epoch,
                global_step,
                total_steps,
                metrics.images_per_second,
                loss_value,
                lr,
                epoch_end=metrics,
            )
            if callback(report) is Control.STOP and epoch + 1 < epochs:
                stopped = True
                break
    trained = trained_head()
    trained.model.eval()
    checkpoint: Path | None = None
    if run_dir is not None and not stopped:
        checkpoint = _save(
            run_dir,
            trained,
            recipe_yaml=recipe_yaml,
            state={
                "fingerprint": fingerprint,
                "history": [h.to_dict() for h in history],
                "class_counts": class_counts.tolist(),
            },
            step=global_step,
        )
    if history:
        last = history[-1]
        log.info(
            "ml.head.trained kind=%s epochs=%d loss=%.4f acc=%.4f",
            recipe.head.kind,
            len(history),
            last.train_loss,
            last.train_accuracy,
        )
    return TrainResult(trained, history, stopped, checkpoint, class_counts)
