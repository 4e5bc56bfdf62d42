"""Layout (kernel ↔ matrix, im2col) and streaming input statistics."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from lrf_core.calibration import collect_statistics
from lrf_core.covariance import StatisticsAccumulator, covariance_factor, relative_sigma_error
from lrf_core.errors import DataError
from lrf_core.layout import extract_patches, kernel_to_matrix, matrix_to_kernel

CONV_VARIANTS = {
    "3x3_s2_same": dict(kernel_size=(3, 3), strides=(2, 2), padding="same"),
    "3x3_valid": dict(kernel_size=(3, 3), padding="valid"),
    "3x3_dilation2": dict(kernel_size=(3, 3), padding="same", dilation_rate=(2, 2)),
    "1x1": dict(kernel_size=(1, 1)),
    "5x5_same": dict(kernel_size=(5, 5), padding="same"),
    "3x1_s2_valid": dict(kernel_size=(3, 1), strides=(2, 1), padding="valid"),
    "4x4_s3_same": dict(kernel_size=(4, 4), strides=(3, 3), padding="same"),
}


@pytest.mark.parametrize("variant", sorted(CONV_VARIANTS))
def test_patches_times_kernel_matrix_equals_conv_output(variant, rng):
    images = rng.normal(size=(2, 11, 9, 3)).astype(np.float32)
    conv = keras.layers.Conv2D(5, use_bias=False, **CONV_VARIANTS[variant])
    expected = np.asarray(conv(images))
    cfg = conv.get_config()
    patches = extract_patches(
        images, tuple(cfg["kernel_size"]), strides=tuple(cfg["strides"]), padding=cfg["padding"],
        dilation=tuple(cfg["dilation_rate"]),
    )
    got = patches @ kernel_to_matrix(conv.kernel.numpy()).T
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_kernel_matrix_round_trip(rng):
    conv_kernel = rng.normal(size=(3, 2, 4, 6))
    dense_kernel = rng.normal(size=(7, 5))
    np.testing.assert_array_equal(matrix_to_kernel(kernel_to_matrix(conv_kernel), conv_kernel.shape), conv_kernel)
    np.testing.assert_array_equal(matrix_to_kernel(kernel_to_matrix(dense_kernel), dense_kernel.shape), dense_kernel)
    assert kernel_to_matrix(conv_kernel).shape == (6, 24)
    assert kernel_to_matrix(dense_kernel).shape == (5, 7)


def test_streaming_sigma_equals_brute_force_im2col(rng):
    """collect_statistics over batches == one np.cov-style pass over every patch at once."""
    images = rng.normal(size=(37, 10, 10, 3)).astype(np.float32)
    inputs = keras.Input((10, 10, 3))
    hidden = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inputs)
    out = keras.layers.Conv2D(6, 3, strides=2, padding="same", dilation_rate=1, name="c2")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(3, name="d")(keras.layers.Flatten()(out)))
    stats = collect_statistics(model, images, ["c2", "d"], batch_size=8)

    layer_in = np.asarray(keras.Model(inputs, hidden)(images), dtype=np.float64)
    patches = extract_patches(layer_in, (3, 3), strides=(2, 2), padding="same").reshape(-1, 36)
    np.testing.assert_allclose(stats["c2"].second_moment, patches.T @ patches / len(patches), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats["c2"].mean, patches.mean(axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats["c2"].covariance, np.cov(patches.T, bias=True), rtol=1e-5, atol=1e-7)
    assert stats["c2"].count == 37 * 5 * 5
    flat = np.asarray(keras.Model(inputs, model.get_layer("d").input)(images), dtype=np.float64)
    np.testing.assert_allclose(stats["d"].second_moment, flat.T @ flat / 37, rtol=1e-5, atol=1e-6)


def test_accumulator_is_order_independent_and_exact(rng):
    x = rng.normal(size=(100, 5))
    one, two = StatisticsAccumulator(5), StatisticsAccumulator(5)
    one.update(x)
    for chunk in np.array_split(x[::-1], 7):
        two.update(chunk)
    np.testing.assert_allclose(one.result().second_moment, two.result().second_moment, rtol=1e-12)
    np.testing.assert_allclose(one.result().covariance, np.cov(x.T, bias=True), rtol=1e-10)


def test_cholesky_escalates_damping_on_singular_sigma(rng):
    x = rng.normal(size=(50, 3)) @ rng.normal(size=(3, 6))  # rank 3 in 6 dims
    sigma = x.T @ x / 50
    factor = covariance_factor(sigma)
    assert factor.damping > 0
    assert factor.damping <= 1e-3
    scale = np.mean(np.diag(sigma))
    np.testing.assert_allclose(factor.root @ factor.root.T, sigma + factor.damping * scale * np.eye(6), atol=1e-10)
    assert covariance_factor(np.eye(4)).damping == 0.0


def test_non_finite_sigma_is_a_data_error():
    bad = np.eye(3)
    bad[0, 1] = np.nan
    with pytest.raises(DataError, match="NaN or inf"):
        covariance_factor(bad)


def test_empty_calibration_set_is_a_data_error():
    with pytest.raises(DataError, match="empty"):
        StatisticsAccumulator(3).result()


def test_sigma_error_is_the_relative_output_error(rng):
    """‖(W − W̃)L‖/‖WL‖ equals √(Σ‖ΔW x‖² / Σ‖W x‖²) over the data that made Σ_u."""
    x = rng.normal(size=(400, 6)) * np.array([5, 1, 1, 0.1, 2, 3])
    w, w2 = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    acc = StatisticsAccumulator(6)
    acc.update(x)
    factor = covariance_factor(acc.result().second_moment)
    direct = np.linalg.norm((w - w2) @ x.T) / np.linalg.norm(w @ x.T)
    assert relative_sigma_error(w, w2, factor) == pytest.approx(direct, rel=1e-8)
