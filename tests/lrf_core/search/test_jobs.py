"""Per-layer fitting jobs: picklable, order-preserving, and the decision does not depend on where they ran."""

from __future__ import annotations

import pickle

import keras
import numpy as np
import pytest

from lrf_core.finetune import FinetuneConfig
from lrf_core.search.compress import CompressConfig, search
from lrf_core.search.jobs import BaselineJob, GridJob, RefitJob, run_job

pytestmark = pytest.mark.slow
MIXED = {"conv2d": ("svd", "tucker2"), "dense": ("svd",)}


class PicklingMap:
    """What a process pool does to the jobs: pickle them, run them out of order, pickle the results."""

    def __init__(self):
        self.jobs = []

    def __call__(self, fn, jobs):
        shipped = [pickle.loads(pickle.dumps(job)) for job in jobs]
        self.jobs += shipped
        results = {i: pickle.dumps(fn(job)) for i, job in reversed(list(enumerate(shipped)))}
        return [pickle.loads(results[i]) for i in range(len(shipped))]


def _decision(searched):
    return {name: (c.method, c.rank) for name, c in searched.fitted.items()}


@pytest.mark.parametrize("config", [
    CompressConfig(max_drop=2.0, methods=MIXED, grid_points=4, search_iterations=3, finetune=FinetuneConfig(epochs=0)),
    CompressConfig(ranks="energy:0.9", methods={"conv2d": ("svd",), "dense": ("svd",)},
                   finetune=FinetuneConfig(epochs=0)),
], ids=["grid", "energy-baseline"])
def test_shipped_jobs_give_the_local_decision_bit_for_bit(digits_parent, digits_data, config):
    local = search(digits_parent, digits_data, config)
    mapped = PicklingMap()
    shipped = search(digits_parent, digits_data, config, layer_map=mapped)
    assert _decision(shipped) == _decision(local) and local.fitted
    for name, chosen in local.fitted.items():
        other = shipped.fitted[name]
        assert other.bias is None and chosen.bias is None or np.array_equal(other.bias, chosen.bias)
        for a, b in zip(chosen.factorization.factors, other.factorization.factors):
            np.testing.assert_array_equal(a, b)
    assert shipped.report["layers"] == local.report["layers"]
    kinds = {type(job) for job in mapped.jobs}
    if config.ranks is None:
        # one grid job per layer, then the full refit of each chosen Tucker-2 layer
        assert GridJob in kinds and kinds <= {GridJob, RefitJob}
        grid_layers = [job.weights.layer for job in mapped.jobs if isinstance(job, GridJob)]
        assert grid_layers == [r["layer"] for r in local.report["layers"]]
        refits = [job.weights.layer for job in mapped.jobs if isinstance(job, RefitJob)]
        assert refits and refits == [n for n, c in local.fitted.items() if c.method != "svd"]
    else:
        assert kinds == {BaselineJob}


def test_a_refit_job_is_a_full_fit_of_its_grid_candidate(digits_parent, digits_data):
    from lrf_core.calibration import collect_statistics
    from lrf_core.graph import describe_model, kernel_and_bias
    from lrf_core.search.jobs import LayerWeights

    name = next(layer.name for layer in digits_parent.layers if isinstance(layer, keras.layers.Conv2D)
                and layer.kernel.shape[2] > 1)
    stats = collect_statistics(digits_parent, digits_data.calibration.x, [name])[name]
    kernel, bias = kernel_and_bias(digits_parent.get_layer(name))
    weights = LayerWeights(name, kernel, bias, describe_model(digits_parent).record(name).geometry, stats)
    grid, counts = run_job(GridJob(weights, ("tucker2",), 3, "sigma", 0, 2))
    assert counts["fitted"] == len(grid) > 0 and counts["generated"] == counts["fitted"] + counts["dropped_cost"]
    assert set(counts["fit_s"]) == {"tucker2"} and counts["fit_s"]["tucker2"] > 0  # where the grid's time went
    coarse = grid[0]
    [full], info = run_job(RefitJob(weights, "tucker2", coarse.rank, "sigma", 0))
    assert full.rank == coarse.rank and full.method == "tucker2"
    assert info["fit_s"] > 0 and info["sweeps"] == len(full.fitted.factorization.history) > 2  # past the grid's 2
    # more ALS sweeps never leave a worse Σ-error than 2 sweeps from the same start
    assert full.fitted.sigma_error <= coarse.fitted.sigma_error + 1e-9


class _ThreadsSeen:
    """A job that records the BLAS thread counts it runs under (by library file)."""

    def __init__(self, input_dim: int):
        from types import SimpleNamespace

        self.weights = SimpleNamespace(geometry=SimpleNamespace(input_dim=input_dim))

    def run(self):
        from threadpoolctl import threadpool_info

        return {info["filepath"]: info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}


def test_large_jobs_run_scipys_own_blas_single_threaded_and_small_jobs_everything():
    import scipy.linalg  # noqa: F401  (loads SciPy's vendored BLAS, if it has one)
    from threadpoolctl import threadpool_info, threadpool_limits

    from lrf_core.search.jobs import SINGLE_THREAD_BELOW_DIM

    with threadpool_limits(limits=2, user_api="blas"):
        before = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
        large, small = run_job(_ThreadsSeen(SINGLE_THREAD_BELOW_DIM)), run_job(_ThreadsSeen(SINGLE_THREAD_BELOW_DIM - 1))
        after = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    vendored = [path for path in before if "/scipy.libs/" in path]
    if not vendored:
        pytest.skip("SciPy shares NumPy's BLAS here: nothing to separate")
    assert all(large[path] == 1 for path in vendored)
    assert all(large[path] == 2 for path in before if path not in vendored)  # NumPy's products keep both cores
    assert set(small.values()) == {1}
    assert after == before  # restored
