"""The per-layer memo: each rank-independent piece once per layer, results bit-identical, nothing kept outside."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from lrf_core.covariance import StatisticsAccumulator, covariance_factor
from lrf_core.decompose.base import LayerGeometry
from lrf_core.decompose.registry import get_method
from lrf_core.factorize import fit_layer
from lrf_core.layout import extract_patches
from lrf_core.memo import digest, layer_memo, memoized
from lrf_core.search.candidates import fit_candidates, rank_grid


def test_memoized_computes_once_per_key_inside_a_block_and_every_time_outside():
    calls = []
    compute = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert memoized("k", compute) == 1 and memoized("k", compute) == 2  # no block: nothing kept
    with layer_memo():
        assert memoized("k", compute) == 3 and memoized("k", compute) == 3
        with layer_memo():  # a nested block shares the outer one
            assert memoized("k", compute) == 3
        assert memoized("other", compute) == 4
    assert memoized("k", compute) == 5  # the block's values went with it


def test_digest_is_a_content_key():
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert digest(a) == digest(a.copy()) == digest(np.asfortranarray(a))
    assert digest(a) != digest(a.reshape(4, 3)) and digest(a) != digest(a.astype(np.float32))
    b = a.copy()
    b[2, 3] += 1e-12
    assert digest(a) != digest(b)


def test_one_cholesky_per_sigma_in_a_block(monkeypatch):
    sigma = np.cov(np.random.default_rng(0).normal(size=(6, 50))) + np.eye(6)
    calls = []
    real = np.linalg.cholesky
    monkeypatch.setattr(np.linalg, "cholesky", lambda m: calls.append(1) or real(m))
    with layer_memo():
        first, again = covariance_factor(sigma), covariance_factor(sigma.copy())
        assert first is again and len(calls) == 1
        assert covariance_factor(sigma + np.eye(6)) is not first and len(calls) == 2  # other content, other root
    assert covariance_factor(sigma) is not first  # outside a block: computed anew


@pytest.fixture(scope="module")
def conv_layer():
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(3, 3, 8, 12))
    x = rng.normal(size=(6, 7, 7, 8)) + 0.3 * np.roll(rng.normal(size=(6, 7, 7, 8)), 1, axis=1)
    acc = StatisticsAccumulator(3 * 3 * 8)
    acc.update(extract_patches(x, (3, 3), padding="same"))
    geometry = LayerGeometry(kind="conv2d", kernel_shape=kernel.shape, padding="same", input_hw=(7, 7))
    return kernel, rng.normal(size=12), geometry, acc.result()


def test_the_grid_fitted_with_the_memo_equals_each_fit_alone(conv_layer):
    """Bit-identical: the memo only skips recomputing the same rank-independent pieces."""
    kernel, bias, geometry, stats = conv_layer
    methods = ("svd", "tucker2", "cp", "spatial")
    shared, _ = fit_candidates("c", kernel, bias, geometry, methods, stats=stats, grid_points=4, n_iter_max=3)
    alone = [fit_layer("c", kernel, bias, geometry, get_method("conv2d", m), rank, stats=stats, n_iter_max=3)
             for m in methods for rank in rank_grid(get_method("conv2d", m), geometry, 4)]
    alone = {(f.factorization.method, f.rank): f for f in alone}
    assert {c.fitted.factorization.method for c in shared} == set(methods)
    for c in shared:
        ref = alone[(c.fitted.factorization.method, c.fitted.rank)]
        assert c.fitted.sigma_error == ref.sigma_error and c.fitted.frobenius_error == ref.frobenius_error
        for got, want in zip(c.fitted.factorization.factors, ref.factorization.factors):
            np.testing.assert_array_equal(got, want)


def test_memoized_for_keys_by_the_objects_identity_and_keeps_it_alive():
    from lrf_core.memo import memoized_for

    calls = []
    a, b = np.ones(3), np.ones(3)  # equal content, different objects
    with layer_memo():
        assert memoized_for(a, "k", lambda: calls.append("a") or 1) == 1
        assert memoized_for(a, "k", lambda: calls.append("a again") or 2) == 1
        assert memoized_for(b, "k", lambda: calls.append("b") or 3) == 3
    assert calls == ["a", "b"]
