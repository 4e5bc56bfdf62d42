"""Latency timed at the serving thread count, in a worker process (``gate.latency_threads``).

TensorFlow fixes its thread pools when it starts, and the pipeline's process has long been
running (training, calibration, fitting) at the default of one intra-op thread per core.
Timings there answer "how fast on this whole machine", not "how fast on the N threads the
model is served with": the zoo's VGG child ran 1.29x its parent at 2 threads and 0.98x at
1 (bench/REPORT.md). So when the parameters name a thread count, the search's blocks, the
latency guard and the gate are timed by ``python -m tasks.latency_worker --threads N``
(intra-op N, inter-op 1), started once per step and fed one JSON request per line:

* ``{"op": "hello"}`` → the thread settings the worker runs with;
* ``{"op": "block" | "relative", ...}`` → :func:`lrf_core.latency.measure_block` /
  :func:`~lrf_core.latency.measure_relative` of layer specs (JSON);
* ``{"op": "compare", "reference": path, "models": [paths], ...}`` →
  :func:`~lrf_core.latency.measure_ratios` of saved ``.keras`` models.

Replies are one JSON line on the worker's original stdout (anything else the worker prints
goes to its stderr log); an ``{"error": ...}`` reply is raised as :class:`LRFError`.
:class:`WorkerRunner` is the pipeline's side: a :class:`lrf_core.latency.TimingRunner`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from lrf_core.errors import LRFError

__all__ = ["WorkerRunner", "latency_functions", "main"]


def _layers(block) -> list[dict]:
    from lrf_core.latency import block_layer_data

    return [block_layer_data(layer) for layer in block]


class WorkerRunner:
    """Runs timings in ``python -m tasks.latency_worker --threads N``; use as a context manager
    (the worker stops on exit). Models to compare are saved under a temporary directory."""

    def __init__(self, threads: int, *, log_path: Optional[Path] = None):
        if int(threads) < 1:
            raise LRFError(f"latency_threads must be >= 1 (the serving intra-op thread count). Received {threads}.")
        self.threads = int(threads)
        self._tmp = tempfile.TemporaryDirectory(prefix="lrf-latency-")
        self._log_path = Path(log_path) if log_path else Path(self._tmp.name) / "worker.log"
        self._proc: Optional[subprocess.Popen] = None
        self._saved: dict[int, tuple[Any, str]] = {}  # reference: id(model) → (model kept alive, path)

    # -- process ---------------------------------------------------------------------
    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
        self._log = open(self._log_path, "ab")
        self._proc = subprocess.Popen([sys.executable, "-m", "tasks.latency_worker", "--threads", str(self.threads)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env,
                                      cwd=Path(__file__).resolve().parent.parent)
        hello = self._request({"op": "hello"})
        if hello.get("intra_op") != self.threads:
            raise LRFError(f"The latency worker runs with {hello.get('intra_op')} intra-op threads, not the "
                           f"{self.threads} asked for; see {self._log_path}.")
        return self._proc

    def _request(self, payload: dict) -> dict:
        proc = self._proc or self._start()
        try:
            proc.stdin.write((json.dumps(payload) + "\n").encode())
            proc.stdin.flush()
            line = proc.stdout.readline()
        except (BrokenPipeError, OSError) as exc:
            line, err = b"", exc
        else:
            err = None
        if not line:
            raise LRFError(f"The latency worker (--threads {self.threads}) stopped without answering "
                           f"{payload['op']!r}{f' ({err})' if err else ''}; its log: {self._log_path}.")
        reply = json.loads(line)
        if "error" in reply:
            raise LRFError(f"The latency worker could not time {payload['op']!r}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(OSError):  # a worker that died leaves the pipe broken
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
            self._log.close()
        self._saved.clear()
        self._tmp.cleanup()

    def __enter__(self) -> "WorkerRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- TimingRunner ----------------------------------------------------------------
    def _reference_path(self, model) -> str:
        """The reference (the parent) is saved once; the guard compares many children against it."""
        if id(model) not in self._saved:
            path = str(Path(self._tmp.name) / f"model-{len(self._saved)}.keras")
            model.save(path)
            self._saved[id(model)] = (model, path)
        return self._saved[id(model)][1]

    def block(self, specs, input_shape, config):
        from lrf_core.latency import LatencyStats

        reply = self._request({"op": "block", "specs": _layers(specs),
                               "input_shape": list(input_shape), "config": dataclasses.asdict(config)})
        return LatencyStats(**reply["stats"])

    def relative(self, dense, blocks, input_shape, config):
        return self._request({"op": "relative", "dense": _layers(dense), "blocks": [_layers(b) for b in blocks],
                              "input_shape": list(input_shape), "config": dataclasses.asdict(config)})["ratios"]

    def compare(self, reference, models, input_shape, config, limit, max_rounds):
        from lrf_core.latency import LatencyStats
        from lrf_core.paired_ratio import RatioEstimate

        paths = [str(Path(self._tmp.name) / f"compared-{i}.keras") for i in range(len(models))]
        try:  # children are saved for this request only (a ResNet-50 child is ~100 MB)
            for model, path in zip(models, paths):
                model.save(path)
            reply = self._request({"op": "compare", "reference": self._reference_path(reference), "models": paths,
                                   "input_shape": list(input_shape), "config": dataclasses.asdict(config),
                                   "limit": limit, "max_rounds": max_rounds})
        finally:
            for path in paths:
                Path(path).unlink(missing_ok=True)
        return LatencyStats(**reply["stats"]), [RatioEstimate(**e) for e in reply["estimates"]]


@contextlib.contextmanager
def latency_functions(input_shape: Sequence[int], batch: int, threads: Optional[int] = None) -> Iterator[tuple]:
    """``(block_fn, models_fn)`` of :func:`lrf_core.latency.default_latency_functions` at the
    serving ``batch``: timed in this process when ``threads`` is None, else in a worker
    started with ``threads`` intra-op threads and stopped when the block exits."""
    from lrf_core.latency import default_latency_functions

    if threads is None:
        yield default_latency_functions(input_shape, batch)
        return
    with WorkerRunner(threads) as runner:
        yield default_latency_functions(input_shape, batch, threads=threads, runner=runner)


# -- the worker ------------------------------------------------------------------------
def _serve(request: dict, references: dict) -> dict:
    """One request's reply; ``references`` holds the reference models loaded so far, by path
    (the client saves the parent once and the guard compares every child against it)."""
    import tensorflow as tf

    from lrf_core import latency
    from lrf_core.model_io import load_model

    op = request.get("op")
    if op == "hello":
        return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
    if op not in ("block", "relative", "compare"):
        raise LRFError(f"unknown op {op!r}: expected hello, block, relative or compare")
    config = latency.TimingConfig(**request["config"])
    shape = tuple(request["input_shape"])
    if op == "block":
        return {"stats": dataclasses.asdict(latency.measure_block(request["specs"], shape, config))}
    if op == "relative":
        return {"ratios": latency.measure_relative(request["dense"], request["blocks"], shape, config)}
    if request["reference"] not in references:
        references[request["reference"]] = load_model(request["reference"])
    reference, models = references[request["reference"]], [load_model(p) for p in request["models"]]
    stats, estimates = latency.measure_ratios(reference, models, shape, config, limit=request.get("limit"),
                                              max_rounds=request.get("max_rounds"))
    return {"stats": dataclasses.asdict(stats), "estimates": [dataclasses.asdict(e) for e in estimates]}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, required=True, help="intra-op threads (inter-op: 1)")
    args = parser.parse_args(argv)
    replies = os.fdopen(os.dup(1), "w")  # only replies go to the pipe: whatever else writes to fd 1
    os.dup2(2, 1)  # (TensorFlow's C++ side, a stray print) lands in the worker's log
    sys.stdout = sys.stderr
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    references: dict = {}
    for line in sys.stdin:
        try:
            reply = _serve(json.loads(line), references)
        except Exception as exc:  # every failure goes back to the caller, named; the worker keeps serving
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
