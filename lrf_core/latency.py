"""Measured latency of factor chains and models (METHODS.md §3 item 7, beyond the papers).

The search must never choose a factorization that is slower than the dense layer on the
target runtime. MACs do not tell (a rank-``r`` chain of three small convolutions can be
slower than one big one), so each distinct block is timed once and cached by what decides
its speed: the layer classes and configs (names, weights and initializers excluded), the
input shape, the batch size, the thread count and the runtime. Two identical blocks in
different layers share one measurement.

Timing protocol (:func:`measure_block`, :func:`measure_model`): the forward pass is wrapped
in ``tf.function(jit_compile=False, reduce_retracing=True)``, run ``warmup`` times untimed,
then ``repeats`` times on one fixed random input, each timed call ending in ``.numpy()``
so the device work is inside the timed region. Reported: median, 10th and 90th percentile.

Threads: library code never changes TensorFlow's global thread settings. Callers (the
pipeline task or the CLI) fix them before TensorFlow runs anything, e.g.
``tf.config.threading.set_intra_op_parallelism_threads(n)``, and pass the same ``n`` as
:attr:`TimingConfig.threads` so it is recorded in every cache key; a mismatch with the
live setting is logged as a warning.

Timings use the default float32 dtype policy; the caches are plain mappings the pipeline
persists as JSON (:meth:`LatencyCache.to_dict` / :meth:`LatencyCache.from_dict`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterator, Mapping, Optional, Protocol, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

from lrf_core.decompose.base import LayerSpec
from lrf_core.errors import LRFError
from lrf_core.keras_chain import ALLOWED_LAYERS, instantiate_chain
from lrf_core.paired_ratio import RatioEstimate

__all__ = [
    "RUNTIMES",
    "LatencyStats",
    "TimingConfig",
    "LatencyCache",
    "LatencyFn",
    "block_key",
    "block_layer_data",
    "measure_block",
    "measure_dense_layer",
    "measure_model",
    "measure_relative",
    "measure_ratios",
    "ModelLatency",
    "TimingRunner",
    "InProcessRunner",
    "ModelLatencyFn",
    "compare_models",
    "MeasuredLatency",
    "measured_latency_fn",
    "default_latency_functions",
]

logger = logging.getLogger(__name__)

#: Supported runtimes → the TensorFlow device the timed ops are placed on.
RUNTIMES: dict[str, str] = {"tf-cpu": "/CPU:0", "tf-gpu": "/GPU:0"}

#: ``latency_fn(specs, input_shape) -> seconds``: what the search accepts (tests inject fakes).
LatencyFn = Callable[[Sequence[LayerSpec], tuple[int, ...]], float]

#: Config keys that do not change the forward cost; dropped from keys and timing layers.
_IRRELEVANT_KEYS = ("name", "dtype", "trainable", "seed")
_IRRELEVANT_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
_KEY_VERSION = 1


@dataclass(frozen=True)
class LatencyStats:
    """Wall-clock time of one forward pass over a batch, in seconds.

    Attributes
    ----------
    median_s, p10_s, p90_s : median and 10th/90th percentiles over ``repeats`` timed calls
    repeats : number of timed calls
    batch : batch size of each call (per-image time is ``median_s / batch``)
    """

    median_s: float
    p10_s: float
    p90_s: float
    repeats: int
    batch: int

    def __post_init__(self) -> None:
        values = (self.p10_s, self.median_s, self.p90_s)
        if not all(np.isfinite(v) and v >= 0 for v in values) or not self.p10_s <= self.median_s <= self.p90_s:
            raise LRFError(
                "LatencyStats expects finite times with 0 <= p10_s <= median_s <= p90_s. "
                f"Received p10_s={self.p10_s}, median_s={self.median_s}, p90_s={self.p90_s}."
            )
        if self.repeats < 1 or self.batch < 1:
            raise LRFError(
                f"LatencyStats expects repeats >= 1 and batch >= 1. Received repeats={self.repeats}, "
                f"batch={self.batch}."
            )

    @staticmethod
    def from_times(times: Sequence[float], batch: int) -> "LatencyStats":
        """Median and 10/90th percentiles (linear interpolation) of per-call times."""
        arr = np.asarray(times, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise LRFError(f"LatencyStats.from_times needs at least one time. Received {arr.shape}.")
        p10, median, p90 = np.percentile(arr, [10, 50, 90])
        # percentiles of one sorted sample are ordered; min/max only guard the last ulp
        return LatencyStats(
            median_s=float(median),
            p10_s=float(min(p10, median)),
            p90_s=float(max(p90, median)),
            repeats=int(arr.size),
            batch=int(batch),
        )


@dataclass(frozen=True)
class TimingConfig:
    """How to time (part of every cache key except ``warmup`` and ``repeats``).

    Attributes
    ----------
    batch : batch size of the timed input (1 = single-image latency)
    warmup : untimed calls before timing (tracing, allocator, oneDNN primitive caches)
    repeats : timed calls; the stats are over these
    threads : intra-op thread count the caller fixed (None = TensorFlow default). Recorded
        only: library code does not change TensorFlow's global thread settings.
    runtime : one of :data:`RUNTIMES`
    """

    batch: int = 1
    warmup: int = 5
    repeats: int = 30
    threads: Optional[int] = None
    runtime: str = "tf-cpu"

    def __post_init__(self) -> None:
        if self.batch < 1 or self.warmup < 0 or self.repeats < 1:
            raise LRFError(
                "TimingConfig expects batch >= 1, warmup >= 0 and repeats >= 1. Received "
                f"batch={self.batch}, warmup={self.warmup}, repeats={self.repeats}."
            )
        if self.threads is not None and self.threads < 1:
            raise LRFError(f"TimingConfig.threads must be None or >= 1. Received {self.threads}.")
        if self.runtime not in RUNTIMES:
            raise LRFError(
                f"Unknown latency runtime {self.runtime!r}. Allowed: {', '.join(RUNTIMES)}."
            )


class LatencyCache:
    """Measured blocks: :func:`block_key` → :class:`LatencyStats` (no file I/O here).

    Persist with ``json.dumps(cache.to_dict())`` and restore with
    ``LatencyCache.from_dict(json.loads(text))``.
    """

    def __init__(self, entries: Optional[Mapping[str, LatencyStats]] = None) -> None:
        self._entries: dict[str, LatencyStats] = {}
        for key, stats in (entries or {}).items():
            self.put(key, stats)

    def get(self, key: str) -> Optional[LatencyStats]:
        """The stats stored under ``key``, or None."""
        return self._entries.get(key)

    def put(self, key: str, stats: LatencyStats) -> None:
        """Store (or replace) the stats of ``key``."""
        if not isinstance(key, str) or not isinstance(stats, LatencyStats):
            raise LRFError(
                "LatencyCache.put expects a str key and a LatencyStats value. "
                f"Received {type(key).__name__} and {type(stats).__name__}."
            )
        self._entries[key] = stats

    def get_or_measure(self, key: str, measure: Callable[[], LatencyStats]) -> LatencyStats:
        """The stats under ``key``; on a miss ``measure()`` is called once and stored."""
        hit = self._entries.get(key)
        if hit is None:
            hit = measure()
            self.put(key, hit)
        return hit

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-ready ``{key: {median_s, p10_s, p90_s, repeats, batch}}``, keys sorted."""
        return {key: asdict(self._entries[key]) for key in sorted(self._entries)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> "LatencyCache":
        """Inverse of :meth:`to_dict`; malformed entries raise :class:`LRFError` naming the key."""
        cache = cls()
        for key, fields in data.items():
            try:
                stats = LatencyStats(
                    median_s=float(fields["median_s"]),
                    p10_s=float(fields["p10_s"]),
                    p90_s=float(fields["p90_s"]),
                    repeats=int(fields["repeats"]),
                    batch=int(fields["batch"]),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise LRFError(
                    f"Latency cache entry {key!r} is malformed: expected the fields median_s, "
                    f"p10_s, p90_s, repeats, batch. Received {dict(fields)!r} ({exc})."
                ) from exc
            cache.put(key, stats)
        return cache

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __repr__(self) -> str:
        return f"LatencyCache({len(self)} blocks)"


# -- keys -------------------------------------------------------------------------------
BlockLayers = Sequence[Union[LayerSpec, Mapping[str, Any]]]


def _timing_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the config keys that do not affect the forward cost."""
    return {
        k: v
        for k, v in config.items()
        if k not in _IRRELEVANT_KEYS and not k.endswith(_IRRELEVANT_SUFFIXES)
    }


def _as_spec(item: Union[LayerSpec, Mapping[str, Any]]) -> LayerSpec:
    """A LayerSpec (weights dropped) from a LayerSpec or a ``{"class_name", "config"}`` mapping."""
    if isinstance(item, LayerSpec):
        class_name, config = item.class_name, item.config
    elif isinstance(item, Mapping) and "class_name" in item and "config" in item:
        class_name, config = item["class_name"], item["config"]
    else:
        raise LRFError(
            "A latency block is a sequence of LayerSpec or {'class_name': ..., 'config': {...}} "
            f"mappings. Received {type(item).__name__}: {item!r:.120}."
        )
    if class_name not in ALLOWED_LAYERS:
        raise LRFError(
            f"Cannot time layer class {class_name!r}: expected one of {', '.join(ALLOWED_LAYERS)}."
        )
    return LayerSpec(class_name, _timing_config(config))


def block_layer_data(item: Union[LayerSpec, Mapping[str, Any]]) -> dict[str, Any]:
    """One layer of a block as JSON-ready ``{"class_name", "config"}`` (weights and the keys
    that do not change the forward cost dropped), e.g. to time it in another process."""
    spec = _as_spec(item)
    text = json.dumps({"class_name": spec.class_name, "config": dict(spec.config)}, default=_json_default)
    return json.loads(text)


def _canonical_layer(spec: LayerSpec) -> dict[str, Any]:
    """Class name + the full config Keras reports (defaults filled in, names dropped).

    Instantiating the layer normalises spellings (``kernel_size=3`` vs ``(3, 3)``, omitted
    defaults), so a LayerSpec and a ``layer.get_config()`` of the same layer share a key.
    """
    layer = getattr(keras.layers, spec.class_name)(**dict(spec.config))
    return {"class_name": spec.class_name, "config": _timing_config(layer.get_config())}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    name = getattr(obj, "__name__", None)
    if name is not None:  # e.g. an activation function object
        return f"{getattr(obj, '__module__', '')}.{name}"
    raise TypeError(f"Cannot put {type(obj).__name__} in a latency key")


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except TypeError:
        shape = ()
    if not shape or min(shape) < 1:
        raise LRFError(
            "input_shape is the per-example shape without the batch axis, all dims >= 1 "
            f"(e.g. (32, 32, 64)). Received {input_shape!r}."
        )
    return shape


def block_key(
    specs_or_layer_configs: BlockLayers, input_shape: Sequence[int], config: TimingConfig
) -> str:
    """Stable cache key of a block: ``"<runtime>-<sha256 hex>"``.

    Hashes (canonical JSON, sorted keys) the layer class names and configs (without names,
    dtypes, weights, initializers, regularizers, constraints), the input shape without batch,
    ``config.batch``, ``config.threads``, ``config.runtime`` and the TensorFlow version.
    ``warmup`` and ``repeats`` are not part of the key.

    Parameters
    ----------
    specs_or_layer_configs : sequence of :class:`LayerSpec` or ``{"class_name", "config"}``
        mappings (e.g. entries of ``model.get_config()["layers"]``)
    input_shape : per-example input shape, e.g. ``(H, W, S)``
    config : :class:`TimingConfig`
    """
    specs = [_as_spec(item) for item in specs_or_layer_configs]
    if not specs:
        raise LRFError("block_key needs at least one layer. Received an empty block.")
    payload = {
        "v": _KEY_VERSION,
        "layers": [_canonical_layer(spec) for spec in specs],
        "input_shape": list(_check_input_shape(input_shape)),
        "batch": config.batch,
        "threads": config.threads,
        "runtime": config.runtime,
        "tf": tf.__version__,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_json_default)
    return f"{config.runtime}-{hashlib.sha256(text.encode()).hexdigest()}"


# -- timing -----------------------------------------------------------------------------
def _device(config: TimingConfig) -> str:
    device = RUNTIMES[config.runtime]
    if device.startswith("/GPU") and not tf.config.list_logical_devices("GPU"):
        raise LRFError(
            f"Latency runtime {config.runtime!r} needs a GPU, but TensorFlow sees none. "
            "Use runtime='tf-cpu' or run on a GPU host."
        )
    return device


def _check_threads(config: TimingConfig, level: int = logging.WARNING) -> None:
    """Log when the recorded thread count differs from TensorFlow's live setting."""
    threads = tf.config.threading.get_intra_op_parallelism_threads()
    if config.threads is not None and threads != config.threads:
        logger.log(
            level,
            "TimingConfig.threads=%d but TensorFlow's intra-op thread setting is %d (0 = default); "
            "set it before TensorFlow starts so the cached timings mean what the key says.",
            config.threads,
            threads,
        )


def _sync(outputs: Any) -> None:
    """Force the result to host memory (the device work finishes inside the timed region)."""
    for tensor in tf.nest.flatten(outputs):
        tensor.numpy()


def _fixed_input(input_shape: tuple[int, ...], batch: int) -> tf.Tensor:
    rng = np.random.default_rng(0)
    return tf.constant(rng.standard_normal((batch,) + input_shape).astype(np.float32))


def _time_interleaved(
    functions: Sequence[Callable[[tf.Tensor], Any]],
    x: tf.Tensor,
    config: TimingConfig,
    timer: Callable[[], float],
) -> list[list[float]]:
    """Warm every function up, then time them round-robin (start rotated every repetition).

    Each timed call costs exactly two ``timer()`` reads. Interleaving makes slow drifts
    (thermal, frequency scaling, background load) hit all functions equally.
    """
    for fn in functions:
        for _ in range(config.warmup):
            _sync(fn(x))
    times: list[list[float]] = [[] for _ in functions]
    n = len(functions)
    for rep in range(config.repeats):
        for j in range(n):
            i = (rep + j) % n
            start = timer()
            _sync(functions[i](x))
            times[i].append(timer() - start)
    return times


def _compiled(model: keras.Model) -> Callable[[tf.Tensor], Any]:
    return tf.function(lambda x: model(x, training=False), jit_compile=False, reduce_retracing=True)


def _block_model(specs: Sequence[LayerSpec], shape: tuple[int, ...], batch: int) -> keras.Model:
    """The chain as a model on ``keras.Input(shape, batch_size=batch)`` (random initial weights)."""
    inputs = keras.Input(shape=shape, batch_size=batch)
    x = inputs
    for layer in instantiate_chain(specs, "latency_probe"):
        x = layer(x)
    return keras.Model(inputs, x)


def measure_block(
    specs: Sequence[LayerSpec],
    input_shape: Sequence[int],
    config: TimingConfig = TimingConfig(),
    *,
    cache: Optional[LatencyCache] = None,
    timer: Callable[[], float] = time.perf_counter,
) -> LatencyStats:
    """Latency of one forward pass of a layer chain (METHODS.md §3.7), cached by :func:`block_key`.

    The chain is instantiated from its specs (:func:`lrf_core.keras_chain.instantiate_chain`)
    and built on ``keras.Input(input_shape, batch_size=config.batch)``; weights stay at
    their random initial values (they do not change the time). The forward pass is timed
    as described in the module docstring on a fixed random float32 input of shape
    ``(config.batch,) + input_shape``.

    Parameters
    ----------
    specs : the block, e.g. ``method.layers(factorization, geometry, bias)``
    input_shape : per-example input shape of the block, e.g. ``(H, W, S)`` or ``(m,)``
    config : :class:`TimingConfig`
    cache : on a hit the stored stats are returned without building or timing anything;
        on a miss the new stats are stored
    timer : monotonic clock in seconds (injectable for tests); read twice per timed call

    Returns
    -------
    LatencyStats
    """
    key = block_key(specs, input_shape, config)

    def measure() -> LatencyStats:
        shape = _check_input_shape(input_shape)
        timing_specs = [_as_spec(spec) for spec in specs]
        _check_threads(config, logging.DEBUG)  # warned once by measured_latency_fn
        with tf.device(_device(config)):
            model = _block_model(timing_specs, shape, config.batch)
            (times,) = _time_interleaved([_compiled(model)], _fixed_input(shape, config.batch), config, timer)
        stats = LatencyStats.from_times(times, config.batch)
        logger.debug(
            "measured %s on %s: median %.3g s (p10 %.3g, p90 %.3g)",
            "→".join(s.class_name for s in timing_specs), shape, stats.median_s, stats.p10_s, stats.p90_s,
        )
        return stats

    return measure() if cache is None else cache.get_or_measure(key, measure)


def measure_dense_layer(
    layer_config: Mapping[str, Any],
    input_shape: Sequence[int],
    config: TimingConfig = TimingConfig(),
    *,
    cache: Optional[LatencyCache] = None,
    timer: Callable[[], float] = time.perf_counter,
) -> LatencyStats:
    """Latency of the original (unfactorized) Conv2D/Dense layer, through :func:`measure_block`.

    Parameters
    ----------
    layer_config : ``{"class_name": "Conv2D", "config": layer.get_config()}`` (an entry of
        ``model.get_config()["layers"]`` works as is; name, dtype and initializers are ignored)
    input_shape, config, cache, timer : as :func:`measure_block`
    """
    return measure_block([_as_spec(layer_config)], input_shape, config, cache=cache, timer=timer)


def measure_model(
    models: Sequence[keras.Model],
    input_shape: Sequence[int],
    config: TimingConfig = TimingConfig(),
    *,
    timer: Callable[[], float] = time.perf_counter,
) -> list[LatencyStats]:
    """Latency of whole models, timed interleaved in this process (parent vs compressed).

    Every model is wrapped in ``tf.function``, warmed up ``config.warmup`` times, then the
    models are called round-robin for ``config.repeats`` rounds (the first model of each
    round rotates), so drift affects all of them alike. Not cached: models are compared
    against each other, in one run.

    Parameters
    ----------
    models : single-input Keras models accepting ``(config.batch,) + input_shape``
    input_shape : per-example input shape
    config, timer : as :func:`measure_block`

    Returns
    -------
    list of LatencyStats, one per model, in the order given
    """
    if not models:
        raise LRFError("measure_model needs at least one model. Received an empty sequence.")
    shape = _check_input_shape(input_shape)
    _check_threads(config)
    with tf.device(_device(config)):
        functions = [_compiled(model) for model in models]
        times = _time_interleaved(functions, _fixed_input(shape, config.batch), config, timer)
    return [LatencyStats.from_times(t, config.batch) for t in times]


def _paired_rounds(
    functions: Sequence[Callable[[tf.Tensor], Any]],
    x: tf.Tensor,
    config: TimingConfig,
    timer: Callable[[], float],
    *,
    limit: Optional[float] = None,
    max_rounds: Optional[int] = None,
) -> tuple[list[float], list[RatioEstimate]]:
    """Time ``functions[0]`` (the reference) and the others round-robin in chunks of
    ``config.repeats`` rounds until every ratio to the reference is settled against ``limit``
    (:meth:`RatioEstimate.settled`) or ``max_rounds`` (default: one chunk) were timed.

    Returns the reference's per-round times and one :class:`RatioEstimate` per other function
    over all rounds (ratios within a round: ``t_i / t_0``).
    """
    cap = max(max_rounds or config.repeats, config.repeats)
    chunk = config
    reference: list[float] = []
    ratios: list[list[float]] = [[] for _ in functions[1:]]
    while True:
        times = np.asarray(_time_interleaved(functions, x, chunk, timer))  # (functions, repeats)
        chunk = replace(config, warmup=0)  # warm already
        reference.extend(times[0].tolist())
        for own, t in zip(ratios, times[1:] / np.maximum(times[:1], 1e-12)):
            own.extend(t.tolist())
        estimates = [RatioEstimate.from_ratios(r) for r in ratios]
        if len(reference) >= cap or all(e.settled(limit) for e in estimates):
            return reference, estimates


def measure_relative(
    reference: BlockLayers,
    blocks: Sequence[BlockLayers],
    input_shape: Sequence[int],
    config: TimingConfig = TimingConfig(),
    *,
    timer: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Each block's latency ÷ the reference block's, timed together (paired, METHODS.md §3.7).

    The reference (the dense layer) and every block are timed round-robin in one run of
    ``config.repeats`` rounds; each block's ratio is the median over rounds of
    ``t_block / t_reference`` within the same round (:mod:`lrf_core.paired_ratio` says why).

    Returns
    -------
    list of float, one ratio per block (< 1: faster than the reference)
    """
    if not blocks:
        return []
    shape = _check_input_shape(input_shape)
    with tf.device(_device(config)):
        models = [_block_model([_as_spec(s) for s in specs], shape, config.batch) for specs in (reference, *blocks)]
        _, estimates = _paired_rounds([_compiled(m) for m in models], _fixed_input(shape, config.batch), config, timer)
    return [e.median for e in estimates]


def measure_ratios(
    reference: keras.Model,
    models: Sequence[keras.Model],
    input_shape: Sequence[int],
    config: TimingConfig = TimingConfig(),
    *,
    limit: Optional[float] = None,
    max_rounds: Optional[int] = None,
    timer: Callable[[], float] = time.perf_counter,
) -> tuple[LatencyStats, list[RatioEstimate]]:
    """Whole models against a reference (child vs parent), in paired rounds until settled.

    Rounds come in chunks of ``config.repeats`` (the first after ``config.warmup`` untimed
    calls of each model); after every chunk each model's :class:`RatioEstimate` is computed
    over all rounds so far, and timing stops when each is settled against ``limit`` (its
    interval on one side, or within ± ``RATIO_RESOLUTION``) or ``max_rounds`` were timed.

    Returns
    -------
    (the reference's LatencyStats over all rounds, one RatioEstimate per model)
    """
    shape = _check_input_shape(input_shape)
    _check_threads(config)
    with tf.device(_device(config)):
        functions = [_compiled(m) for m in (reference, *models)]
        times, estimates = _paired_rounds(functions, _fixed_input(shape, config.batch), config, timer, limit=limit,
                                          max_rounds=max_rounds)
    return LatencyStats.from_times(times, config.batch), estimates


#: ``model_latency_fn(models) -> [seconds]``: the first model is the reference (tests inject fakes).
ModelLatencyFn = Callable[[Sequence[keras.Model]], Sequence[float]]


class TimingRunner(Protocol):
    """Where timings run: :class:`InProcessRunner` here, or a worker process with the serving
    thread count (``tasks.latency_worker``). The three calls of :func:`measure_block`,
    :func:`measure_relative` and :func:`measure_ratios`, without caching."""

    def block(self, specs: BlockLayers, input_shape: tuple[int, ...], config: TimingConfig) -> LatencyStats: ...

    def relative(self, dense: BlockLayers, blocks: Sequence[BlockLayers], input_shape: tuple[int, ...],
                 config: TimingConfig) -> list[float]: ...

    def compare(self, reference: keras.Model, models: Sequence[keras.Model], input_shape: tuple[int, ...],
                config: TimingConfig, limit: Optional[float], max_rounds: Optional[int],
                ) -> tuple[LatencyStats, list[RatioEstimate]]: ...


class InProcessRunner:
    """Times in this process, at TensorFlow's live thread settings."""

    def block(self, specs, input_shape, config):
        return measure_block(specs, input_shape, config)

    def relative(self, dense, blocks, input_shape, config):
        return measure_relative(dense, blocks, input_shape, config)

    def compare(self, reference, models, input_shape, config, limit, max_rounds):
        return measure_ratios(reference, models, input_shape, config, limit=limit, max_rounds=max_rounds)


class ModelLatency:
    """Whole-model timing for the latency guard, latency targets and the gate.

    ``fn(models) -> [seconds]``: the first model's median, and for every other model that
    median × its paired ratio's median, so ``fn([a, b])[1] / fn([a, b])[0]`` is the paired
    estimate; ``fn.compare(reference, models, limit)`` gives the intervals too
    (:func:`measure_ratios`, at most ``max_rounds`` rounds, on ``runner``).
    """

    def __init__(self, input_shape: Sequence[int], config: TimingConfig, max_rounds: int,
                 runner: Optional[TimingRunner] = None):
        self.input_shape = _check_input_shape(input_shape)
        self.config = config
        self.max_rounds = int(max_rounds)
        self.runner = runner or InProcessRunner()

    def compare(self, reference: keras.Model, models: Sequence[keras.Model],
                limit: Optional[float] = None) -> tuple[float, list[RatioEstimate]]:
        stats, estimates = self.runner.compare(reference, models, self.input_shape, self.config, limit,
                                               self.max_rounds)
        return stats.median_s, estimates

    def __call__(self, models: Sequence[keras.Model]) -> list[float]:
        if not models:
            raise LRFError("ModelLatency needs at least one model. Received an empty sequence.")
        seconds, estimates = self.compare(models[0], models[1:])
        return [seconds] + [seconds * e.median for e in estimates]


def compare_models(
    model_latency_fn: Union[ModelLatency, ModelLatencyFn],
    reference: keras.Model,
    models: Sequence[keras.Model],
    limit: Optional[float] = None,
) -> tuple[float, list[RatioEstimate]]:
    """The reference's seconds and each model's ratio to it, from either kind of timing function.

    A :class:`ModelLatency` times paired rounds until settled against ``limit``; any other
    ``fn(models) -> [seconds]`` (a test's fake, a caller's own runtime) is called once and its
    ratios taken as exact (:meth:`RatioEstimate.exact`).
    """
    compare = getattr(model_latency_fn, "compare", None)
    if compare is not None:
        return compare(reference, models, limit)
    seconds = [float(s) for s in model_latency_fn([reference, *models])]
    return seconds[0], [RatioEstimate.exact(s / seconds[0]) for s in seconds[1:]]


class MeasuredLatency:
    """The search's :data:`LatencyFn`: ``fn(specs, input_shape) -> seconds`` is the cached median
    of one block's timing; ``fn.relative(dense, blocks, input_shape)`` gives paired ratios to
    the dense layer (:func:`measure_relative`), cached per (dense, block) key, which is what
    the latency rule decides on. Timings run on ``runner`` (this process by default)."""

    def __init__(self, config: TimingConfig, cache: Optional[LatencyCache] = None,
                 runner: Optional[TimingRunner] = None):
        self.config = config
        self.cache = cache if cache is not None else LatencyCache()
        self.runner = runner or InProcessRunner()
        self._ratios: dict[tuple[str, str], float] = {}
        if isinstance(self.runner, InProcessRunner):
            _check_threads(config)

    def __call__(self, specs: Sequence[LayerSpec], input_shape: tuple[int, ...]) -> float:
        key = block_key(specs, input_shape, self.config)
        return self.cache.get_or_measure(key, lambda: self.runner.block(specs, input_shape, self.config)).median_s

    def relative(self, dense: BlockLayers, blocks: Sequence[BlockLayers], input_shape: tuple[int, ...]) -> list[float]:
        dense_key = block_key(dense, input_shape, self.config)
        keys = [(dense_key, block_key(b, input_shape, self.config)) for b in blocks]
        todo = list(dict.fromkeys(k for k in keys if k not in self._ratios))  # identical blocks timed once
        if todo:
            fresh = self.runner.relative(dense, [blocks[keys.index(k)] for k in todo], input_shape, self.config)
            self._ratios.update(zip(todo, fresh))
        return [self._ratios[k] for k in keys]


def measured_latency_fn(config: TimingConfig, cache: Optional[LatencyCache] = None) -> MeasuredLatency:
    """A :data:`LatencyFn` for the search (:class:`MeasuredLatency`, timed in this process).

    Parameters
    ----------
    config : :class:`TimingConfig` used for every block
    cache : shared by every call (a fresh one when None), so each distinct block is timed once
    """
    return MeasuredLatency(config, cache)


def default_latency_functions(input_shape: Sequence[int], batch: int = 1, *, threads: Optional[int] = None,
                              runner: Optional[TimingRunner] = None):
    """The timing functions the search and the report use on this machine (TF CPU, ``batch``).

    ``threads`` is recorded in every timing config (cache keys): pass the intra-op thread
    count ``runner`` times with (a worker process started with it), or the one this process
    was configured with; None means TensorFlow's default here.

    ``batch`` should be the serving batch: at batch 1 per-op overhead dominates small layers
    and a factor chain (two or three ops) is often slower than the layer it replaces even
    where it saves most MACs (bench/REPORT.md: the ResNet- and MobileNetV2-style children at
    a third and a half of the MACs run 0.89× and 0.99× at TF batch 1, 1.54× and 1.14× at 64).

    Returns ``(block_fn, models_fn)``: ``block_fn(specs, input_shape) -> seconds`` for one
    candidate block (cached by shape), ``models_fn`` a :class:`ModelLatency` for whole models:
    chunks of 200 paired rounds until settled, at most 800. The first look comes after 200
    rounds because earlier looks decide on noise: on the demo's digits CNN, stopping after
    chunks of 50 gave medians with a 2-3 % standard deviation from one timing to the next,
    chunks of 200 gave 0.9 %.
    """
    block_fn = MeasuredLatency(TimingConfig(batch=batch, warmup=3, repeats=15, threads=threads), LatencyCache(), runner)
    return block_fn, ModelLatency(input_shape, TimingConfig(batch=batch, warmup=5, repeats=200, threads=threads),
                                  max_rounds=800, runner=runner)
