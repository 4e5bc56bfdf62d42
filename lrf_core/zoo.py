"""Small baseline models and a deterministic training loop (demo, tests, benchmarks).

Pretrained weights cannot be assumed (offline machines), so lrflow trains its own
parents; ``keras.applications`` architectures with ``weights=None`` work the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import keras
import numpy as np

from lrf_core.data import Dataset

__all__ = ["digits_cnn", "EpochLog", "TrainCheckpoint", "TrainResult", "train_classifier", "accuracy"]


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


#: What a checkpoint keeps of each finished epoch (Keras' logs under these names).
HISTORY_KEYS = ("loss", "accuracy", "val_accuracy", "learning_rate")


@dataclass(frozen=True)
class TrainCheckpoint:
    """Everything :func:`train_classifier` needs to continue a run after ``epochs_done`` epochs.

    ``weights`` (``model.get_weights()`` order), ``optimizer`` (``optimizer.variables``: the step
    count, the rate, Adam's moments) and ``best_weights`` (early stopping's best so far) are the
    arrays; ``history`` holds each finished epoch's :data:`HISTORY_KEYS`; ``early_stopping`` and
    ``plateau`` the counters of the two schedules (best, wait, ...); ``stopped`` that early
    stopping had ended the run; ``learning_rate`` the rate the next epoch trains at (after a cut
    at the end of the last one). ``seconds`` is the training time so far. It holds no file
    format: saving it is the caller's business (``bench/zoo.py`` writes one ``.npz``).
    """

    epochs_done: int
    seconds: float
    history: Mapping[str, tuple[float, ...]]
    early_stopping: Mapping[str, Optional[float]]
    plateau: Mapping[str, Optional[float]]
    stopped: bool
    learning_rate: float
    weights: tuple[np.ndarray, ...]
    optimizer: tuple[np.ndarray, ...]
    best_weights: Optional[tuple[np.ndarray, ...]] = field(default=None)

    def __post_init__(self):
        lengths = {k: len(self.history.get(k, ())) for k in HISTORY_KEYS}
        if set(lengths.values()) != {self.epochs_done}:
            raise ValueError(f"A checkpoint after {self.epochs_done} epochs needs that many entries of each of "
                             f"{HISTORY_KEYS}; it has {lengths}.")


def train_classifier(
    model: keras.Model, train: Dataset, val: Dataset, *, epochs: int = 10, batch_size: int = 64,
    learning_rate: float = 1e-3, seed: int = 0, patience: int = 3,
    lr_patience: "int | None" = None, lr_factor: float = 0.1, min_learning_rate: float = 1e-6,
    on_epoch: Optional[Callable[[EpochLog], None]] = None,
    on_checkpoint: Optional[Callable[[TrainCheckpoint], None]] = None,
    resume: Optional[TrainCheckpoint] = None,
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

    ``on_checkpoint`` receives a :class:`TrainCheckpoint` after every epoch; passing one back as
    ``resume`` (with a freshly built ``model`` of the same architecture and the same arguments)
    continues that run where it stood: weights, optimizer state, rate, the early-stopping and
    plateau counters and the history so far. The continued epochs are shuffled from
    ``seed + epochs_done``, so a resumed run is reproducible from its checkpoint but not
    bit-identical to one that was never interrupted (an unresumed run is unchanged by this).
    A parent that trains for hours on a slow host survives the end of a session this way.
    """
    if lr_patience is not None:
        if not 0 < lr_patience < patience:
            raise ValueError(
                f"lr_patience must be in [1, patience - 1] so a reduced rate gets epochs before early stopping; "
                f"got lr_patience={lr_patience}, patience={patience}.")
        if not 0 < lr_factor < 1:
            raise ValueError(f"lr_factor must be in (0, 1); got {lr_factor}.")
    keras.utils.set_random_seed(seed if resume is None else seed + resume.epochs_done)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience, restore_best_weights=True)
    plateau = None
    if lr_patience is not None:
        plateau = keras.callbacks.ReduceLROnPlateau(
            monitor="val_accuracy", mode="max", factor=lr_factor, patience=lr_patience, min_lr=min_learning_rate)
    # last: it restores the schedules' counters after they reset, snapshots them after they count, and reads
    # the epoch's rate from the logs, where ReduceLROnPlateau writes it before it cuts the rate
    recorder = _EpochRecorder(stop, plateau, learning_rate, epochs, resume, on_epoch, on_checkpoint)
    callbacks = [c for c in (stop, plateau, recorder) if c is not None]
    if resume is not None:
        _restore_model(model, resume)
    if resume is None or not (resume.stopped or resume.epochs_done >= epochs):
        model.fit(
            train.x, train.y, validation_data=(val.x, val.y), epochs=epochs, batch_size=batch_size,
            shuffle=True, verbose=0, callbacks=callbacks, initial_epoch=resume.epochs_done if resume else 0,
        )
    elif resume.best_weights is not None:  # the run had ended; only the finished model was not written
        model.set_weights(list(resume.best_weights))
    history = recorder.history
    run = len(history["loss"])
    return TrainResult(
        epochs=run,
        train_accuracy=accuracy(model, train),
        val_accuracy=accuracy(model, val),
        learning_rates=tuple(history["learning_rate"]),
        val_accuracy_history=tuple(history["val_accuracy"]),
        # Keras 3 restores the best weights when fit ends, early or at the cap (the first best: a gain is strict)
        kept_epoch=int(np.argmax(history["val_accuracy"])) + 1,
    )


