"""Measured inference latency of a set of saved models, in a fresh process with fixed threads.

``python -m bench.timing MANIFEST.json OUT.json``. The manifest lists models (``id``,
``path``), the per-example ``input_shape``, ``threads``, ``batches``, repetitions, whether
to time TFLite too, and optional ``blocks`` to profile (a factorized layer's chain against
the dense layer it replaced).

Why a separate process: TensorFlow's thread pools are fixed when it starts, and the harness
trains with every core; timing runs with ``threads`` intra-op threads and one inter-op
thread. Protocol (issue 5, "latency done right"):

* **TF**: :func:`lrf_core.latency.measure_model`: every model wrapped in ``tf.function``,
  warmed up, then all models of one zoo parent called **round-robin** (parent, the
  same-structure control, every child) on one fixed input, median of ``repeats`` calls;
* **TFLite**: each model converted once (``TFLiteConverter.from_keras_model``, default
  float32, no optimizations), one ``Interpreter(num_threads=threads)`` per model and batch,
  warmed up, then invoked round-robin the same way;
* **blocks**: :func:`lrf_core.latency.measure_block` of the dense layer and of its chain,
  on the layer's input shape, batch 1 (which layer types lose time).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
import warnings
from pathlib import Path

from bench.common import configure_tensorflow, write_result


def _tflite_interpreters(models: dict, batch: int, threads: int):
    import numpy as np
    import tensorflow as tf

    out = {}
    for key, model in models.items():
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
            interpreter = tf.lite.Interpreter(model_content=content, num_threads=threads)
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], (batch, *detail["shape"][1:]))
        interpreter.allocate_tensors()
        x = np.random.default_rng(0).standard_normal((batch, *detail["shape"][1:])).astype(np.float32)
        interpreter.set_tensor(detail["index"], x)
        out[key] = (interpreter, len(content))
    return out


def time_tflite(models: dict, batch: int, threads: int, warmup: int, repeats: int) -> dict:
    """Median/p10/p90 seconds per invoke of each model's TFLite interpreter, round-robin."""
    from lrf_core.latency import LatencyStats

    interpreters = _tflite_interpreters(models, batch, threads)
    keys = list(interpreters)
    for key in keys:
        for _ in range(warmup):
            interpreters[key][0].invoke()
    times = {key: [] for key in keys}
    for rep in range(repeats):
        for j in range(len(keys)):
            key = keys[(rep + j) % len(keys)]
            start = time.perf_counter()
            interpreters[key][0].invoke()
            times[key].append(time.perf_counter() - start)
    result = {}
    for key in keys:
        stats = LatencyStats.from_times(times[key], batch)
        result[key] = {"median_s": stats.median_s, "p10_s": stats.p10_s, "p90_s": stats.p90_s,
                       "repeats": stats.repeats, "tflite_bytes": interpreters[key][1]}
    return result


def time_blocks(blocks: list, threads: int, warmup: int, repeats: int) -> list:
    """Each block: ``{"layer", "model", "input_shape", "dense": [layer config], "chain": [layer configs]}``."""
    from lrf_core.latency import TimingConfig, measure_block

    config = TimingConfig(batch=1, warmup=warmup, repeats=repeats, threads=threads)
    rows = []
    for block in blocks:
        dense = measure_block(block["dense"], block["input_shape"], config)
        chain = measure_block(block["chain"], block["input_shape"], config)
        rows.append({k: block[k] for k in ("model", "variant", "layer", "type", "method", "rank", "macs_before",
                                            "macs_after") if k in block}
                    | {"dense_s": dense.median_s, "chain_s": chain.median_s, "chain_over_dense": chain.median_s / dense.median_s})
    return rows


def run(manifest: dict) -> dict:
    from lrf_core.latency import TimingConfig, measure_model
    from lrf_core.model_io import load_model

    threads = int(manifest["threads"])
    models = {entry["id"]: load_model(entry["path"]) for entry in manifest["models"]}
    shape = tuple(manifest["input_shape"])
    out: dict = {"threads": threads, "tf": {}, "tflite": {}, "blocks": []}
    for batch in manifest["batches"]:
        reps = manifest["repeats"][str(batch)]
        config = TimingConfig(batch=batch, warmup=manifest.get("warmup", 5), repeats=reps, threads=threads)
        stats = measure_model(list(models.values()), shape, config)
        out["tf"][str(batch)] = {key: {"median_s": s.median_s, "p10_s": s.p10_s, "p90_s": s.p90_s, "repeats": s.repeats}
                                 for key, s in zip(models, stats)}
    tflite_ids = manifest.get("tflite_ids")
    if tflite_ids:
        chosen = {key: models[key] for key in tflite_ids if key in models}
        for batch in manifest["batches"]:
            reps = manifest["repeats"][str(batch)]
            try:
                out["tflite"][str(batch)] = time_tflite(chosen, batch, threads, manifest.get("warmup", 5), reps)
            except Exception as error:  # a converter failure is a result, not a crash of the benchmark
                out["tflite"][str(batch)] = {"error": f"{type(error).__name__}: {error}"[:500]}
    if manifest.get("blocks"):
        out["blocks"] = time_blocks(manifest["blocks"], threads, manifest.get("warmup", 5), manifest["repeats"]["1"])
    return out


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.exit("usage: python -m bench.timing MANIFEST.json OUT.json")
    manifest = json.loads(Path(argv[0]).read_text())
    configure_tensorflow(int(manifest["threads"]), deterministic=False)
    started = time.perf_counter()
    out = run(manifest)
    out["seconds"] = time.perf_counter() - started
    write_result(Path(argv[1]), out)


if __name__ == "__main__":
    main()
