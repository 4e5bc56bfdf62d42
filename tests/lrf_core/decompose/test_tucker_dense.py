"""Tucker of the tensorized Dense weight: the method contract and its Keras chain."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from lrf_core.decompose.base import LayerGeometry
from lrf_core.decompose.tucker_dense import DENSE_TUCKER, tucker_modes
from lrf_core.errors import InvalidRankError
from lrf_core.keras_chain import apply_chain, instantiate_chain

SHAPES = [(64, 48), (60, 36), (24, 30)]
METHOD = DENSE_TUCKER


def _rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


def _kernel(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def _chain_model(specs, m: int) -> keras.Model:
    inputs = keras.Input((m,))
    layers = instantiate_chain(specs, "fc")
    return keras.Model(inputs, apply_chain(specs, layers, inputs))


def _planted(shape, rank, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    core = rng.standard_normal(rank)
    u1, u2, v1, v2 = (rng.standard_normal((size, r)) for size, r in zip(tucker_modes(shape), rank))
    return np.einsum("pqrs,ap,bq,cr,ds->abcd", core, u1, u2, v1, v2).reshape(shape)


def test_dense_tucker_modes_and_full_rank():
    assert tucker_modes((64, 48)) == (8, 8, 8, 6)
    assert tucker_modes((60, 36)) == (6, 10, 6, 6)
    assert METHOD.max_rank(LayerGeometry("dense", (24, 30))) == (4, 6, 6, 5)
    assert METHOD.rank_names == ("r_in1", "r_in2", "r_out1", "r_out2")
    assert METHOD.id == "tucker" and METHOD.kind == "dense" and METHOD.supports_sigma is False


@pytest.mark.parametrize("shape", SHAPES)
def test_dense_tucker_full_rank_reproduces_kernel(shape):
    kernel = _kernel(shape)
    fact = METHOD.fit(kernel, METHOD.max_rank(LayerGeometry("dense", shape)))
    assert _rel(METHOD.reconstruct(fact), kernel) <= 1e-5
    m1, m2, n1, n2 = tucker_modes(shape)
    assert [f.shape for f in fact.factors] == [(m1, m2, n1, n2), (m1, m1), (m2, m2), (n1, n1), (n2, n2)]


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("shape", [(64, 48), (24, 30)])
def test_dense_tucker_chain_full_rank_matches_dense(shape, use_bias):
    m, n = shape
    rng = np.random.default_rng(2)
    kernel = rng.standard_normal(shape).astype("float32")
    bias = rng.standard_normal(n).astype("float32") if use_bias else None
    dense = keras.layers.Dense(n, activation="relu", use_bias=use_bias)
    dense.build((None, m))
    dense.set_weights([kernel] + ([bias] if use_bias else []))

    geometry = LayerGeometry("dense", shape, use_bias=use_bias, activation="relu")
    fact = METHOD.fit(kernel, METHOD.max_rank(geometry))
    specs = METHOD.layers(fact, geometry, bias)
    model = _chain_model(specs, m)
    x = rng.standard_normal((16, m)).astype("float32")
    assert _rel(model(x), np.asarray(dense(x))) <= 1e-5
    assert model.count_params() == METHOD.cost(geometry, fact.rank).params


def test_dense_tucker_chain_is_factor_core_factor_with_bias_last():
    geometry = LayerGeometry("dense", (60, 36), activation="relu")
    fact = METHOD.fit(_kernel((60, 36)), (3, 4, 2, 5))
    specs = METHOD.layers(fact, geometry, np.zeros(36))
    assert [s.class_name for s in specs] == ["Reshape"] + ["EinsumDense"] * 5 + ["Reshape"]
    assert specs[0].config["target_shape"] == (6, 10) and specs[-1].config["target_shape"] == (36,)
    einsums = specs[1:-1]
    assert [len(s.weights[0].shape) for s in einsums] == [2, 2, 4, 2, 2]  # factor, factor, core, ...
    for spec in einsums[:-1]:
        assert "bias_axes" not in spec.config and "activation" not in spec.config
    assert einsums[-1].config["activation"] == "relu" and einsums[-1].config["bias_axes"] == "cd"


@pytest.mark.parametrize("rank", [(1, 1, 1, 1), (2, 5, 3, 4), (8, 3, 8, 2), (8, 8, 8, 6)])
def test_dense_tucker_cost_equals_layer_specs_keras_and_formula(rank):
    shape = (64, 48)
    geometry = LayerGeometry("dense", shape, use_bias=True)
    fact = METHOD.fit(_kernel(shape), rank)
    specs = METHOD.layers(fact, geometry, np.zeros(48))
    cost = METHOD.cost(geometry, rank)
    assert cost.params == sum(s.params for s in specs)
    assert cost.macs == sum(s.macs for s in specs)
    assert _chain_model(specs, 64).count_params() == cost.params

    m1, m2, n1, n2 = tucker_modes(shape)
    r1, r2, r3, r4 = rank
    assert cost.params == m1 * r1 + m2 * r2 + r1 * r2 * r3 * r4 + n1 * r3 + n2 * r4 + 48
    inputs = min(m1 * m2 * r1 + m2 * r1 * r2, m1 * m2 * r2 + m1 * r2 * r1)
    outputs = min(n1 * r3 * r4 + n1 * n2 * r4, n2 * r3 * r4 + n1 * n2 * r3)
    assert cost.macs == inputs + r1 * r2 * r3 * r4 + outputs


@pytest.mark.parametrize(
    "rank, order", [((2, 5, 3, 4), (1, 2, 0, 4, 3)), ((8, 3, 8, 2), (2, 1, 0, 3, 4)), ((4, 4, 4, 3), (1, 2, 0, 3, 4))]
)
def test_dense_tucker_chain_matches_reconstruction_in_every_order(rank, order):
    from lrf_core.decompose.tucker_dense import _plan

    shape = (64, 48)
    assert _plan(shape, rank)[1] == order
    rng = np.random.default_rng(11)
    kernel, bias = rng.standard_normal(shape), rng.standard_normal(48)
    geometry = LayerGeometry("dense", shape, activation="relu")
    fact = METHOD.fit(kernel, rank)
    model = _chain_model(METHOD.layers(fact, geometry, bias), 64)
    x = rng.standard_normal((8, 64)).astype("float32")
    expected = np.maximum(x @ METHOD.reconstruct(fact) + bias, 0)
    assert _rel(model(x), expected) <= 1e-5


def test_dense_tucker_error_non_increasing_in_rank():
    kernel = _kernel((64, 48), seed=3)
    grid = [(1, 1, 1, 1), (2, 2, 2, 2), (4, 4, 4, 3), (6, 6, 6, 4), (8, 8, 8, 6)]
    errors = [_rel(METHOD.reconstruct(METHOD.fit(kernel, r)), kernel) for r in grid]
    assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 0.5 and errors[-1] < 1e-10


def test_dense_tucker_hooi_does_not_worsen_hosvd():
    kernel = _kernel((60, 36), seed=8)
    hosvd = METHOD.fit(kernel, (3, 4, 3, 3), n_iter_max=0)
    hooi = METHOD.fit(kernel, (3, 4, 3, 3))
    assert _rel(METHOD.reconstruct(hooi), kernel) <= _rel(METHOD.reconstruct(hosvd), kernel) + 1e-12


def test_dense_tucker_same_seed_identical_factors():
    kernel = _kernel((60, 36), seed=4)
    first, second = METHOD.fit(kernel, (3, 4, 3, 3), seed=0), METHOD.fit(kernel, (3, 4, 3, 3), seed=0)
    for a, b in zip(first.factors, second.factors):
        np.testing.assert_array_equal(a, b)


def test_dense_tucker_fit_ignores_sigma():
    kernel = _kernel((24, 30), seed=5)
    plain = METHOD.fit(kernel, (2, 3, 3, 2))
    with_sigma = METHOD.fit(kernel, (2, 3, 3, 2), sigma=object())
    assert with_sigma.objective == "frobenius"
    for a, b in zip(plain.factors, with_sigma.factors):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rank", [(0, 1, 1, 1), (9, 1, 1, 1), (1, 1, 1, 7), (1, 1, 1), (1,) * 5])
def test_dense_tucker_invalid_rank_raises(rank):
    with pytest.raises(InvalidRankError) as info:
        METHOD.fit(_kernel((64, 48)), rank)
    assert str(info.value) == (
        "Invalid rank (method `tucker`): expected 1 <= r_in1 <= 8 and 1 <= r_in2 <= 8 and "
        f"1 <= r_out1 <= 8 and 1 <= r_out2 <= 6. Received: {rank}."
    )


def test_dense_tucker_rank_above_reachable_keeps_shapes():
    # r_in1 = 8 > r_in2·r_out1·r_out2 = 2: HOOI can only fill 2 columns, the rest are zero
    kernel = _kernel((64, 48), seed=9)
    fact = METHOD.fit(kernel, (8, 2, 1, 1))
    assert fact.factors[0].shape == (8, 2, 1, 1) and fact.factors[1].shape == (8, 8)
    assert np.isfinite(METHOD.reconstruct(fact)).all()


@pytest.mark.parametrize(
    "shape, rank", [((64, 48), (3, 5, 2, 4)), ((60, 36), (2, 6, 3, 3)), ((24, 30), (4, 2, 3, 2))]
)
def test_dense_tucker_planted_tucker_weight_is_recovered(shape, rank):
    kernel = _planted(shape, rank)
    fact = METHOD.fit(kernel, rank)
    assert _rel(METHOD.reconstruct(fact), kernel) <= 1e-6


@pytest.mark.parametrize(
    "geometry, applicable",
    [
        (LayerGeometry("dense", (64, 48)), True),
        (LayerGeometry("dense", (7, 12)), False),
        (LayerGeometry("dense", (12, 2)), False),
        (LayerGeometry("dense", (64, 48), input_ndim=4, positions=10), False),
    ],
)
def test_dense_tucker_not_applicable(geometry, applicable):
    reason = METHOD.not_applicable(geometry)
    assert (reason is None) == applicable
    if not applicable:
        assert "`tucker`" in reason


def test_dense_tucker_chain_converts_to_tflite_and_matches(run_tflite):
    shape, rank = (24, 30), (3, 4, 4, 3)
    rng = np.random.default_rng(7)
    kernel, bias = rng.standard_normal(shape), rng.standard_normal(30)
    geometry = LayerGeometry("dense", shape, activation="relu")
    fact = METHOD.fit(kernel, rank)
    model = _chain_model(METHOD.layers(fact, geometry, bias), 24)
    x = rng.standard_normal((1, 24)).astype("float32")
    # the factor chain is kept: one matmul per factor and the core
    ops, got = run_tflite(model, x)
    assert sum(op in ("FULLY_CONNECTED", "BATCH_MATMUL") for op in ops) == 5, ops
    assert not any(op.startswith("Flex") for op in ops)
    expected = np.maximum(x @ METHOD.reconstruct(fact) + bias, 0)
    assert _rel(got, expected) <= 1e-4
    assert _rel(model(x), expected) <= 1e-5
