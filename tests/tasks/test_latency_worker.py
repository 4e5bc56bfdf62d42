"""Latency at the serving thread count: timings in a worker process started with N intra-op threads."""

from __future__ import annotations

from pathlib import Path

import keras
import pytest

from lrf_core.decompose.base import LayerSpec
from lrf_core.errors import LRFError
from lrf_core.latency import TimingConfig, block_key
from tasks.latency_worker import WorkerRunner, latency_functions

SHAPE = (16, 16, 8)


@pytest.fixture(scope="module")
def worker():
    with WorkerRunner(1) as runner:
        yield runner


def _conv(filters):
    inputs = keras.Input(SHAPE)
    return keras.Model(inputs, keras.layers.Conv2D(filters, 3, padding="same")(inputs))


def test_the_worker_runs_with_the_threads_asked_for(worker):
    assert worker._request({"op": "hello"}) == {"intra_op": 1, "inter_op": 1}


def test_models_are_compared_in_the_worker_in_paired_rounds(worker):
    from lrf_core.latency import ModelLatency

    fn = ModelLatency(SHAPE, TimingConfig(warmup=2, repeats=20, threads=1), max_rounds=40, runner=worker)
    small, big = _conv(4), _conv(128)
    seconds, (est,) = fn.compare(small, [big], limit=1.0)
    assert seconds > 0 and est.low > 1.0 and est.rounds in (20, 40)  # 32x the MACs: measurably slower
    same = fn([small, small])  # a model against itself
    assert len(same) == 2 and 0.8 < same[1] / same[0] < 1.25
    kept = sorted(p.name for p in Path(worker._tmp.name).glob("*.keras"))
    assert kept == ["model-0.keras"]  # the reference, saved once; compared children are deleted after use


def test_blocks_are_timed_in_the_worker_and_cached_under_its_thread_count(worker):
    dense = [{"class_name": "Dense", "config": {"units": 64}}]
    chain = [LayerSpec("Dense", {"units": 8, "use_bias": False}), LayerSpec("Dense", {"units": 64})]
    with latency_functions((512,), batch=1, threads=1) as (block_fn, _):
        block_fn.runner.close()  # this test's own worker is not needed: use the module's
        block_fn.runner = worker
        seconds = block_fn(chain, (512,))
        assert seconds > 0 and len(block_fn.cache) == 1
        assert block_key(chain, (512,), block_fn.config) in block_fn.cache and block_fn.config.threads == 1
        assert block_fn.config.threads is not None
        ratios = block_fn.relative(dense, [chain, chain], (512,))
        assert ratios[0] == ratios[1] > 0  # identical blocks timed once


def test_a_request_the_worker_cannot_serve_is_an_error_and_the_worker_keeps_serving(worker):
    with pytest.raises(LRFError, match="could not time 'nope': LRFError: unknown op 'nope'"):
        worker._request({"op": "nope"})
    with pytest.raises(LRFError, match="could not time 'compare'"):
        worker._request({"op": "compare", "reference": "/no/such/model.keras", "models": [],
                         "input_shape": list(SHAPE), "config": {}})
    assert worker._request({"op": "hello"})["intra_op"] == 1


def test_a_worker_that_died_is_named_with_its_log():
    runner = WorkerRunner(1)
    try:
        runner._request({"op": "hello"})
        runner._proc.kill()
        runner._proc.wait()
        with pytest.raises(LRFError, match=r"stopped without answering 'hello'.*worker\.log"):
            runner._request({"op": "hello"})
    finally:
        runner.close()


def test_without_a_thread_count_timings_stay_in_this_process():
    from lrf_core.latency import InProcessRunner

    with latency_functions(SHAPE, batch=4) as (block_fn, models_fn):
        assert isinstance(models_fn.runner, InProcessRunner) and models_fn.config.batch == 4
        assert block_fn.config.threads is None


@pytest.mark.parametrize("threads", [0, -2])
def test_a_thread_count_below_one_is_refused(threads):
    with pytest.raises(LRFError, match="latency_threads must be >= 1"):
        WorkerRunner(threads)
