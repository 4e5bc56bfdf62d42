"""The contract every registered method meets (STYLE.md "tests"), on real Keras layers.

Parametrised over ``METHODS`` × layer variants: full rank reproduces the layer output,
error does not grow with rank, the cost formula matches the rebuilt Keras layers, same
seed gives the same factors, and bad ranks raise the documented message.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from lrf_core.covariance import StatisticsAccumulator
from lrf_core.calibration import layer_input_vectors
from lrf_core.decompose.registry import METHODS
from lrf_core.errors import InvalidRankError
from lrf_core.factorize import fit_layer
from lrf_core.graph import describe_model, kernel_and_bias, layer_macs, model_cost
from lrf_core.layout import kernel_to_matrix
from lrf_core.rebuild import rebuild_model

# (name, layer kwargs, input shape): the conv variants the issue names, bias/activation mixed in.
CONV_CASES = [
    ("3x3_s2_same_relu", dict(kernel_size=3, strides=2, padding="same", activation="relu"), (9, 9, 4)),
    ("3x3_valid_nobias", dict(kernel_size=3, padding="valid", use_bias=False), (8, 8, 4)),
    ("3x3_dilation2", dict(kernel_size=3, padding="same", dilation_rate=2), (9, 8, 4)),
    ("1x1_relu", dict(kernel_size=1, activation="relu"), (6, 6, 8)),
    ("5x5_same_nobias", dict(kernel_size=5, padding="same", use_bias=False), (8, 8, 3)),
    ("3x1_s2_same_tanh", dict(kernel_size=(3, 1), strides=(2, 1), padding="same", activation="tanh"), (9, 7, 4)),
]
DENSE_CASES = [
    ("dense_relu", dict(activation="relu"), (24,)),
    ("dense_nobias", dict(use_bias=False), (36,)),
]
OUT_UNITS = {"conv2d": 6, "dense": 18}


def _cases():
    for method in METHODS:
        for name, kwargs, shape in CONV_CASES if method.kind == "conv2d" else DENSE_CASES:
            yield pytest.param(method, kwargs, shape, id=f"{method.kind}-{method.id}-{name}")


def _model(method, kwargs, input_shape, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    if method.kind == "conv2d":
        layer = keras.layers.Conv2D(OUT_UNITS["conv2d"], name="target", bias_initializer="glorot_uniform", **kwargs)
    else:
        layer = keras.layers.Dense(OUT_UNITS["dense"], name="target", bias_initializer="glorot_uniform", **kwargs)
    return keras.Model(inputs, layer(inputs))


def _stats(model, x, geometry):
    inputs = np.asarray(x, dtype=np.float64)
    acc = StatisticsAccumulator(geometry.input_dim)
    acc.update(layer_input_vectors(inputs, geometry))
    return acc.result()


def _setup(method, kwargs, shape, rng):
    model = _model(method, kwargs, shape)
    record = describe_model(model).record("target")
    if method.not_applicable(record.geometry):
        pytest.skip(f"{method.id} not applicable: {method.not_applicable(record.geometry)}")
    # correlated inputs, so Σ is far from identity
    x = (rng.normal(size=(24,) + shape) @ rng.normal(size=(shape[-1], shape[-1]))).astype(np.float32)
    kernel, bias = kernel_and_bias(model.get_layer("target"))
    return model, record.geometry, x, kernel, bias


def _rank_grid(limits):
    """Four increasing ranks up to full: ceil(f·limit) per entry."""
    return [tuple(max(1, math.ceil(f * m)) for m in limits) for f in (0.25, 0.5, 0.75, 1.0)]


def _relative(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("method,kwargs,shape", list(_cases()))
@pytest.mark.parametrize("objective", ["frobenius", "sigma"])
def test_full_rank_reproduces_layer_output(method, kwargs, shape, objective, rng):
    model, geometry, x, kernel, bias = _setup(method, kwargs, shape, rng)
    stats = _stats(model, x, geometry)
    full = method.max_rank(geometry)
    fitted = fit_layer("target", kernel, bias, geometry, method, full, stats=stats, objective=objective)
    child = rebuild_model(model, {"target": fitted})
    assert _relative(np.asarray(child(x)), np.asarray(model(x))) <= 1e-5
    assert fitted.frobenius_error <= 1e-5
    assert [l.name for l in child.layers[1:]] == [f"target_lrf_{i}" for i in range(len(fitted.specs))]


@pytest.mark.parametrize("method,kwargs,shape", list(_cases()))
def test_cost_formula_matches_rebuilt_keras_layers(method, kwargs, shape, rng):
    model, geometry, x, kernel, bias = _setup(method, kwargs, shape, rng)
    rank = _rank_grid(method.max_rank(geometry))[1]
    fitted = fit_layer("target", kernel, bias, geometry, method, rank, objective="frobenius")
    child = rebuild_model(model, {"target": fitted})
    assert fitted.cost_after.params == child.count_params() == model_cost(child).params
    assert fitted.cost_after.macs == sum(layer_macs(l) for l in child.layers) == model_cost(child).macs
    assert fitted.cost_before == model_cost(model)
    assert sum(s.params for s in fitted.specs) == fitted.cost_after.params
    assert sum(s.macs for s in fitted.specs) == fitted.cost_after.macs


@pytest.mark.parametrize("method,kwargs,shape", list(_cases()))
def test_error_does_not_grow_with_rank(method, kwargs, shape, rng):
    model, geometry, x, kernel, bias = _setup(method, kwargs, shape, rng)
    errors = [
        fit_layer("target", kernel, bias, geometry, method, r, objective="frobenius").frobenius_error
        for r in _rank_grid(method.max_rank(geometry))
    ]
    assert all(b <= a + 1e-9 for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] <= 1e-5


@pytest.mark.parametrize("method,kwargs,shape", list(_cases()))
def test_same_seed_gives_identical_factors(method, kwargs, shape, rng):
    model, geometry, x, kernel, bias = _setup(method, kwargs, shape, rng)
    rank = _rank_grid(method.max_rank(geometry))[1]
    one = method.fit(kernel, rank, seed=7)
    two = method.fit(kernel, rank, seed=7)
    assert len(one.factors) == len(two.factors)
    for a, b in zip(one.factors, two.factors):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method,kwargs,shape", list(_cases()))
def test_invalid_ranks_raise_the_documented_message(method, kwargs, shape, rng):
    model, geometry, x, kernel, bias = _setup(method, kwargs, shape, rng)
    limits = method.max_rank(geometry)
    expected = " and ".join(f"1 <= {n} <= {m}" for n, m in zip(method.rank_names, limits))
    too_big = tuple(m + 1 for m in limits)
    zero = (0,) + tuple(limits[1:])
    for bad in (too_big, zero, limits + (1,)):
        with pytest.raises(InvalidRankError) as info:
            method.fit(kernel, bad)
        assert str(info.value) == f"Invalid rank (method `{method.id}`): expected {expected}. Received: {bad}."


@pytest.mark.parametrize("method", [m for m in METHODS if m.supports_sigma], ids=lambda m: f"{m.kind}-{m.id}")
def test_sigma_objective_lowers_output_error_at_equal_rank(method, rng):
    kwargs, shape = (CONV_CASES[0][1], CONV_CASES[0][2]) if method.kind == "conv2d" else (DENSE_CASES[0][1], DENSE_CASES[0][2])
    model, geometry, x, kernel, bias = _setup(method, kwargs, shape, rng)
    stats = _stats(model, x, geometry)
    rank = _rank_grid(method.max_rank(geometry))[0]
    plain = fit_layer("target", kernel, bias, geometry, method, rank, stats=stats, objective="frobenius")
    sigma = fit_layer("target", kernel, bias, geometry, method, rank, stats=stats, objective="sigma")
    assert sigma.sigma_error < plain.sigma_error
    assert plain.frobenius_error <= sigma.frobenius_error + 1e-12  # plain is Frobenius-optimal or close
    # the reported error is the real pre-activation output error on the calibration data
    child = rebuild_model(model, {"target": sigma})
    linear = keras.Model(model.inputs, model.get_layer("target").output)
    assert np.isfinite(sigma.sigma_error)
    if kwargs.get("activation") in (None, "linear"):
        direct = _relative(np.asarray(child(x)), np.asarray(linear(x)))
        assert direct == pytest.approx(sigma.sigma_error, rel=1e-3)


def test_kernel_matrix_of_rebuilt_svd_chain_is_rank_limited(rng):
    """A rank-r channel SVD really has rank r (guards against a silent full-rank fallback)."""
    method = next(m for m in METHODS if m.kind == "conv2d" and m.id == "svd")
    model, geometry, x, kernel, bias = _setup(method, CONV_CASES[0][1], CONV_CASES[0][2], rng)
    fact = method.fit(kernel, (3,))
    assert np.linalg.matrix_rank(kernel_to_matrix(method.reconstruct(fact)), tol=1e-8) == 3
