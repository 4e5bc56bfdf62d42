"""The benchmark's model zoo (issue 5): definitions, and training to convergence on Fashion-MNIST.

Models (all functional, logits out, seeds fixed):

* ``fashion_vgg``: the VGG-style CNN of :mod:`bench.compress_fashion` (Conv-BN-ReLU ×4,
  two max-pools, a 3136→256 Dense head holding 92 % of the parameters);
* ``fashion_resnet``: a ResNet-20-style CNN for 28×28 inputs (basic blocks of two 3×3
  Conv-BN, residual ``Add``, 1×1 projection shortcuts where the shape changes; widths 16/32/64,
  ``blocks`` per stage; global average pooling, Dense classifier);
* ``fashion_mobilenetv2``: a MobileNetV2-style CNN (inverted residuals: 1×1 expand,
  3×3 depthwise, 1×1 project, ``Add`` when the shape is kept; ReLU6);
* ``resnet50``: ``keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classes=10)``,
  for the scale experiment only (never trained: pretrained weights need the network).

``python -m bench.zoo [--quick] [--models NAME ...] [--force]`` trains the Fashion models
(Adam 1e-3, batch 64, the rate ×0.1 after ``lr_patience`` epochs without a validation-accuracy
gain, early stopping after ``patience`` with the best weights restored) and writes ``bench/zoo/<name>-<mode>.keras`` with a sidecar
``.json`` training record. A stored parent is reused when its record matches the request
(same architecture, mode, seed, training plan and data fingerprints). Training writes
``<name>-<mode>.ckpt.npz`` after every epoch (weights, optimizer state, the schedules' counters):
a run that was stopped, or lost with its session, continues from there when started again with
the same request, and the checkpoint is removed once the parent is saved. The ``.keras`` files are outputs,
not git files (``bench/zoo/`` is git-ignored; ``bench/dvc.yaml`` tracks them with DVC).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from bench.common import ZOO_DIR, configure_tensorflow, load_splits, log

__all__ = [
    "ZOO", "TrainPlan", "TRAIN_PLANS", "vgg_fashion", "resnet_fashion", "mobilenetv2_fashion", "resnet50_scale",
    "build", "zoo_path", "load_or_train",
]


def vgg_fashion(input_shape=(28, 28, 1), num_classes: int = 10, *, seed: int = 0):
    """The VGG-style parent of :mod:`bench.compress_fashion` (large Dense head)."""
    from bench.compress_fashion import vgg_fashion as vgg

    return vgg(seed, input_shape=input_shape, num_classes=num_classes)


#: BatchNorm momentum of the ResNet and MobileNet models: 0.9 (PyTorch's 0.1) rather than Keras' 0.99, so the
#: moving statistics settle within one epoch of the quick mode's small training set.
BN_MOMENTUM = 0.9


def _conv_bn(x, filters, kernel, strides, name, init, *, activation=True, relu6=False):
    import keras

    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                            kernel_initializer=init, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    if activation:
        x = keras.layers.ReLU(max_value=6.0 if relu6 else None, name=f"{name}_relu")(x)
    return x


def resnet_fashion(input_shape=(28, 28, 1), num_classes: int = 10, *, blocks=(2, 2, 2), widths=(16, 32, 64),
                   seed: int = 0):
    """ResNet-style CNN: stem, ``len(widths)`` stages of ``blocks[i]`` basic blocks, GAP, Dense.

    Eligible layers: ``2·Σblocks + 1`` 3×3 convs, one 1×1 projection per stage change, the classifier.
    """
    import keras

    if len(blocks) != len(widths):
        raise ValueError(f"blocks and widths need one entry per stage. Received {blocks} and {widths}.")
    init = keras.initializers.HeNormal(seed=seed)
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(inputs, widths[0], 3, 1, "stem", init)
    for stage, (count, width) in enumerate(zip(blocks, widths), start=1):
        for block in range(1, count + 1):
            name = f"s{stage}b{block}"
            strides = 2 if (stage > 1 and block == 1) else 1
            y = _conv_bn(x, width, 3, strides, f"{name}_1", init)
            y = _conv_bn(y, width, 3, 1, f"{name}_2", init, activation=False)
            shortcut = x
            if strides != 1 or x.shape[-1] != width:
                shortcut = _conv_bn(x, width, 1, strides, f"{name}_proj", init, activation=False)
            x = keras.layers.Add(name=f"{name}_add")([shortcut, y])
            x = keras.layers.ReLU(name=f"{name}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
                                 name="logits")(x)
    return keras.Model(inputs, outputs, name=f"fashion_resnet_{sum(blocks)}b")


#: MobileNetV2 inverted-residual settings (expansion t, channels c, repeats n, first stride s) for 28×28.
MOBILENET_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 1), (6, 96, 1, 1))


def mobilenetv2_fashion(input_shape=(28, 28, 1), num_classes: int = 10, *, blocks=MOBILENET_BLOCKS,
                        stem: int = 32, head: int = 256, seed: int = 0):
    """MobileNetV2-style CNN: depthwise 3×3 between 1×1 expand/project convs, linear bottlenecks."""
    import keras

    init = keras.initializers.HeNormal(seed=seed)
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(inputs, stem, 3, 1, "stem", init, relu6=True)
    index = 0
    for t, channels, repeats, first_stride in blocks:
        for i in range(repeats):
            index += 1
            name = f"ir{index}"
            strides = first_stride if i == 0 else 1
            in_channels = x.shape[-1]
            y = x
            if t != 1:
                y = _conv_bn(y, in_channels * t, 1, 1, f"{name}_expand", init, relu6=True)
            y = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                                             depthwise_initializer=init, name=f"{name}_dw")(y)
            y = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(y)
            y = keras.layers.ReLU(max_value=6.0, name=f"{name}_dw_relu")(y)
            y = _conv_bn(y, channels, 1, 1, f"{name}_project", init, activation=False)
            if strides == 1 and in_channels == channels:
                y = keras.layers.Add(name=f"{name}_add")([x, y])
            x = y
    x = _conv_bn(x, head, 1, 1, "head", init, relu6=True)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(0.2, name="drop")(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
                                 name="logits")(x)
    return keras.Model(inputs, outputs, name="fashion_mobilenetv2")


def resnet50_scale(input_shape=(224, 224, 3), num_classes: int = 10, *, seed: int = 0):
    """``keras.applications.ResNet50`` with random weights (seeded), logits out, for the scale test."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.applications.ResNet50(weights=None, input_shape=tuple(input_shape), classes=num_classes,
                                       classifier_activation=None)


