"""Latency measurement and its cache (METHODS.md §3.7)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from lrf_core.decompose.base import LayerSpec
from lrf_core.errors import LRFError
from lrf_core.latency import (
    LatencyCache,
    LatencyStats,
    ModelLatency,
    TimingConfig,
    block_key,
    compare_models,
    measure_block,
    measure_dense_layer,
    measure_model,
    measure_ratios,
    measure_relative,
    measured_latency_fn,
)
from lrf_core.paired_ratio import RATIO_RESOLUTION

FAST = TimingConfig(warmup=1, repeats=5)


def _chain(filters=8):
    return [
        LayerSpec("Conv2D", dict(filters=4, kernel_size=(3, 3), padding="same", use_bias=False)),
        LayerSpec("Conv2D", dict(filters=filters, kernel_size=(1, 1), activation="relu")),
    ]


class CountingTimer:
    def __init__(self):
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.calls * 1e-3  # every timed call "takes" 1 ms


def test_cache_hit_returns_identical_stats_without_retiming():
    cache, timer = LatencyCache(), CountingTimer()
    first = measure_block(_chain(), (8, 8, 3), FAST, cache=cache, timer=timer)
    assert timer.calls == 2 * FAST.repeats
    assert first.median_s == pytest.approx(1e-3) and first.repeats == FAST.repeats
    second = measure_block(_chain(), (8, 8, 3), FAST, cache=cache, timer=timer)
    assert timer.calls == 2 * FAST.repeats
    assert second == first and len(cache) == 1


def test_identical_blocks_in_different_layers_share_a_key():
    # spelled differently (int vs tuple kernel size, weights attached) but the same block
    a = [LayerSpec("Conv2D", dict(filters=16, kernel_size=3, padding="same"))]
    conv = keras.layers.Conv2D(16, (3, 3), padding="same", name="block3_conv")
    conv.build((None, 8, 8, 4))
    b = [LayerSpec("Conv2D", dict(filters=16, kernel_size=(3, 3), padding="same"), tuple(conv.get_weights()))]
    c = [{"class_name": "Conv2D", "config": conv.get_config()}]
    assert block_key(a, (8, 8, 4), FAST) == block_key(b, (8, 8, 4), FAST) == block_key(c, (8, 8, 4), FAST)
    # warmup/repeats do not change what is measured
    assert block_key(a, (8, 8, 4), FAST) == block_key(a, (8, 8, 4), TimingConfig(warmup=9, repeats=50))


def test_different_shape_batch_threads_or_layers_give_different_keys():
    base = block_key(_chain(), (8, 8, 3), FAST)
    others = {
        block_key(_chain(), (16, 16, 3), FAST),
        block_key(_chain(), (8, 8, 4), FAST),
        block_key(_chain(), (8, 8, 3), TimingConfig(batch=8, warmup=1, repeats=5)),
        block_key(_chain(), (8, 8, 3), TimingConfig(threads=2, warmup=1, repeats=5)),
        block_key(_chain(filters=9), (8, 8, 3), FAST),
        block_key(_chain()[:1], (8, 8, 3), FAST),
    }
    assert base not in others and len(others) == 6


def test_cache_round_trips_through_json():
    cache = LatencyCache()
    cache.put("tf-cpu-aa", LatencyStats(2e-3, 1e-3, 3e-3, 30, 1))
    cache.put("tf-cpu-bb", LatencyStats(5e-4, 4e-4, 9e-4, 10, 8))
    restored = LatencyCache.from_dict(json.loads(json.dumps(cache.to_dict())))
    assert len(restored) == 2
    assert restored.to_dict() == cache.to_dict()
    assert restored.get("tf-cpu-bb") == LatencyStats(5e-4, 4e-4, 9e-4, 10, 8)
    assert restored.get("missing") is None
    with pytest.raises(LRFError, match="tf-cpu-cc"):
        LatencyCache.from_dict({"tf-cpu-cc": {"median_s": 1.0}})


def test_invalid_configs_and_stats_raise():
    with pytest.raises(LRFError, match="Allowed: tf-cpu"):
        TimingConfig(runtime="tflite")
    with pytest.raises(LRFError, match="repeats >= 1"):
        TimingConfig(repeats=0)
    with pytest.raises(LRFError, match="p10_s <= median_s <= p90_s"):
        LatencyStats(1.0, 2.0, 3.0, 5, 1)
    with pytest.raises(LRFError, match="input_shape"):
        block_key(_chain(), (0, 8, 3), FAST)
    with pytest.raises(LRFError, match="Cannot time layer class 'BatchNormalization'"):
        block_key([LayerSpec("BatchNormalization", {})], (8, 8, 3), FAST)


def test_measure_block_returns_positive_ordered_stats():
    stats = measure_block(_chain(), (8, 8, 3), TimingConfig(warmup=2, repeats=10, batch=2))
    assert 0 < stats.p10_s <= stats.median_s <= stats.p90_s
    assert stats.repeats == 10 and stats.batch == 2


def test_big_conv_is_measurably_slower_than_a_small_one():
    config = TimingConfig(warmup=3, repeats=25)
    cache = LatencyCache()
    big = measure_dense_layer(
        {"class_name": "Conv2D", "config": dict(filters=64, kernel_size=(3, 3), padding="same", name="c1")},
        (32, 32, 64), config, cache=cache,
    )
    small = measure_block([LayerSpec("Conv2D", dict(filters=8, kernel_size=(1, 1)))], (32, 32, 64), config, cache=cache)
    assert len(cache) == 2
    # ~74x the MACs; generous margin for a loaded machine
    assert big.median_s > 1.3 * small.median_s


def test_measure_model_returns_one_stats_per_model():
    def model(filters):
        inputs = keras.Input((8, 8, 3))
        return keras.Model(inputs, keras.layers.Conv2D(filters, 3)(inputs))

    timer = CountingTimer()
    stats = measure_model([model(4), model(8), model(16)], (8, 8, 3), FAST, timer=timer)
    assert len(stats) == 3 and all(s.repeats == FAST.repeats for s in stats)
    assert timer.calls == 2 * 3 * FAST.repeats
    real = measure_model([model(4), model(8)], (8, 8, 3), FAST)
    assert all(0 < s.p10_s <= s.median_s <= s.p90_s for s in real)


def test_measured_latency_fn_is_backed_by_the_cache():
    cache = LatencyCache()
    latency_fn = measured_latency_fn(FAST, cache)
    seconds = latency_fn(_chain(), (8, 8, 3))
    assert seconds > 0 and len(cache) == 1
    assert latency_fn(_chain(), (8, 8, 3)) == seconds and len(cache) == 1


class LoadChangeTimer:
    """Real time, but after ``switch_at`` reads the machine "gets 5× busier" (every interval ×5)."""

    def __init__(self, switch_at: int):
        self.reads, self.switch_at, self.fake, self.last = 0, switch_at, 0.0, None

    def __call__(self) -> float:
        import time

        now = time.perf_counter()
        if self.last is not None:
            self.fake += (now - self.last) * (5.0 if self.reads >= self.switch_at else 1.0)
        self.last, self.reads = now, self.reads + 1
        return self.fake


def _dense_and_chain():
    dense = [LayerSpec("Dense", dict(units=512))]
    chain = [LayerSpec("Dense", dict(units=8, use_bias=False)), LayerSpec("Dense", dict(units=512))]
    return dense, chain


def test_relative_timing_pairs_each_block_with_the_dense_layer():
    dense, chain = _dense_and_chain()
    config = TimingConfig(warmup=3, repeats=30, batch=64)
    ratio_chain, ratio_same = measure_relative(dense, [chain, dense], (512,), config)
    assert ratio_chain < 0.8  # 1/32 of the MACs; generous margin for a loaded machine
    assert 0.5 < ratio_same < 2.0  # the dense layer against itself


def test_a_load_change_between_timings_misleads_absolute_times_not_paired_ratios():
    dense, chain = _dense_and_chain()
    config = TimingConfig(warmup=3, repeats=30, batch=64)
    timer = LoadChangeTimer(switch_at=10**9)
    absolute_dense = measure_block(dense, (512,), config, timer=timer).median_s
    timer.switch_at = timer.reads  # the load rises after the dense layer was timed
    absolute_chain = measure_block(chain, (512,), config, timer=timer).median_s
    (paired,) = measure_relative(dense, [chain], (512,), config, timer=timer)
    assert paired < 0.8  # still measured faster: both sides saw the same load
    assert absolute_chain > absolute_dense  # the absolute rule would have dropped the faster block


def test_the_search_latency_function_caches_paired_ratios():
    dense, chain = _dense_and_chain()
    fn = measured_latency_fn(FAST)
    first = fn.relative(dense, [chain, chain], (512,))
    assert first[0] == first[1] and len(fn._ratios) == 1  # identical blocks timed once
    assert fn.relative(dense, [chain], (512,)) == first[:1]  # cached: not timed again


def test_default_latency_functions_time_at_the_serving_batch():
    """The guard's blocks and the whole models are timed at the batch given (the pipeline's gate.latency_batch)."""
    from lrf_core.latency import default_latency_functions

    seen: list[int] = []

    class RecordBatch(keras.layers.Layer):
        """Notes the batch of every input it is traced or run with: what the timing fed the model."""

        def call(self, x):
            seen.append(x.shape[0])  # None while Keras builds the graph
            return x

    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, RecordBatch()(keras.layers.Conv2D(4, 3)(inputs)))
    block_fn, models_fn = default_latency_functions((8, 8, 2), batch=16)
    assert block_fn.config.batch == 16 and models_fn.config.batch == 16
    assert default_latency_functions((8, 8, 2))[0].config.batch == 1
    seen.clear()
    models_fn.max_rounds = 1  # one chunk is enough to see the inputs; the count is not the point here
    (seconds,) = models_fn([model])
    assert seconds > 0
    assert seen and set(seen) - {None} == {16}  # every call the timing made fed 16 images


class NoisyTimer:
    """Every timed call "takes" 0.5-1.5 ms at random: ratios near 1, far too noisy to settle."""

    def __init__(self):
        self.rng, self.now, self.reads = np.random.default_rng(0), 0.0, 0

    def __call__(self) -> float:
        self.reads += 1
        if self.reads % 2 == 0:  # the end of a timed call
            self.now += self.rng.uniform(0.5e-3, 1.5e-3)
        return self.now


def _conv_model(filters, shape=(8, 8, 3)):
    inputs = keras.Input(shape)
    return keras.Model(inputs, keras.layers.Conv2D(filters, 3)(inputs))


def test_paired_timing_continues_until_the_decision_is_settled():
    models = [_conv_model(4), _conv_model(8)]
    timer = NoisyTimer()
    _, (est,) = measure_ratios(models[0], models[1:], (8, 8, 3), FAST, limit=1.0, max_rounds=20, timer=timer)
    assert est.rounds == 20 and timer.reads == 2 * 2 * 20  # never settled: four chunks of five rounds
    assert est.low < 1.0 < est.high and est.high - est.low > 2 * RATIO_RESOLUTION
    timer = NoisyTimer()
    _, (est,) = measure_ratios(models[0], models[1:], (8, 8, 3), FAST, limit=0.1, max_rounds=20, timer=timer)
    assert est.rounds == 5 and est.low > 0.1  # the interval is above 0.1 after one chunk: done


def test_model_latency_reports_seconds_whose_ratio_is_the_paired_median():
    fn = ModelLatency((8, 8, 3), FAST, max_rounds=5)
    small, big = _conv_model(4), _conv_model(64)
    seconds = fn([small, big])
    reference_s, (est,) = fn.compare(small, [big])
    assert len(seconds) == 2 and all(s > 0 for s in seconds + [reference_s])
    assert est.rounds == 5 and est.low <= est.median <= est.high
    with pytest.raises(LRFError, match="at least one model"):
        fn([])


def test_compare_models_takes_a_plain_function_as_exact():
    seconds, estimates = compare_models(lambda models: [2.0, 1.0, 3.0][: len(models)], "parent", ["a", "b"])
    assert seconds == 2.0 and [(e.median, e.low, e.high, e.rounds) for e in estimates] == [
        (0.5, 0.5, 0.5, 0), (1.5, 1.5, 1.5, 0)]


def test_a_big_conv_is_measurably_slower_in_paired_rounds():
    small, big = _conv_model(4, (32, 32, 16)), _conv_model(128, (32, 32, 16))
    _, (est,) = measure_ratios(small, [big], (32, 32, 16), TimingConfig(warmup=2, repeats=20), limit=1.0,
                               max_rounds=100)
    # 32x the MACs: measurably slower, and settled before the cap (after the first chunk of 20 on a quiet
    # machine; a fresh-clone run beside a training needed a second chunk, so the count itself is not asserted)
    assert est.low > 1.0 and est.rounds % 20 == 0 and est.rounds < 100
