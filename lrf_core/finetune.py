"""One-shot fine-tune of the rebuilt model (METHODS.md §4).

All factorized layers are trained together once, for a few epochs at a low learning rate
(Kokhazadeh et al.: one-shot instead of per-layer retraining), with early stopping on
validation accuracy. The starting point counts as epoch 0, so the returned weights are
never worse on validation than the un-tuned rebuild. Optional knowledge distillation from
the parent's logits **[our choice]**: loss = α·CE(y, z) + (1−α)·T²·KL(softmax(t/T) ‖ softmax(z/T)).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import keras
import numpy as np

from lrf_core.data import Dataset
from lrf_core.errors import LRFError

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune"]


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 3
    learning_rate: float = 1e-4
    batch_size: int = 64
    patience: int = 2
    distill: bool = False
    temperature: float = 4.0
    alpha: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise LRFError(f"finetune epochs must be >= 0. Received {self.epochs}.")
        if not 0 < self.learning_rate < 1:
            raise LRFError(f"finetune learning rate must be in (0, 1). Received {self.learning_rate}.")
        if not 0 <= self.alpha <= 1 or self.temperature <= 0:
            raise LRFError("distillation needs 0 <= alpha <= 1 and temperature > 0.")


@dataclass(frozen=True)
class FinetuneResult:
    epochs_run: int
    best_epoch: int
    val_accuracy_before: float
    val_accuracy_after: float
    seconds_per_epoch: float
    val_accuracy_history: tuple[float, ...]


def _accuracy(model: keras.Model, data: Dataset, batch_size: int = 256) -> float:
    logits = model.predict(data.x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == data.y))


def _distill_loss(num_classes: int, temperature: float, alpha: float):
    """Loss on y_true = [label, teacher logits…] (labels and teacher packed in one array)."""
    ops = keras.ops

    def loss(y_true, y_pred):
        labels = ops.cast(y_true[:, 0], "int32")
        teacher = y_true[:, 1:]
        hard = keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
        soft_t = ops.softmax(teacher / temperature, axis=-1)
        log_s = ops.log_softmax(y_pred / temperature, axis=-1)
        log_t = ops.log_softmax(teacher / temperature, axis=-1)
        kl = ops.sum(soft_t * (log_t - log_s), axis=-1)
        return alpha * hard + (1.0 - alpha) * temperature**2 * kl

    return loss


def finetune(
    model: keras.Model,
    train: Dataset,
    val: Dataset,
    config: FinetuneConfig = FinetuneConfig(),
    *,
    teacher: Optional[keras.Model] = None,
    on_epoch: Optional[Callable[[int, int, float], None]] = None,
) -> FinetuneResult:
    """Fine-tune ``model`` in place (the best validation weights are restored).

    ``teacher`` (the parent) is required when ``config.distill``; its logits on the training
    set are computed once. ``on_epoch(epoch, epochs, val_accuracy)`` reports progress.
    """
    if config.distill and teacher is None:
        raise LRFError("Distillation needs the parent model as teacher.")
    before = _accuracy(model, val)
    history = [before]
    if config.epochs == 0:
        return FinetuneResult(0, 0, before, before, 0.0, tuple(history))
    keras.utils.set_random_seed(config.seed)
    if config.distill:
        targets = np.concatenate([train.y[:, None].astype(np.float32), teacher.predict(train.x, batch_size=256, verbose=0)], axis=1)
        loss = _distill_loss(train.num_classes, config.temperature, config.alpha)
    else:
        targets, loss = train.y, keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=loss)
    best_weights, best_acc, best_epoch, waited, seconds = model.get_weights(), before, 0, 0, 0.0
    epochs_run = 0
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.fit(train.x, targets, batch_size=config.batch_size, epochs=1, shuffle=True, verbose=0)
        seconds += time.perf_counter() - started
        epochs_run = epoch
        acc = _accuracy(model, val)
        history.append(acc)
        if on_epoch is not None:
            on_epoch(epoch, config.epochs, acc)
        if acc > best_acc:
            best_weights, best_acc, best_epoch, waited = model.get_weights(), acc, epoch, 0
        else:
            waited += 1
            if waited >= config.patience:
                break
    model.set_weights(best_weights)
    return FinetuneResult(epochs_run, best_epoch, before, best_acc, seconds / max(epochs_run, 1), tuple(history))