#: The trained zoo: name → builder(input_shape, num_classes, seed=...).
ZOO: dict[str, Callable] = {
    "fashion_vgg": vgg_fashion,
    "fashion_resnet": resnet_fashion,
    "fashion_mobilenetv2": mobilenetv2_fashion,
}


@dataclass(frozen=True)
class TrainPlan:
    """How a parent is trained: an epoch cap that early stopping should not reach, patience, and the
    rate schedule (×``lr_factor`` after ``lr_patience`` epochs without a validation gain; ``None``: constant).

    The schedule is what makes the parent converged for the fine-tune's rate (``FinetuneConfig``,
    1e-4): trained at a constant 1e-3, every parent gained 1.2-1.6 test points from the children's
    three fine-tune epochs alone, so a child's fine-tuned accuracy flattered its method.
    """

    max_epochs: int
    patience: int
    batch_size: int = 64
    learning_rate: float = 1e-3
    lr_patience: Optional[int] = None
    lr_factor: float = 0.1


def tiny_cnn(input_shape=(8, 8, 1), num_classes: int = 10, *, seed: int = 0):
    """The smoke test's model: :func:`lrf_core.zoo.digits_cnn` at width 8 (seconds to train)."""
    from lrf_core.zoo import digits_cnn

    return digits_cnn(tuple(input_shape), num_classes, width=8, seed=seed)


#: Not part of the zoo: models the tests and sweeps build by name.
EXTRA: dict[str, Callable] = {"tiny_cnn": tiny_cnn}


TRAIN_PLANS = {"full": TrainPlan(max_epochs=40, patience=5, lr_patience=2),
               "quick": TrainPlan(max_epochs=5, patience=2, lr_patience=1),
               "smoke": TrainPlan(max_epochs=3, patience=1)}


