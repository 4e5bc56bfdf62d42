"""Candidate generation: methods svd dominates on 1×1 kernels are not fitted, and the dominance holds."""

from __future__ import annotations

import numpy as np
import pytest

from lrf_core.covariance import StatisticsAccumulator
from lrf_core.decompose.base import LayerGeometry
from lrf_core.decompose.registry import get_method
from lrf_core.factorize import fit_layer
from lrf_core.search.candidates import dominated_by_svd, fit_candidates

S, T = 12, 10


def _pointwise(strides=(1, 1)) -> LayerGeometry:
    return LayerGeometry(kind="conv2d", kernel_shape=(1, 1, S, T), use_bias=True, activation="relu",
                         strides=strides, padding="same", input_hw=(8, 8))


def _layer(seed: int = 0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((S, S)) * np.linspace(1.0, 0.1, S)
    acc = StatisticsAccumulator(S)
    acc.update(rng.standard_normal((500, S)) @ mix + 0.3)
    return rng.standard_normal((1, 1, S, T)), rng.standard_normal(T), acc.result()


def test_only_pointwise_kernels_under_the_sigma_objective_with_svd_allowed_drop_methods():
    all_conv = ("svd", "tucker2", "cp", "spatial")
    assert dominated_by_svd(all_conv, _pointwise(), "sigma") == ("tucker2", "cp", "spatial")
    assert dominated_by_svd(all_conv, _pointwise(), "frobenius") == ()
    assert dominated_by_svd(("tucker2", "cp"), _pointwise(), "sigma") == ()  # a user's single-method choice stands
    three = LayerGeometry(kind="conv2d", kernel_shape=(3, 3, S, T), padding="same", input_hw=(8, 8))
    assert dominated_by_svd(all_conv, three, "sigma") == ()


@pytest.mark.parametrize("strides", [(1, 1), (2, 2)])
@pytest.mark.parametrize("method_id,rank,r", [("tucker2", (7, 4), 4), ("tucker2", (3, 9), 3), ("cp", (5,), 5),
                                              ("spatial", (6,), 6)])
def test_svd_at_the_same_rank_is_no_worse_in_params_macs_and_proxy(method_id, rank, r, strides):
    """The claim behind dominated_by_svd, checked on fitted candidates."""
    kernel, bias, stats = _layer()
    geometry = _pointwise(strides)
    other = fit_layer("l", kernel, bias, geometry, get_method("conv2d", method_id), rank, stats=stats)
    svd = fit_layer("l", kernel, bias, geometry, get_method("conv2d", "svd"), (r,), stats=stats)
    assert svd.cost_after.params <= other.cost_after.params
    assert svd.cost_after.macs <= other.cost_after.macs
    assert svd.sigma_error <= other.sigma_error + 1e-9


def test_fit_candidates_skips_dominated_methods_and_says_so():
    kernel, bias, stats = _layer(1)
    candidates, counts = fit_candidates("l", kernel, bias, _pointwise(), ("svd", "tucker2", "cp"), stats=stats,
                                        grid_points=3, n_iter_max=3)
    assert {c.method for c in candidates} == {"svd"} and counts["fitted"] == len(candidates) > 0
    assert counts["dominated"] == ["tucker2", "cp"] and set(counts["fit_s"]) == {"svd"}
    _, frobenius = fit_candidates("l", kernel, bias, _pointwise(), ("svd", "tucker2"), stats=stats,
                                  objective="frobenius", grid_points=3, n_iter_max=3)
    assert frobenius["dominated"] == [] and set(frobenius["fit_s"]) == {"svd", "tucker2"}