def _restore_model(model: keras.Model, checkpoint: TrainCheckpoint) -> None:
    """Load a checkpoint's weights and optimizer state (step count, rate, moments) into ``model``."""
    model.set_weights(list(checkpoint.weights))
    model.optimizer.build(model.trainable_variables)
    if len(model.optimizer.variables) != len(checkpoint.optimizer):
        raise ValueError(f"The checkpoint holds {len(checkpoint.optimizer)} optimizer variables; this model's "
                         f"optimizer has {len(model.optimizer.variables)}. Was it saved from another architecture?")
    model.optimizer.set_weights(list(checkpoint.optimizer))


class _EpochRecorder(keras.callbacks.Callback):
    """Keeps the run's history across a resume; hands ``on_epoch`` an :class:`EpochLog` and
    ``on_checkpoint`` a :class:`TrainCheckpoint` at the end of every epoch.

    Keras' History starts empty on every ``fit`` call and its schedules reset their counters in
    ``on_train_begin``; placed after them, this restores those counters from ``resume`` and
    snapshots them once they have counted the epoch.
    """

    _STOP_STATE = ("best", "wait", "best_epoch", "stopped_epoch")
    _PLATEAU_STATE = ("best", "wait", "cooldown_counter")

    def __init__(self, stop, plateau, learning_rate: float, max_epochs: int, resume: Optional[TrainCheckpoint],
                 on_epoch: Optional[Callable[[EpochLog], None]],
                 on_checkpoint: Optional[Callable[[TrainCheckpoint], None]]):
        super().__init__()
        self._stop, self._plateau, self._learning_rate, self._max_epochs = stop, plateau, learning_rate, max_epochs
        self._resume, self._on_epoch, self._on_checkpoint = resume, on_epoch, on_checkpoint
        self.history = {k: list(resume.history[k]) if resume else [] for k in HISTORY_KEYS}
        self._seconds = resume.seconds if resume else 0.0
        self._started = 0.0

    def on_train_begin(self, logs=None):
        if self._resume is None:
            return
        for name in self._STOP_STATE:
            setattr(self._stop, name, self._resume.early_stopping[name])
        self._stop.best_weights = list(self._resume.best_weights) if self._resume.best_weights else None
        if self._plateau is not None:
            for name in self._PLATEAU_STATE:
                setattr(self._plateau, name, self._resume.plateau[name])

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs.setdefault("learning_rate", self._learning_rate)  # without a schedule Keras logs no rate
        for key in HISTORY_KEYS:
            self.history[key].append(float(logs[key]))
        seconds = time.perf_counter() - self._started
        self._seconds += seconds
        if self._on_epoch is not None:
            self._on_epoch(EpochLog(epoch=epoch + 1, max_epochs=self._max_epochs, loss=float(logs["loss"]),
                                    accuracy=float(logs["accuracy"]), val_accuracy=float(logs["val_accuracy"]),
                                    learning_rate=float(logs["learning_rate"]), seconds=seconds))
        if self._on_checkpoint is None:
            return
        best = self._stop.best_weights
        self._on_checkpoint(TrainCheckpoint(
            epochs_done=epoch + 1, seconds=self._seconds,
            history={k: tuple(v) for k, v in self.history.items()},
            early_stopping={n: _plain(getattr(self._stop, n)) for n in self._STOP_STATE},
            plateau={n: _plain(getattr(self._plateau, n)) for n in self._PLATEAU_STATE} if self._plateau else {},
            stopped=bool(self.model.stop_training),
            learning_rate=float(np.asarray(self.model.optimizer.learning_rate)),
            weights=tuple(self.model.get_weights()),
            optimizer=tuple(np.asarray(v) for v in self.model.optimizer.variables),
            best_weights=tuple(best) if best is not None else None,
        ))


def _plain(value):
    """A schedule counter as a JSON-able number (Keras keeps some as NumPy scalars)."""
    return None if value is None else float(value) if isinstance(value, (float, np.floating)) else int(value)


def accuracy(model: keras.Model, data: Dataset, *, batch_size: int = 256) -> float:
    """Top-1 accuracy of a logits (or probabilities) model on a dataset."""
    logits = model.predict(data.x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == data.y))