def build(name: str, input_shape, num_classes: int, *, seed: int = 0):
    builders = {**ZOO, **EXTRA}
    if name not in builders:
        raise KeyError(f"Unknown zoo model {name!r}. Known: {', '.join(builders)}.")
    return builders[name](tuple(input_shape), num_classes, seed=seed)


def zoo_path(name: str, mode: str, directory: Path = ZOO_DIR) -> Path:
    return Path(directory) / f"{name}-{mode}.keras"  # never clobbers compress_fashion.py's fashion_vgg.keras


def checkpoint_path(name: str, mode: str, directory: Path = ZOO_DIR) -> Path:
    return zoo_path(name, mode, directory).with_suffix(".ckpt.npz")


#: Array-name prefixes of a checkpoint file, one per array list of ``TrainCheckpoint``.
_CHECKPOINT_ARRAYS = ("weights", "optimizer", "best_weights")


def checkpoint_arrays(request: dict, checkpoint, resumed_at: Sequence[int] = ()) -> dict:
    """A ``TrainCheckpoint``, the request it trains and the epochs it was resumed after, as the arrays
    of one ``.npz`` (the state as JSON text)."""
    state = {"request": request, "epochs_done": checkpoint.epochs_done, "seconds": checkpoint.seconds,
             "history": {k: list(v) for k, v in checkpoint.history.items()}, "stopped": checkpoint.stopped,
             "learning_rate": checkpoint.learning_rate, "early_stopping": dict(checkpoint.early_stopping), "plateau": dict(checkpoint.plateau),
             "resumed_at": list(resumed_at)}
    arrays = {"state": np.array(json.dumps(state, sort_keys=True))}
    for prefix in _CHECKPOINT_ARRAYS:
        for i, array in enumerate(getattr(checkpoint, prefix) or ()):
            arrays[f"{prefix}/{i:04d}"] = np.asarray(array)
    return arrays


def checkpoint_from_arrays(arrays: dict, request: dict):
    """``(TrainCheckpoint, epochs it was resumed after)`` from :func:`checkpoint_arrays`'s arrays,
    or ``None`` when they belong to another request (another plan, seed, architecture or data)."""
    from lrf_core.zoo import TrainCheckpoint

    state = json.loads(str(arrays["state"]))
    if state["request"] != request:
        return None
    lists = {p: tuple(arrays[k] for k in sorted(arrays) if k.startswith(f"{p}/")) for p in _CHECKPOINT_ARRAYS}
    checkpoint = TrainCheckpoint(
        epochs_done=state["epochs_done"], seconds=state["seconds"],
        history={k: tuple(v) for k, v in state["history"].items()}, stopped=state["stopped"],
        learning_rate=state["learning_rate"], early_stopping=state["early_stopping"], plateau=state["plateau"],
        weights=lists["weights"], optimizer=lists["optimizer"], best_weights=lists["best_weights"] or None,
    )
    return checkpoint, tuple(state["resumed_at"])


