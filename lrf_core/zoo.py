"""Small baseline models and a deterministic training loop (demo, tests, benchmarks).

Pretrained weights cannot be assumed (offline machines), so lrflow trains its own
parents; ``keras.applications`` architectures with ``weights=None`` work the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import keras
import numpy as np

from lrf_core.data import Dataset

__all__ = ["digits_cnn", "EpochLog", "TrainResult", "train_classifier", "accuracy"]


def digits_cnn(input_shape=(8, 8, 1), num_classes: int = 10, *, width: int = 32, seed: int = 0) -> keras.Model:
    """A small functional CNN: Conv-BN-ReLU ×2 with a residual Add, then a Dense head."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", kernel_initializer=init, name="conv1")(inputs)
    y = keras.layers.Conv2D(width, 3, padding="same", kernel_initializer=init, name="conv2")(x)
    y = keras.layers.BatchNormalization(name="bn2")(y)
    y = keras.layers.ReLU(name="relu2")(y)
    x = keras.layers.Add(name="residual")([x, y])
    x = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu", kernel_initializer=init, name="conv3")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(128, activation="relu", kernel_initializer=init, name="fc1")(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=init, name="logits")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


@dataclass(frozen=True)
class EpochLog:
    """One finished epoch, as :func:`train_classifier` reports it to ``on_epoch``.

    ``epoch`` is 1-based out of at most ``max_epochs``; ``learning_rate`` is the rate this
    epoch trained at (a plateau cut at its end applies from the next epoch); ``seconds``
    covers its training and validation passes.
    """

    epoch: int
    max_epochs: int
    loss: float
    accuracy: float
    val_accuracy: float
    learning_rate: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """``learning_rates`` / ``val_accuracy_history``: each epoch's rate and validation accuracy;
    ``kept_epoch``: the 1-based epoch whose weights the model holds (the best one when early
    stopping restored it, else the last)."""

    epochs: int
    train_accuracy: float
    val_accuracy: float
    learning_rates: tuple[float, ...] = ()
    val_accuracy_history: tuple[float, ...] = ()
    kept_epoch: int = 0


def train_classifier(
    model: keras.Model, train: Dataset, val: Dataset, *, epochs: int = 10, batch_size: int = 64,
    learning_rate: float = 1e-3, seed: int = 0, patience: int = 3,
    lr_patience: "int | None" = None, lr_factor: float = 0.1, min_learning_rate: float = 1e-6,
    on_epoch: Optional[Callable[[EpochLog], None]] = None,
) -> TrainResult:
    """Train a logits classifier with Adam and early stopping on validation accuracy (in place).

    Without ``lr_patience`` the rate stays at ``learning_rate`` and training stops after
    ``patience`` epochs without a validation-accuracy gain (best weights restored). With it,
    the rate is multiplied by ``lr_factor`` after every ``lr_patience`` epochs without a gain
    (never below ``min_learning_rate``), so a model that early-stops has also been trained at
    the lower rates a fine-tune uses: otherwise a fine-tune at a lower rate gains accuracy
    from the rate alone, and a compressed child fine-tuned that way flatters its method.
    ``patience`` must then exceed ``lr_patience``, or training would stop before a reduced
    rate had an epoch to help.

    ``on_epoch`` receives an :class:`EpochLog` after every epoch, so a caller can show progress
    of a training that runs for an hour (the library itself does not print).
    """
    if lr_patience is not None:
        if not 0 < lr_patience < patience:
            raise ValueError(
                f"lr_patience must be in [1, patience - 1] so a reduced rate gets epochs before early stopping; "
                f"got lr_patience={lr_patience}, patience={patience}.")
        if not 0 < lr_factor < 1:
            raise ValueError(f"lr_factor must be in (0, 1); got {lr_factor}.")
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience, restore_best_weights=True)
    callbacks = [stop]
    if lr_patience is not None:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_accuracy", mode="max", factor=lr_factor, patience=lr_patience, min_lr=min_learning_rate))
    if on_epoch is not None:
        # after ReduceLROnPlateau, which writes the epoch's rate into the logs before it cuts the rate
        callbacks.append(_EpochReporter(on_epoch, epochs, learning_rate))
    history = model.fit(
        train.x, train.y, validation_data=(val.x, val.y), epochs=epochs, batch_size=batch_size,
        shuffle=True, verbose=0, callbacks=callbacks,
    )
    run = len(history.history["loss"])
    rates = history.history.get("learning_rate", [learning_rate] * run)
    return TrainResult(
        epochs=run,
        train_accuracy=accuracy(model, train),
        val_accuracy=accuracy(model, val),
        learning_rates=tuple(float(r) for r in rates),
        val_accuracy_history=tuple(float(a) for a in history.history["val_accuracy"]),
        # Keras restores the best weights only when it stops early; at the epoch cap the last ones stay.
        kept_epoch=int(np.argmax(history.history["val_accuracy"])) + 1 if stop.stopped_epoch > 0 else run,
    )


class _EpochReporter(keras.callbacks.Callback):
    """Hands ``on_epoch`` an :class:`EpochLog` at the end of every epoch."""

    def __init__(self, on_epoch: Callable[[EpochLog], None], max_epochs: int, learning_rate: float):
        super().__init__()
        self._on_epoch, self._max_epochs, self._learning_rate = on_epoch, max_epochs, learning_rate
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._on_epoch(EpochLog(
            epoch=epoch + 1, max_epochs=self._max_epochs, loss=float(logs["loss"]),
            accuracy=float(logs["accuracy"]), val_accuracy=float(logs["val_accuracy"]),
            # without a schedule Keras logs no rate: it is the constant one
            learning_rate=float(logs.get("learning_rate", self._learning_rate)),
            seconds=time.perf_counter() - self._started,
        ))


def accuracy(model: keras.Model, data: Dataset, *, batch_size: int = 256) -> float:
    """Top-1 accuracy of a logits (or probabilities) model on a dataset."""
    logits = model.predict(data.x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == data.y))
