"""Tucker-2 (METHODS.md §1–2): exactness, Keras chain parity, cost, Σ-fit, determinism, ranks."""

from __future__ import annotations

import re

import numpy as np
import pytest

from lrf_core.decompose.base import Cost
from lrf_core.decompose.svd import CONV_SVD, fit_svd
from lrf_core.decompose.tucker2 import TUCKER2, fit_tucker2
from lrf_core.errors import InvalidRankError

SHAPES = [(3, 3, 4, 6), (3, 3, 8, 8), (5, 5, 3, 4), (3, 1, 4, 6), (1, 1, 8, 8), (1, 1, 8, 2)]


@pytest.mark.parametrize("shape", SHAPES)
def test_tucker2_full_rank_reproduces_kernel(shape, correlated_sigma, relative):
    kernel = np.random.default_rng(0).standard_normal(shape)
    full = TUCKER2.max_rank(_geometry(shape))
    assert full == (shape[2], shape[3])
    for sigma in (None, correlated_sigma(*shape[:3])):
        fact = fit_tucker2(kernel, full, sigma=sigma)
        assert fact.factors[0].shape == (shape[2], shape[2])
        assert relative(TUCKER2.reconstruct(fact), kernel) <= 1e-5


def test_tucker2_chain_matches_conv2d(conv_variant, chain_vs_conv2d):
    assert chain_vs_conv2d(TUCKER2, conv_variant) <= 1e-5


def test_tucker2_cost_matches_layers_and_formula(conv_variant, geometry_for):
    geometry = geometry_for(conv_variant, 8, 6)
    (kh, kw), rank = geometry.kernel_size, (3, 5)
    kernel = np.random.default_rng(1).standard_normal(geometry.kernel_shape)
    bias = np.ones(6) if geometry.use_bias else None
    specs = TUCKER2.layers(fit_tucker2(kernel, rank), geometry, bias)
    cost = TUCKER2.cost(geometry, rank)
    assert cost == Cost(sum(s.params for s in specs), sum(s.macs for s in specs))
    assert cost.params == 8 * 3 + kh * kw * 3 * 5 + 5 * 6 + (6 if geometry.use_bias else 0)
    (h, w), (ho, wo) = geometry.input_hw, geometry.output_hw
    assert cost.macs == h * w * 8 * 3 + ho * wo * (kh * kw * 3 * 5 + 5 * 6)
    assert [s.config["filters"] for s in specs] == [3, 5, 6]
    assert specs[1].config["strides"] == geometry.strides and specs[1].config["dilation_rate"] == geometry.dilation
    assert all(not s.config["use_bias"] and "activation" not in s.config for s in specs[:-1])
    assert specs[-1].config["activation"] == geometry.activation


@pytest.mark.parametrize("shape,rank", [((3, 3, 8, 8), (4, 4)), ((5, 5, 3, 4), (2, 2)), ((3, 1, 4, 6), (2, 3)), ((1, 1, 8, 8), (3, 3)),
                                        ((3, 3, 8, 8), (4, 8)), ((3, 3, 8, 6), (2, 6))])
def test_tucker2_sigma_fit_beats_plain_with_monotone_history(shape, rank, correlated_sigma, sigma_error):
    kernel = np.random.default_rng(2).standard_normal(shape)
    sigma = correlated_sigma(*shape[:3], seed=3)
    plain, fitted = fit_tucker2(kernel, rank), fit_tucker2(kernel, rank, sigma=sigma)
    assert (plain.objective, fitted.objective) == ("frobenius", "sigma")
    e_plain, e_sigma = sigma_error(TUCKER2, kernel, plain, sigma), sigma_error(TUCKER2, kernel, fitted, sigma)
    assert e_sigma < e_plain - 1e-4
    assert len(fitted.history) >= 1 and np.all(np.diff(fitted.history) <= 0)
    assert fitted.history[-1] == pytest.approx(e_sigma, rel=1e-9)