def load_or_train(name: str, splits, *, mode: str = "full", seed: int = 0, directory: Path = ZOO_DIR,
                  force: bool = False, plan: Optional[TrainPlan] = None):
    """The trained parent ``name`` and its training record (dict); trains and saves when needed."""
    import keras  # noqa: F401  (before lrf_core model I/O)

    from lrf_core.data import dataset_fingerprint
    from lrf_core.graph import model_cost
    from lrf_core.model_io import load_model, save_model_atomic
    from lrf_core.zoo import accuracy, train_classifier
    from tasks.files import load_npz, save_npz_atomic, write_json_atomic

    plan = plan or TRAIN_PLANS[mode]
    path = zoo_path(name, mode, directory)
    sidecar = path.with_suffix(".json")
    model = build(name, splits.train.sample_shape, splits.train.num_classes, seed=seed)
    layers = [(type(layer).__name__, {k: v for k, v in layer.get_config().items() if k != "name"}) for layer in model.layers]
    architecture = hashlib.sha256(json.dumps(layers, sort_keys=True, default=str).encode()).hexdigest()  # names vary
    request = {"model": name, "mode": mode, "seed": seed, "architecture": architecture,
               "train": dataset_fingerprint(splits.train), "val": dataset_fingerprint(splits.val), "plan": asdict(plan)}
    if not force and path.exists() and sidecar.exists():
        record = json.loads(sidecar.read_text())
        if record.get("request") == request:
            log(f"zoo: reusing {path.name} (trained {record['epochs']} epochs, test {record['test_accuracy']:.4f})")
            return load_model(path), record
    ckpt_path = checkpoint_path(name, mode, directory)
    resume, resumed_at = None, ()
    if not force and ckpt_path.exists():
        saved = checkpoint_from_arrays(load_npz(ckpt_path), request)
        if saved is None:
            log(f"zoo: {ckpt_path.name} is from another request (plan, seed, architecture or data): starting over")
        else:
            resume, resumed_at = saved[0], (*saved[1], saved[0].epochs_done)
            log(f"zoo: resuming {name} after epoch {resume.epochs_done} from {ckpt_path.name} "
                f"(best val {max(resume.history['val_accuracy']):.4f} so far, rate {resume.learning_rate:.0e})")
    if resume is None:
        log(f"zoo: training {name} ({model.count_params():,} params) on {len(splits.train)} images, "
            f"≤ {plan.max_epochs} epochs, patience {plan.patience}"
            + (f", rate ×{plan.lr_factor} after {plan.lr_patience} epochs without a gain" if plan.lr_patience else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    trained = train_classifier(
        model, splits.train, splits.val, epochs=plan.max_epochs, batch_size=plan.batch_size,
        learning_rate=plan.learning_rate, seed=seed, patience=plan.patience, lr_patience=plan.lr_patience,
        lr_factor=plan.lr_factor, resume=resume,
        on_epoch=lambda e: log(f"zoo: {name} epoch {e.epoch}/{e.max_epochs}: loss {e.loss:.4f}, "
                               f"val {e.val_accuracy:.4f}, rate {e.learning_rate:.0e}, {e.seconds:.0f} s"),
        on_checkpoint=lambda c: save_npz_atomic(ckpt_path, checkpoint_arrays(request, c, resumed_at)))
    seconds = time.perf_counter() - started + (resume.seconds if resume else 0.0)
    cost = model_cost(model)
    record = {
        "request": request,
        "name": name,
        "path": path.name,
        "params": cost.params,
        "macs": cost.macs,
        "epochs": trained.epochs,
        "stopped_early": trained.epochs < plan.max_epochs,
        "kept_epoch": trained.kept_epoch,
        "learning_rates": list(trained.learning_rates),
        "val_accuracy_history": list(trained.val_accuracy_history),  # the convergence evidence, per epoch
        "train_seconds": seconds,  # over every piece of a resumed run
        "resumed_after_epochs": list(resumed_at),
        "seconds_per_epoch": seconds / max(trained.epochs, 1),
        "train_accuracy": trained.train_accuracy,
        "val_accuracy": trained.val_accuracy,
        "test_accuracy": accuracy(model, splits.test),
        "train_examples": len(splits.train),
    }
    save_model_atomic(model, path)
    write_json_atomic(sidecar, record)
    ckpt_path.unlink(missing_ok=True)  # the parent is saved: nothing left to resume
    log(f"zoo: {name} {record['epochs']} epochs in {seconds:.0f} s, val {record['val_accuracy']:.4f}, "
        f"test {record['test_accuracy']:.4f}{'' if record['stopped_early'] else ' (epoch cap reached)'}")
    return model, record


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small training subset, few epochs")
    parser.add_argument("--models", nargs="+", default=list(ZOO), choices=list(ZOO))
    parser.add_argument("--force", action="store_true", help="retrain even if a matching parent is stored")
    args = parser.parse_args(argv)
    from bench.harness import MODES

    mode = MODES["quick" if args.quick else "full"]
    configure_tensorflow()
    splits = load_splits(train_examples=mode.train_examples, test_examples=mode.test_examples)
    for name in args.models:
        load_or_train(name, splits, mode=mode.name, force=args.force)


if __name__ == "__main__":
    main()
