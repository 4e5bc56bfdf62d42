"""Spatial SVD (METHODS.md §1–2): exactness, Keras chain parity, cost, Σ-fit, determinism, ranks."""

from __future__ import annotations

import re

import numpy as np
import pytest

from lrf_core.covariance import covariance_factor
from lrf_core.decompose.base import Cost, LayerGeometry
from lrf_core.decompose.spatial import SPATIAL, fit_spatial
from lrf_core.errors import InvalidRankError

SHAPES = [(3, 3, 4, 6), (3, 3, 8, 8), (5, 5, 3, 4), (3, 1, 4, 6), (1, 1, 8, 8), (1, 3, 8, 2)]


@pytest.mark.parametrize("shape", SHAPES)
def test_spatial_full_rank_reproduces_kernel(shape, correlated_sigma, relative):
    kernel = np.random.default_rng(0).standard_normal(shape)
    kh, kw, s, t = shape
    (full,) = SPATIAL.max_rank(LayerGeometry(kind="conv2d", kernel_shape=shape))
    assert full == min(kh * s, kw * t)
    for sigma in (None, correlated_sigma(kh, kw, s)):
        fact = fit_spatial(kernel, (full,), sigma=sigma)
        assert relative(SPATIAL.reconstruct(fact), kernel) <= 1e-5


def test_spatial_chain_matches_conv2d(conv_variant, chain_vs_conv2d):
    assert chain_vs_conv2d(SPATIAL, conv_variant) <= 1e-5


def test_spatial_cost_matches_layers_and_formula(conv_variant, geometry_for):
    geometry = geometry_for(conv_variant, 8, 6)
    (kh, kw), r = geometry.kernel_size, 5
    kernel = np.random.default_rng(1).standard_normal(geometry.kernel_shape)
    bias = np.ones(6) if geometry.use_bias else None
    specs = SPATIAL.layers(fit_spatial(kernel, (r,)), geometry, bias)
    cost = SPATIAL.cost(geometry, (r,))
    assert cost == Cost(sum(s.params for s in specs), sum(s.macs for s in specs))
    assert cost.params == r * (kh * 8 + kw * 6) + (6 if geometry.use_bias else 0)
    (_, w), (ho, wo) = geometry.input_hw, geometry.output_hw
    assert cost.macs == ho * w * kh * 8 * r + ho * wo * kw * r * 6
    assert specs[0].config["kernel_size"] == (kh, 1) and specs[1].config["kernel_size"] == (1, kw)
    assert specs[0].config["strides"] == (geometry.strides[0], 1)
    assert specs[1].config["dilation_rate"] == (1, geometry.dilation[1])
    assert not specs[0].config["use_bias"] and "activation" not in specs[0].config
    assert specs[-1].config["activation"] == geometry.activation


@pytest.mark.parametrize("shape,rank", [((3, 3, 8, 8), 4), ((5, 5, 3, 4), 3), ((3, 3, 4, 6), 2)])
def test_spatial_sigma_fit_beats_plain_with_monotone_history(shape, rank, correlated_sigma, sigma_error):
    kernel = np.random.default_rng(2).standard_normal(shape)
    sigma = correlated_sigma(*shape[:3], seed=3)
    plain, fitted = fit_spatial(kernel, (rank,)), fit_spatial(kernel, (rank,), sigma=sigma)
    assert (plain.objective, fitted.objective) == ("frobenius", "sigma")
    e_plain, e_sigma = sigma_error(SPATIAL, kernel, plain, sigma), sigma_error(SPATIAL, kernel, fitted, sigma)
    assert e_sigma < e_plain - 1e-4
    assert len(fitted.history) >= 1 and np.all(np.diff(fitted.history) <= 0)
    assert fitted.history[-1] == pytest.approx(e_sigma, rel=1e-9)


def test_spatial_sigma_fit_is_the_closed_form_when_sigma_is_block_diagonal_over_columns(sigma_error):
    """Σ = I_kw ⊗ Σ_v (no correlation across column offsets): ``[Ŵ L_v]_r L_v⁻¹`` is optimal."""
    from lrf_core.decompose.linalg import lowrank_factors

    rng = np.random.default_rng(9)
    kh, kw, s, t, r = 3, 3, 4, 6, 3
    x = rng.standard_normal((kh * s, 3 * kh * s))
    sigma_v = x @ x.T / x.shape[1]
    sigma6 = np.einsum("hsgu,wv->hwsgvu", sigma_v.reshape(kh, s, kh, s), np.eye(kw))
    sigma = covariance_factor(sigma6.reshape(kh * kw * s, -1))
    kernel = rng.standard_normal((kh, kw, s, t))
    w_hat = kernel.transpose(1, 3, 0, 2).reshape(kw * t, kh * s)
    b, a = lowrank_factors(w_hat, r, covariance_factor(sigma_v))
    closed = (b @ a).reshape(kw, t, kh, s).transpose(2, 0, 3, 1)
    from lrf_core.covariance import relative_sigma_error
    from lrf_core.layout import kernel_to_matrix

    optimum = relative_sigma_error(kernel_to_matrix(kernel), kernel_to_matrix(closed), sigma)
    fitted = fit_spatial(kernel, (r,), sigma=sigma)
    assert sigma_error(SPATIAL, kernel, fitted, sigma) == pytest.approx(optimum, rel=1e-7)
    assert sigma_error(SPATIAL, kernel, fit_spatial(kernel, (r,)), sigma) > optimum + 1e-3


def test_spatial_same_seed_gives_identical_factors(correlated_sigma):
    kernel = np.random.default_rng(5).standard_normal((3, 3, 8, 8))
    sigma = correlated_sigma(3, 3, 8)
    for kwargs in ({}, {"sigma": sigma}):
        a, b = fit_spatial(kernel, (4,), seed=7, **kwargs), fit_spatial(kernel, (4,), seed=7, **kwargs)
        assert all(np.array_equal(x, y) for x, y in zip(a.factors, b.factors))
        assert a.history == b.history


@pytest.mark.parametrize("rank", [(0,), (13,), (2, 2)])
def test_spatial_invalid_rank_raises_documented_message(rank):
    expected = f"Invalid rank (method `spatial`): expected 1 <= r <= 12. Received: {rank}."
    with pytest.raises(InvalidRankError, match=re.escape(expected)):
        fit_spatial(np.zeros((3, 3, 4, 6)), rank)


def test_spatial_recovers_planted_kernel(correlated_sigma, relative, sigma_error):
    rng = np.random.default_rng(6)
    v, h = rng.standard_normal((3, 8, 3)), rng.standard_normal((3, 3, 6))
    kernel = np.einsum("hsr,wrt->hwst", v, h)
    sigma = correlated_sigma(3, 3, 8)
    plain, fitted = fit_spatial(kernel, (3,)), fit_spatial(kernel, (3,), sigma=sigma)
    assert relative(SPATIAL.reconstruct(plain), kernel) <= 1e-6
    assert relative(SPATIAL.reconstruct(fitted), kernel) <= 1e-6
    assert sigma_error(SPATIAL, kernel, fitted, sigma) <= 1e-6
