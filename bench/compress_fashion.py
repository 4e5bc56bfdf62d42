"""Benchmark (issue #3): lrf compress on a VGG-style CNN trained on Fashion-MNIST.

Compares, under the same accuracy budget (≤ 1 point on validation):
mixed methods (default), each uniform conv method, and sequential vs layerwise selection.
For each: params and MACs kept, accuracy drop before and after the one-shot fine-tune
(held-out test split), search time (calibration + candidates + allocation) against one
fine-tune epoch.

Data: Debian's `dataset-fashion-mnist` (IDX files under /usr/share/datasets/fashion-mnist).
Writes bench/results/compress_fashion.json. ``--quick`` trains on 20k images and
fine-tunes 2 epochs (for a 2-core machine in well under an hour).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FASHION = "/usr/share/datasets/fashion-mnist"
RESULTS = Path(__file__).parent / "results" / "compress_fashion.json"
PARENT = Path(__file__).parent / "zoo" / "fashion_vgg.keras"


def vgg_fashion(seed: int = 0, *, input_shape=(28, 28, 1), num_classes: int = 10):
    """VGG-style CNN: Conv-BN-ReLU ×2, pool, ×2, pool, Dense(256) head (the bench zoo's ``fashion_vgg``)."""
    import keras

    init = keras.initializers.HeNormal(seed=seed)
    inputs = keras.Input(tuple(input_shape), name="image")
    x = inputs
    for block, width in enumerate((32, 64)):
        for i in range(2):
            x = keras.layers.Conv2D(width, 3, padding="same", kernel_initializer=init, name=f"conv{block + 1}_{i + 1}")(x)
            x = keras.layers.BatchNormalization(name=f"bn{block + 1}_{i + 1}")(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(256, activation="relu", kernel_initializer=init, name="fc1")(x)
    x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="fashion_vgg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if not Path(FASHION).exists():
        sys.exit(f"Fashion-MNIST is not installed: run (as root) `apt-get update && apt-get install -y "
                 f"dataset-fashion-mnist`, which puts the IDX files under {FASHION}.")
    import keras
    import tensorflow as tf

    from lrf_core.data import load_dataset, split_dataset, stratified_sample
    from lrf_core.finetune import FinetuneConfig
    from lrf_core.graph import model_cost
    from lrf_core.model_io import save_model_atomic
    from lrf_core.search.compress import CompressConfig, CompressData, compress
    from lrf_core.zoo import accuracy, train_classifier

    tf.config.experimental.enable_op_determinism()
    train_all = load_dataset(f"idx:{FASHION}", split="train")
    test = load_dataset(f"idx:{FASHION}", split="test")
    if args.quick:
        train_all = stratified_sample(train_all, 20000, seed=0)
    train, val = split_dataset(train_all, (0.9, 0.1), seed=0)
    started = time.perf_counter()
    parent = vgg_fashion()
    trained = train_classifier(parent, train, val, epochs=30, seed=0, patience=3)
    train_s = time.perf_counter() - started
    PARENT.parent.mkdir(parents=True, exist_ok=True)
    save_model_atomic(parent, PARENT)
    parent_test = accuracy(parent, test)
    print(f"parent: {trained.epochs} epochs in {train_s:.0f} s, val {trained.val_accuracy:.4f}, test {parent_test:.4f}", flush=True)

    data = CompressData(stratified_sample(train, 512, seed=0), train, val, test)
    ft = FinetuneConfig(epochs=2 if args.quick else 3)
    svd_dense = ("svd",)
    variants = {
        "mixed": CompressConfig(max_drop=1.0, finetune=ft),
        "mixed_sequential": CompressConfig(max_drop=1.0, finetune=ft, selection="sequential"),
        **{f"uniform_{m}": CompressConfig(max_drop=1.0, finetune=ft, methods={"conv2d": (m,), "dense": svd_dense})
           for m in ("svd", "tucker2", "cp", "spatial")},
    }
    rows = []
    for name, config in variants.items():
        t0 = time.perf_counter()
        result = compress(parent, data, config)
        rep = result.report
        phases = rep["phases_s"]
        search_s = sum(phases.get(k, 0.0) for k in ("calibration", "candidates", "allocation"))
        ft_epoch_s = rep["finetune"]["seconds_per_epoch"] or float("nan")
        pre_ft_val = rep["finetune"]["val_accuracy_before"]
        row = {
            "variant": name,
            "params_kept": rep["child"]["params"] / rep["parent"]["params"],
            "macs_kept": rep["child"]["macs"] / rep["parent"]["macs"],
            "val_drop_before_finetune": 100 * (rep["parent"]["val_accuracy"] - pre_ft_val),
            "val_drop_after_finetune": 100 * (rep["parent"]["val_accuracy"] - rep["child"]["val_accuracy"]),
            "test_drop_after_finetune": 100 * (rep["parent"]["test_accuracy"] - rep["child"]["test_accuracy"]),
            "search_s": search_s, "finetune_epoch_s": ft_epoch_s, "search_over_epoch": search_s / ft_epoch_s,
            "total_s": time.perf_counter() - t0,
            "methods": sorted({r["method"] for r in rep["layers"] if r["status"] == "factorized"}),
            "layers": [{k: r.get(k) for k in ("layer", "status", "method", "rank", "params_before", "params_after")}
                       for r in rep["layers"]],
            "selection_comparison": rep.get("selection_comparison"),
            "targets_met": result.met,
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "layers"}), flush=True)
    out = {
        "benchmark": "compress_fashion", "quick": args.quick,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "tensorflow": tf.__version__, "keras": keras.__version__},
        "parent": {"epochs": trained.epochs, "train_s": train_s, "val_accuracy": trained.val_accuracy,
                   "test_accuracy": parent_test, "params": model_cost(parent).params, "macs": model_cost(parent).macs,
                   "train_examples": len(train)},
        "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
