"""Shared plumbing of the benchmarks: environment, machine record, memory probes, data, result files.

Import this module before TensorFlow: :func:`configure_tensorflow` must run before
TensorFlow executes anything, because thread settings cannot change afterwards.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
ZOO_DIR = BENCH / "zoo"
RESULTS_DIR = BENCH / "results"
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_URI = f"idx:{FASHION_DIR}"
FASHION_MISSING = (
    f"Fashion-MNIST is not installed: run (as root) `apt-get update && apt-get install -y dataset-fashion-mnist`, "
    f"which puts the IDX files under {FASHION_DIR}; or pass --data npz:PATH / idx:DIR."
)

for _key, _value in {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}.items():
    os.environ.setdefault(_key, _value)


def configure_tensorflow(threads: Optional[int] = None, *, deterministic: bool = True) -> None:
    """Fix intra-op threads (inter-op 1) and op determinism; call before TensorFlow runs anything."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notices from repeated predict() on new models
    if threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gb() -> Optional[float]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> Optional[str]:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "lrf_core"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10)
        if head.returncode == 0:
            return head.stdout.strip() + ("+dirty(lrf_core)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def machine_info(threads: Optional[int] = None) -> dict:
    """Where and with what a result was measured (goes into every result file)."""
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in ("tensorflow", "keras", "numpy", "scipy", "tensorly", "scikit-learn", "matplotlib", "lrflow"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gb": _mem_total_gb(),
        "load_average_at_start": load,
        "threads": threads,
        "git_commit": _git_commit(),
        "packages": packages,
    }


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def max_rss_bytes() -> int:
    """The process's lifetime peak RSS (``ru_maxrss``; KiB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class PeakRSS:
    """Peak RSS while a block runs, sampled every ``interval`` s in a thread.

    ``ru_maxrss`` only ever grows over a process's life, so it cannot separate two runs in
    one process; sampling can. Attributes after exit: ``start``, ``peak`` (bytes, whole
    process) and ``delta`` (peak above the RSS at entry), ``seconds``.
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.start = self.peak = self.delta = 0
        self.seconds = 0.0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = rss_bytes()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.delta = self.peak - self.start
        self.seconds = time.perf_counter() - self._t0

    def as_dict(self) -> dict:
        return {"peak_rss_mb": round(self.peak / 2**20, 1), "peak_rss_delta_mb": round(self.delta / 2**20, 1)}


def _busy_cpu_seconds() -> Optional[float]:
    """CPU time the whole machine spent busy since boot (/proc/stat: all but idle and iowait)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class OtherLoad:
    """How many cores other processes kept busy, on average, while a block ran.

    The load average cannot tell the benchmark's own threads from anyone else's; this can:
    machine busy time minus this process's (and its waited-for children's) CPU time, over
    the wall time. On a shared machine a search timed while something else used a core is
    slower than it would be alone; the report flags such rows. ``cores`` is None where
    /proc/stat is unavailable. Children count as "own" only once reaped (``RUSAGE_CHILDREN``):
    the timing subprocess is; a Dask worker still running would count as other load.
    """

    cores: Optional[float] = None

    def __enter__(self) -> "OtherLoad":
        self._busy, self._own, self._t0 = _busy_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        busy, wall = _busy_cpu_seconds(), time.perf_counter() - self._t0
        if busy is not None and self._busy is not None and wall > 0:
            other = (busy - self._busy) - (_own_cpu_seconds() - self._own)
            self.cores = round(max(other, 0.0) / wall, 2)


@dataclass(frozen=True)
class Splits:
    """Train (fine-tune and parent training), validation (early stopping), test (the gate)."""

    train: Any
    val: Any
    test: Any
    uri: str


def load_splits(uri: str = FASHION_URI, *, train_examples: Optional[int] = None, test_examples: Optional[int] = None,
                val_fraction: float = 0.1, seed: int = 0) -> Splits:
    """Stratified train/val split of the training data (optionally subsampled) and the test split."""
    from lrf_core.data import load_dataset, split_dataset, stratified_sample

    if uri == FASHION_URI and not Path(FASHION_DIR).is_dir():
        sys.exit(FASHION_MISSING)
    train_all = load_dataset(uri, split="train")
    test = load_dataset(uri, split="test")
    if train_examples is not None:
        train_all = stratified_sample(train_all, train_examples, seed=seed)
    if test_examples is not None:
        test = stratified_sample(test, test_examples, seed=seed)
    train, val = split_dataset(train_all, (1.0 - val_fraction, val_fraction), seed=seed)
    return Splits(train, val, test, uri)


def write_result(path: Path, payload: dict) -> Path:
    """Write one experiment's JSON atomically (sorted keys, NumPy scalars converted)."""
    from tasks.files import write_json_atomic

    write_json_atomic(Path(path), payload)
    return Path(path)


def log(message: str) -> None:
    """Progress line on stderr with a wall-clock stamp (benchmarks are long; library code logs instead)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
