"""Tensor-train (TT-matrix) Dense factorization: the method contract and its Keras chain."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from lrf_core.decompose.base import LayerGeometry
from lrf_core.decompose.tt import TT, tt_modes
from lrf_core.errors import InvalidRankError
from lrf_core.keras_chain import apply_chain, instantiate_chain

SHAPES = [(64, 48), (60, 36), (24, 30)]


def _rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


def _kernel(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def _chain_model(specs, m: int) -> keras.Model:
    inputs = keras.Input((m,))
    layers = instantiate_chain(specs, "fc")
    return keras.Model(inputs, apply_chain(specs, layers, inputs))


def _planted(shape, rank, seed=1) -> np.ndarray:
    (m1, m2, m3), (n1, n2, n3) = tt_modes(shape)
    r1, r2 = rank
    rng = np.random.default_rng(seed)
    g1 = rng.standard_normal((m1, n1, r1))
    g2 = rng.standard_normal((r1, m2, n2, r2))
    g3 = rng.standard_normal((r2, m3, n3))
    return np.einsum("adp,pbeq,qcf->abcdef", g1, g2, g3).reshape(shape)


def test_tt_modes_and_full_ranks():
    geometry = LayerGeometry("dense", (64, 48))
    assert tt_modes((64, 48)) == ((4, 4, 4), (4, 4, 3))
    # m_k n_k = (16, 16, 12): r_1 = min(16, 192), r_2 = min(256, 12)
    assert TT.max_rank(geometry) == (16, 12)
    assert TT.rank_names == ("r_1", "r_2") and TT.id == "tt" and TT.kind == "dense"
    assert TT.supports_sigma is False


@pytest.mark.parametrize("shape", SHAPES)
def test_tt_full_rank_reproduces_kernel(shape):
    kernel = _kernel(shape)
    fact = TT.fit(kernel, TT.max_rank(LayerGeometry("dense", shape)))
    assert _rel(TT.reconstruct(fact), kernel) <= 1e-5
    (m1, m2, m3), (n1, n2, n3) = tt_modes(shape)
    r1, r2 = fact.rank
    assert [c.shape for c in fact.factors] == [(1, m1, n1, r1), (r1, m2, n2, r2), (r2, m3, n3, 1)]


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("shape", [(64, 48), (24, 30)])
def test_tt_chain_full_rank_matches_dense(shape, use_bias):
    m, n = shape
    rng = np.random.default_rng(2)
    kernel = rng.standard_normal(shape).astype("float32")
    bias = rng.standard_normal(n).astype("float32") if use_bias else None
    dense = keras.layers.Dense(n, activation="relu", use_bias=use_bias)
    dense.build((None, m))
    dense.set_weights([kernel] + ([bias] if use_bias else []))

    geometry = LayerGeometry("dense", shape, use_bias=use_bias, activation="relu")
    fact = TT.fit(kernel, TT.max_rank(geometry))
    specs = TT.layers(fact, geometry, bias)
    model = _chain_model(specs, m)
    x = rng.standard_normal((16, m)).astype("float32")
    expected = np.asarray(dense(x))
    assert _rel(model(x), expected) <= 1e-5
    assert model.count_params() == TT.cost(geometry, fact.rank).params


def test_tt_bias_and_activation_only_on_last_einsum():
    geometry = LayerGeometry("dense", (60, 36), activation="relu")
    fact = TT.fit(_kernel((60, 36)), (3, 5))
    specs = TT.layers(fact, geometry, np.zeros(36))
    assert [s.class_name for s in specs] == ["Reshape"] + ["EinsumDense"] * 3 + ["Reshape"]
    assert specs[0].config["target_shape"] == (3, 4, 5) and specs[-1].config["target_shape"] == (36,)
    for spec in specs[1:-2]:
        assert "bias_axes" not in spec.config and "activation" not in spec.config
    assert specs[-2].config["activation"] == "relu" and specs[-2].config["bias_axes"] == "def"


@pytest.mark.parametrize(
    "shape, rank", [((64, 48), (1, 1)), ((64, 48), (3, 5)), ((64, 48), (16, 12)), ((8, 48), (5, 1))]
)
def test_tt_cost_equals_layer_specs_keras_and_formula(shape, rank):
    m, n = shape
    geometry = LayerGeometry("dense", shape, use_bias=True)
    fact = TT.fit(_kernel(shape), rank)
    specs = TT.layers(fact, geometry, np.zeros(n))
    cost = TT.cost(geometry, rank)
    assert cost.params == sum(s.params for s in specs)
    assert cost.macs == sum(s.macs for s in specs)
    assert _chain_model(specs, m).count_params() == cost.params

    (m1, m2, m3), (n1, n2, n3) = tt_modes(shape)
    r1, r2 = rank
    assert cost.params == m1 * n1 * r1 + r1 * m2 * n2 * r2 + r2 * m3 * n3 + n
    forward = m * n1 * r1 + m2 * m3 * n1 * r1 * n2 * r2 + m3 * n1 * n2 * r2 * n3
    backward = m * n3 * r2 + m1 * m2 * n3 * r2 * n2 * r1 + m1 * n2 * n3 * r1 * n1
    assert cost.macs == min(forward, backward)


@pytest.mark.parametrize(
    "shape, rank, left_to_right", [((8, 48), (5, 1), True), ((64, 48), (3, 5), False)]
)
def test_tt_chain_matches_reconstruction_in_both_contraction_orders(shape, rank, left_to_right):
    from lrf_core.decompose.tt import _plan

    m, n = shape
    assert _plan(shape, rank)[1] is left_to_right
    rng = np.random.default_rng(11)
    kernel, bias = rng.standard_normal(shape), rng.standard_normal(n)
    geometry = LayerGeometry("dense", shape, activation="relu")
    fact = TT.fit(kernel, rank)
    model = _chain_model(TT.layers(fact, geometry, bias), m)
    x = rng.standard_normal((8, m)).astype("float32")
    expected = np.maximum(x @ TT.reconstruct(fact) + bias, 0)
    assert _rel(model(x), expected) <= 1e-5


def test_tt_cost_scales_macs_with_positions_and_drops_bias():
    base = TT.cost(LayerGeometry("dense", (64, 48), use_bias=False), (4, 4))
    scaled = TT.cost(LayerGeometry("dense", (64, 48), use_bias=False, positions=5), (4, 4))
    assert scaled.params == base.params and scaled.macs == 5 * base.macs
    assert TT.cost(LayerGeometry("dense", (64, 48), use_bias=True), (4, 4)).params == base.params + 48


def test_tt_error_non_increasing_in_rank():
    kernel = _kernel((64, 48), seed=3)
    errors = [_rel(TT.reconstruct(TT.fit(kernel, (r, r))), kernel) for r in (1, 2, 4, 8, 12)]
    assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 0.5 and errors[-1] < errors[0]


def test_tt_same_seed_identical_factors():
    kernel = _kernel((60, 36), seed=4)
    first, second = TT.fit(kernel, (5, 7), seed=0), TT.fit(kernel, (5, 7), seed=0)
    for a, b in zip(first.factors, second.factors):
        np.testing.assert_array_equal(a, b)


def test_tt_fit_ignores_sigma():
    kernel = _kernel((24, 30), seed=5)
    plain = TT.fit(kernel, (4, 4))
    with_sigma = TT.fit(kernel, (4, 4), sigma=object())
    assert with_sigma.objective == "frobenius"
    for a, b in zip(plain.factors, with_sigma.factors):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rank", [(0, 4), (17, 4), (4, 13), (4,), (4, 4, 4)])
def test_tt_invalid_rank_raises(rank):
    with pytest.raises(InvalidRankError) as info:
        TT.fit(_kernel((64, 48)), rank)
    assert str(info.value) == (
        f"Invalid rank (method `tt`): expected 1 <= r_1 <= 16 and 1 <= r_2 <= 12. Received: {rank}."
    )


def test_tt_rank_above_reachable_is_zero_padded():
    # (7, 12): modes (1, 1, 7) x (3, 2, 2), m_k n_k = (3, 2, 14), full ranks (3, 6); with
    # r_1 = 1 the second unfolding is (1·2, 14), so r_2 = 6 > 2 is padded with zero slices
    kernel = _kernel((7, 12), seed=6)
    padded, reachable = TT.fit(kernel, (1, 6)), TT.fit(kernel, (1, 2))
    assert padded.factors[1].shape == (1, 1, 2, 6) and padded.factors[2].shape == (6, 7, 2, 1)
    np.testing.assert_array_equal(padded.factors[1][..., 2:], 0.0)
    np.testing.assert_allclose(TT.reconstruct(padded), TT.reconstruct(reachable), atol=1e-12)


@pytest.mark.parametrize(
    "shape, rank",
    # the last unfolding (r_1·m_2 n_2, m_3 n_3) is tall for the first three, wide for the last
    [((64, 48), (3, 5)), ((60, 36), (2, 6)), ((24, 30), (4, 2)), ((60, 36), (1, 6))],
)
def test_tt_planted_tt_weight_is_recovered(shape, rank):
    kernel = _planted(shape, rank)
    fact = TT.fit(kernel, rank)
    assert _rel(TT.reconstruct(fact), kernel) <= 1e-6


@pytest.mark.parametrize(
    "geometry, applicable",
    [
        (LayerGeometry("dense", (64, 48)), True),
        (LayerGeometry("dense", (7, 12)), False),
        (LayerGeometry("dense", (12, 7)), False),
        (LayerGeometry("dense", (64, 48), input_ndim=3, positions=10), False),
    ],
)
def test_tt_not_applicable(geometry, applicable):
    reason = TT.not_applicable(geometry)
    assert (reason is None) == applicable
    if not applicable:
        assert "`tt`" in reason


def test_tt_chain_converts_to_tflite_and_matches(run_tflite):
    shape, rank = (24, 30), (4, 3)
    rng = np.random.default_rng(7)
    kernel, bias = rng.standard_normal(shape), rng.standard_normal(30)
    geometry = LayerGeometry("dense", shape, activation="relu")
    fact = TT.fit(kernel, rank)
    model = _chain_model(TT.layers(fact, geometry, bias), 24)
    x = rng.standard_normal((1, 24)).astype("float32")
    # the factor chain is kept: one matmul per core, no folding back to the (24, 30) kernel
    ops, got = run_tflite(model, x)
    assert sum(op in ("FULLY_CONNECTED", "BATCH_MATMUL") for op in ops) == 3, ops
    assert not any(op.startswith("Flex") for op in ops)
    expected = np.maximum(x @ TT.reconstruct(fact) + bias, 0)
    assert _rel(got, expected) <= 1e-4
    assert _rel(model(x), expected) <= 1e-5
    assert not math.isclose(_rel(got, np.maximum(x @ kernel + bias, 0)), 0.0)  # truly low rank
