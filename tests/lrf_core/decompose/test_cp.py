"""CP (METHODS.md §1–2): exactness, Keras chain parity, cost, Σ-fit, determinism, ranks."""

from __future__ import annotations

import re

import numpy as np
import pytest

from lrf_core.decompose.base import Cost, LayerGeometry
from lrf_core.decompose.cp import CP, fit_cp
from lrf_core.errors import InvalidRankError

SHAPES = [(3, 3, 4, 6), (3, 3, 8, 8), (5, 5, 3, 4), (3, 1, 4, 6), (1, 1, 8, 8), (3, 3, 6, 2)]


@pytest.mark.parametrize("shape", SHAPES)
def test_cp_full_rank_is_the_exact_elementary_construction(shape, correlated_sigma, relative):
    kernel = np.random.default_rng(0).standard_normal(shape)
    kh, kw, s, t = shape
    (full,) = CP.max_rank(LayerGeometry(kind="conv2d", kernel_shape=shape))
    assert full == kh * kw * min(s, t)
    for sigma in (None, correlated_sigma(kh, kw, s)):
        fact = fit_cp(kernel, (full,), sigma=sigma)
        assert fact.history == ()
        assert relative(CP.reconstruct(fact), kernel) <= 1e-5
        a_h, a_w, a_s, a_t = fact.factors
        # one term per slice: every spatial column is a (scaled) unit vector
        assert np.all(np.count_nonzero(a_h, axis=0) <= 1) and np.all(np.count_nonzero(a_w, axis=0) <= 1)


def test_cp_chain_matches_conv2d(conv_variant, chain_vs_conv2d):
    assert chain_vs_conv2d(CP, conv_variant) <= 1e-5


def test_cp_cost_matches_layers_and_formula(conv_variant, geometry_for):
    geometry = geometry_for(conv_variant, 8, 6)
    (kh, kw), r = geometry.kernel_size, 5
    kernel = np.random.default_rng(1).standard_normal(geometry.kernel_shape)
    bias = np.ones(6) if geometry.use_bias else None
    specs = CP.layers(fit_cp(kernel, (r,)), geometry, bias)
    cost = CP.cost(geometry, (r,))
    assert cost == Cost(sum(s.params for s in specs), sum(s.macs for s in specs))
    (h, w), (ho, wo) = geometry.input_hw, geometry.output_hw
    assert cost.params == r * (8 + kh + kw + 6) + (6 if geometry.use_bias else 0)
    assert cost.macs == r * (h * w * 8 + ho * w * kh + ho * wo * (kw + 6))
    spatial = "DepthwiseConv2D" if geometry.strides == (1, 1) else "Conv2D"  # TF depthwise: equal strides only
    assert [s.class_name for s in specs] == ["Conv2D", spatial, spatial, "Conv2D"]
    assert specs[1].config["kernel_size"] == (kh, 1) and specs[2].config["kernel_size"] == (1, kw)
    assert specs[1].config["strides"] == (geometry.strides[0], 1) and specs[2].config["strides"] == (1, geometry.strides[1])
    if spatial == "Conv2D":
        assert specs[1].config["groups"] == specs[1].config["filters"] == r
    assert all(not s.config["use_bias"] and "activation" not in s.config for s in specs[:-1])
    assert specs[-1].config["activation"] == geometry.activation


@pytest.mark.parametrize("shape,rank", [((3, 3, 8, 8), 4), ((5, 5, 3, 4), 3), ((3, 1, 4, 6), 3), ((1, 1, 8, 8), 3)])
def test_cp_sigma_fit_beats_plain_with_monotone_history(shape, rank, correlated_sigma, sigma_error):
    kernel = np.random.default_rng(2).standard_normal(shape)
    sigma = correlated_sigma(*shape[:3], seed=3)
    plain, fitted = fit_cp(kernel, (rank,)), fit_cp(kernel, (rank,), sigma=sigma)
    assert (plain.objective, fitted.objective) == ("frobenius", "sigma")
    e_plain, e_sigma = sigma_error(CP, kernel, plain, sigma), sigma_error(CP, kernel, fitted, sigma)
    assert e_sigma < e_plain - 1e-4
    assert len(fitted.history) >= 1 and np.all(np.diff(fitted.history) <= 0)
    assert fitted.history[-1] == pytest.approx(e_sigma, rel=1e-9)


def test_cp_same_seed_gives_identical_factors(correlated_sigma):
    kernel = np.random.default_rng(5).standard_normal((3, 1, 4, 6))
    sigma = correlated_sigma(3, 1, 4)
    for kwargs in ({}, {"sigma": sigma}):
        a, b = fit_cp(kernel, (5,), seed=7, **kwargs), fit_cp(kernel, (5,), seed=7, **kwargs)
        assert all(np.array_equal(x, y) for x, y in zip(a.factors, b.factors))
        assert a.history == b.history


@pytest.mark.parametrize("rank", [(0,), (37,), (2, 2)])
def test_cp_invalid_rank_raises_documented_message(rank):
    expected = f"Invalid rank (method `cp`): expected 1 <= R <= 36. Received: {rank}."
    with pytest.raises(InvalidRankError, match=re.escape(expected)):
        fit_cp(np.zeros((3, 3, 4, 6)), rank)


def test_cp_recovers_planted_kernel(correlated_sigma, relative, sigma_error):
    rng = np.random.default_rng(6)
    factors = [rng.standard_normal((n, 3)) for n in (3, 3, 8, 6)]
    kernel = np.einsum("hr,wr,sr,tr->hwst", *factors)
    sigma = correlated_sigma(3, 3, 8)
    plain, fitted = fit_cp(kernel, (3,)), fit_cp(kernel, (3,), sigma=sigma)
    assert relative(CP.reconstruct(plain), kernel) <= 1e-6
    assert relative(CP.reconstruct(fitted), kernel) <= 1e-6
    assert sigma_error(CP, kernel, fitted, sigma) <= 1e-6


def test_cp_factors_are_balanced():
    kernel = np.random.default_rng(8).standard_normal((3, 3, 4, 6)) * 100.0
    factors = fit_cp(kernel, (4,)).factors
    norms = np.array([np.linalg.norm(f, axis=0) for f in factors])
    np.testing.assert_allclose(norms, np.broadcast_to(norms[0], norms.shape), rtol=1e-10)
