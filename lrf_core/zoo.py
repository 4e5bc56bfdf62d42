"""Small baseline models and a deterministic training loop (demo, tests, benchmarks).

Pretrained weights cannot be assumed (offline machines), so lrflow trains its own
parents; ``keras.applications`` architectures with ``weights=None`` work the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from lrf_core.data import Dataset

__all__ = ["digits_cnn", "TrainResult", "train_classifier", "accuracy"]


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
class TrainResult:
    epochs: int
    train_accuracy: float
    val_accuracy: float


def train_classifier(
    model: keras.Model, train: Dataset, val: Dataset, *, epochs: int = 10, batch_size: int = 64,
    learning_rate: float = 1e-3, seed: int = 0, patience: int = 3,
) -> TrainResult:
    """Train a logits classifier with Adam and early stopping on validation accuracy (in place)."""
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience, restore_best_weights=True)
    history = model.fit(
        train.x, train.y, validation_data=(val.x, val.y), epochs=epochs, batch_size=batch_size,
        shuffle=True, verbose=0, callbacks=[stop],
    )
    return TrainResult(
        epochs=len(history.history["loss"]),
        train_accuracy=accuracy(model, train),
        val_accuracy=accuracy(model, val),
    )


def accuracy(model: keras.Model, data: Dataset, *, batch_size: int = 256) -> float:
    """Top-1 accuracy of a logits (or probabilities) model on a dataset."""
    logits = model.predict(data.x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == data.y))
