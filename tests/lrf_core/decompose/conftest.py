"""Shared helpers of the Conv2D factorization tests (tucker2, cp, spatial, ALS-Σ)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from lrf_core.covariance import CovarianceFactor, StatisticsAccumulator, covariance_factor, relative_sigma_error
from lrf_core.decompose.base import LayerGeometry, Method
from lrf_core.layout import extract_patches, kernel_to_matrix

#: Conv variants for the Keras parity tests: (kernel (kh, kw), strides, padding, dilation, use_bias, activation)
CONV_VARIANTS = {
    "3x3-s2-same-bias": ((3, 3), (2, 2), "same", (1, 1), True, "linear"),
    "3x3-valid-relu": ((3, 3), (1, 1), "valid", (1, 1), True, "relu"),
    "3x3-dil2-same-nobias": ((3, 3), (1, 1), "same", (2, 2), False, "linear"),
    "5x5-same-relu": ((5, 5), (1, 1), "same", (1, 1), True, "relu"),
    "3x1-s2-valid-nobias": ((3, 1), (2, 2), "valid", (1, 1), False, "linear"),
    "3x1-s2x1-same-tanh": ((3, 1), (2, 1), "same", (1, 1), True, "tanh"),
    "1x3-s1x2-same-nobias": ((1, 3), (1, 2), "same", (1, 1), False, "linear"),
    "1x1-relu": ((1, 1), (1, 1), "valid", (1, 1), True, "relu"),
}


def correlated_sigma(kh: int, kw: int, s: int, *, seed: int = 0, images: int = 12, hw: int = 9) -> CovarianceFactor:
    """Uncentered Σ of im2col patches of random images with channel and spatial correlations."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((s, s)) * np.linspace(1.0, 0.2, s)[:, None]
    x = rng.standard_normal((images, hw, hw, s)) @ mix + 0.5
    x = x + 0.8 * np.roll(x, 1, axis=1) + 0.5 * np.roll(x, 1, axis=2)
    acc = StatisticsAccumulator(kh * kw * s)
    acc.update(extract_patches(x, (kh, kw), padding="same"))
    return covariance_factor(acc.result().sigma(centered=False))


def sigma_error(method: Method, kernel: np.ndarray, fact, sigma: CovarianceFactor) -> float:
    w = kernel_to_matrix(kernel)
    return relative_sigma_error(w, kernel_to_matrix(method.reconstruct(fact)), sigma)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def geometry_for(variant: str, s: int, t: int, input_hw=(11, 10)) -> LayerGeometry:
    ksize, strides, padding, dilation, use_bias, activation = CONV_VARIANTS[variant]
    return LayerGeometry(
        kind="conv2d",
        kernel_shape=ksize + (s, t),
        use_bias=use_bias,
        activation=activation,
        strides=strides,
        padding=padding,
        dilation=dilation,
        input_hw=input_hw,
    )


def chain_vs_conv2d(method: Method, variant: str, *, s: int = 4, t: int = 6, seed: int = 0) -> float:
    """Relative difference between the full-rank factor chain and the original Conv2D output."""
    import keras

    from lrf_core.keras_chain import apply_chain, instantiate_chain

    geometry = geometry_for(variant, s, t)
    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal(geometry.kernel_shape)
    bias = rng.standard_normal(t) if geometry.use_bias else None
    x = rng.standard_normal((2,) + geometry.input_hw + (s,))
    conv = keras.layers.Conv2D(
        t,
        geometry.kernel_size,
        strides=geometry.strides,
        padding=geometry.padding,
        dilation_rate=geometry.dilation,
        use_bias=geometry.use_bias,
        activation=geometry.activation,
        dtype="float64",
    )
    conv.build(x.shape)
    conv.set_weights([kernel] + ([bias] if geometry.use_bias else []))
    expected = np.asarray(conv(x))

    fact = method.fit(kernel, method.max_rank(geometry))
    specs = method.layers(fact, geometry, bias)
    layers = instantiate_chain(specs, "conv", dtype="float64")
    apply_chain(specs, layers, x)  # builds the layers and loads the weights
    y = x
    for layer in layers:
        y = layer(y)
    got = np.asarray(y)
    assert got.shape == expected.shape
    return relative(got, expected)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes ``conv_variant`` runs once per entry of :data:`CONV_VARIANTS`."""
    if "conv_variant" in metafunc.fixturenames:
        metafunc.parametrize("conv_variant", list(CONV_VARIANTS))


@pytest.fixture(name="correlated_sigma")
def _correlated_sigma_fixture():
    return correlated_sigma


@pytest.fixture(name="sigma_error")
def _sigma_error_fixture():
    return sigma_error


@pytest.fixture(name="relative")
def _relative_fixture():
    return relative


@pytest.fixture(name="geometry_for")
def _geometry_for_fixture():
    return geometry_for


@pytest.fixture(name="chain_vs_conv2d")
def _chain_vs_conv2d_fixture():
    return chain_vs_conv2d