@pytest.mark.parametrize("shape,r_t", [((3, 3, 8, 8), 3), ((3, 3, 4, 6), 5), ((1, 1, 8, 8), 2)])
def test_tucker2_sigma_fit_at_full_input_rank_is_the_whitened_svd_optimum(shape, r_t, correlated_sigma, sigma_error):
    """r_S = S leaves W̃ = U_T C with C free: the svd method's closed-form Σ optimum at rank r_T, exactly."""
    kernel = np.random.default_rng(8).standard_normal(shape)
    sigma = correlated_sigma(*shape[:3], seed=4)
    fitted = fit_tucker2(kernel, (shape[2], r_t), sigma=sigma)
    optimum = sigma_error(CONV_SVD, kernel, fit_svd(kernel, (r_t,), sigma=sigma), sigma)
    assert sigma_error(TUCKER2, kernel, fitted, sigma) == pytest.approx(optimum, rel=1e-9)
    assert fitted.history == ()
    u_s, core, u_t = fitted.factors
    assert u_s.shape == (shape[2], shape[2]) and core.shape == shape[:3] + (r_t,)
    np.testing.assert_allclose(u_t.T @ u_t, np.eye(r_t), atol=1e-10)
    # no ALS from any start can do better than the global optimum
    assert sigma_error(TUCKER2, kernel, fit_tucker2(kernel, (shape[2] - 1, r_t), sigma=sigma), sigma) >= optimum - 1e-12


def test_tucker2_factors_are_orthonormal(correlated_sigma):
    kernel = np.random.default_rng(4).standard_normal((3, 3, 8, 8))
    for sigma in (None, correlated_sigma(3, 3, 8)):
        for rank in ((3, 5), (3, 8)):
            u_s, core, u_t = fit_tucker2(kernel, rank, sigma=sigma).factors
            assert core.shape == (3, 3) + rank
            np.testing.assert_allclose(u_s.T @ u_s, np.eye(rank[0]), atol=1e-10)
            np.testing.assert_allclose(u_t.T @ u_t, np.eye(rank[1]), atol=1e-10)


def test_tucker2_same_seed_gives_identical_factors(correlated_sigma):
    kernel = np.random.default_rng(5).standard_normal((3, 3, 8, 8))
    sigma = correlated_sigma(3, 3, 8)
    for kwargs in ({}, {"sigma": sigma}):
        a, b = fit_tucker2(kernel, (4, 3), seed=7, **kwargs), fit_tucker2(kernel, (4, 3), seed=7, **kwargs)
        assert all(np.array_equal(x, y) for x, y in zip(a.factors, b.factors))
        assert a.history == b.history


@pytest.mark.parametrize("rank", [(0, 3), (5, 3), (2, 7), (2,), (1, 2, 3)])
def test_tucker2_invalid_rank_raises_documented_message(rank):
    kernel = np.zeros((3, 3, 4, 6))
    expected = f"Invalid rank (method `tucker2`): expected 1 <= r_S <= 4 and 1 <= r_T <= 6. Received: {rank}."
    with pytest.raises(InvalidRankError, match=re.escape(expected)):
        fit_tucker2(kernel, rank)


def test_tucker2_recovers_planted_kernel(correlated_sigma, relative, sigma_error):
    rng = np.random.default_rng(6)
    u_s, core, u_t = rng.standard_normal((8, 3)), rng.standard_normal((3, 3, 3, 2)), rng.standard_normal((6, 2))
    kernel = np.einsum("sa,hwab,tb->hwst", u_s, core, u_t)
    sigma = correlated_sigma(3, 3, 8)
    plain, fitted = fit_tucker2(kernel, (3, 2)), fit_tucker2(kernel, (3, 2), sigma=sigma)
    assert relative(TUCKER2.reconstruct(plain), kernel) <= 1e-6
    assert relative(TUCKER2.reconstruct(fitted), kernel) <= 1e-6
    assert sigma_error(TUCKER2, kernel, fitted, sigma) <= 1e-6


def _geometry(shape):
    from lrf_core.decompose.base import LayerGeometry

    return LayerGeometry(kind="conv2d", kernel_shape=shape)
