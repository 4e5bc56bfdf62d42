"""Tensorized Dense helpers: mode choice, reshapes, einsum chain plans and their cost."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from lrf_core.decompose.base import LayerGeometry
from lrf_core.decompose.tensorize import (
    balanced_factors,
    chain_cost,
    dense_modes,
    einsum_chain_layers,
    kernel_to_tensor,
    leading_left_vectors,
    plan_einsum_chain,
    tensor_to_kernel,
    tensorization_problem,
)
from lrf_core.errors import LRFError


@pytest.mark.parametrize(
    "x, k, expected",
    [
        (64, 3, (4, 4, 4)),
        (48, 3, (3, 4, 4)),
        (60, 3, (3, 4, 5)),
        (36, 3, (3, 3, 4)),
        (1024, 3, (8, 8, 16)),
        (4096, 3, (16, 16, 16)),
        (7, 3, (1, 1, 7)),
        (1, 3, (1, 1, 1)),
        (48, 2, (6, 8)),
        (4096, 2, (64, 64)),
        (30, 2, (5, 6)),
        (13, 2, (1, 13)),
    ],
)
def test_balanced_factors_examples(x, k, expected):
    assert balanced_factors(x, k) == expected


def _brute_force(x: int, k: int) -> tuple[int, ...]:
    divisors = [d for d in range(1, x + 1) if x % d == 0]
    candidates = [
        tuple(sorted(c)) for c in itertools.product(divisors, repeat=k) if math.prod(c) == x
    ]
    return min(candidates, key=lambda c: c[::-1])


@pytest.mark.parametrize("k", [2, 3])
def test_balanced_factors_is_the_most_balanced_factorization(k):
    for x in range(1, 200):
        got = balanced_factors(x, k)
        assert math.prod(got) == x and len(got) == k and list(got) == sorted(got)
        assert got == _brute_force(x, k), x


def test_balanced_factors_rejects_non_positive():
    with pytest.raises(LRFError, match="x >= 1"):
        balanced_factors(0, 3)


def test_dense_modes_pairs_ascending_inputs_with_descending_outputs():
    assert dense_modes(60, 36, 3) == ((3, 4, 5), (4, 3, 3))
    assert dense_modes(64, 48, 2) == ((8, 8), (8, 6))


def test_kernel_tensor_round_trip_matches_keras_reshape_order():
    kernel = np.arange(24 * 30, dtype=float).reshape(24, 30)
    tensor = kernel_to_tensor(kernel, (2, 3, 4), (5, 6))
    assert tensor.shape == (2, 3, 4, 5, 6)
    # row-major: input index i = (i1·3 + i2)·4 + i3, output j = j1·6 + j2
    assert tensor[1, 2, 3, 4, 5] == kernel[(1 * 3 + 2) * 4 + 3, 4 * 6 + 5]
    np.testing.assert_array_equal(tensor_to_kernel(tensor, (24, 30)), kernel)


def test_kernel_to_tensor_rejects_wrong_modes():
    with pytest.raises(LRFError, match=r"Expected a Dense kernel of shape \(24, 30\)"):
        kernel_to_tensor(np.zeros((24, 31)), (2, 3, 4), (5, 6))


def test_plan_einsum_chain_equations_and_macs():
    sizes = dict(a=2, b=3, d=5, e=7, p=11)
    steps = plan_einsum_chain(sizes, "ab", "de", ["adp", "pbe"])
    assert [s.equation for s in steps] == ["zab,adp->zbdp", "zbdp,pbe->zde"]
    assert [s.kernel_shape for s in steps] == [(2, 5, 11), (11, 3, 7)]
    assert [s.output_shape for s in steps] == [(3, 5, 11), (5, 7)]
    assert [s.macs for s in steps] == [2 * 3 * 5 * 11, 3 * 5 * 11 * 7]


def test_plan_einsum_chain_rejects_wrong_final_axes():
    with pytest.raises(LRFError, match="expected 'de'"):
        plan_einsum_chain(dict(a=2, d=3, e=4), "a", "de", ["ad"])


def test_chain_cost_counts_kernels_bias_and_positions():
    steps = plan_einsum_chain(dict(a=2, b=3, d=5, e=7, p=11), "ab", "de", ["adp", "pbe"])
    geometry = LayerGeometry("dense", (6, 35), use_bias=True, positions=3)
    cost = chain_cost(steps, geometry)
    assert cost.params == 2 * 5 * 11 + 11 * 3 * 7 + 35
    assert cost.macs == 3 * (2 * 3 * 5 * 11 + 3 * 5 * 11 * 7)


@pytest.mark.parametrize("use_bias", [True, False])
def test_einsum_chain_layers_put_bias_and_activation_on_last_einsum_only(use_bias):
    steps = plan_einsum_chain(dict(a=2, b=3, d=5, e=7, p=11), "ab", "de", ["adp", "pbe"])
    geometry = LayerGeometry("dense", (6, 35), use_bias=use_bias, activation="relu")
    kernels = [np.ones((2, 5, 11)), np.ones((11, 3, 7))]
    bias = np.arange(35.0) if use_bias else None
    specs = einsum_chain_layers(steps, kernels, (2, 3), geometry, bias)
    assert [s.class_name for s in specs] == ["Reshape", "EinsumDense", "EinsumDense", "Reshape"]
    assert specs[0].config == dict(target_shape=(2, 3)) and specs[-1].config == dict(target_shape=(35,))
    first, last = specs[1], specs[2]
    assert "bias_axes" not in first.config and "activation" not in first.config
    assert last.config["activation"] == "relu"
    if use_bias:
        assert last.config["bias_axes"] == "de"
        np.testing.assert_array_equal(last.weights[1], np.arange(35.0).reshape(5, 7))
    else:
        assert "bias_axes" not in last.config and len(last.weights) == 1
    assert [s.macs for s in specs] == [0, steps[0].macs, steps[1].macs, 0]


@pytest.mark.parametrize("shape", [(6, 40), (40, 6), (7, 7)])
def test_leading_left_vectors_span_the_leading_singular_subspace(shape):
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal(shape) * np.linspace(3.0, 0.1, shape[1])
    u = leading_left_vectors(matrix, 3)
    reference = np.linalg.svd(matrix)[0][:, :3]
    assert u.shape == (shape[0], 3)
    np.testing.assert_allclose(u.T @ u, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(u @ u.T, reference @ reference.T, atol=1e-8)
    assert (u[np.argmax(np.abs(u), axis=0), np.arange(3)] > 0).all()  # sign rule
    np.testing.assert_array_equal(u, leading_left_vectors(matrix.copy(), 3))


def test_leading_left_vectors_full_rank_basis_is_exact():
    matrix = np.random.default_rng(2).standard_normal((8, 30))
    u = leading_left_vectors(matrix, 8)
    np.testing.assert_allclose(u @ (u.T @ matrix), matrix, atol=1e-12)


def test_leading_left_vectors_pads_missing_columns_with_zeros():
    matrix = np.random.default_rng(0).standard_normal((5, 2))
    u = leading_left_vectors(matrix, 4)
    assert u.shape == (5, 4)
    np.testing.assert_allclose(u[:, :2].T @ u[:, :2], np.eye(2), atol=1e-12)
    np.testing.assert_array_equal(u[:, 2:], 0.0)


@pytest.mark.parametrize(
    "geometry, fragment",
    [
        (LayerGeometry("dense", (64, 48)), None),
        (LayerGeometry("dense", (7, 12)), "m = 7"),
        (LayerGeometry("dense", (12, 3)), "n = 3"),
        (LayerGeometry("dense", (64, 48), input_ndim=3), "3-D input"),
        (LayerGeometry("conv2d", (3, 3, 8, 8)), "Dense layers only"),
    ],
)
def test_tensorization_problem(geometry, fragment):
    reason = tensorization_problem(geometry, "tt")
    if fragment is None:
        assert reason is None
    else:
        assert fragment in reason and "`tt`" in reason
