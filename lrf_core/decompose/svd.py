"""Truncated SVD of the layer matrix: channel decomposition (Conv2D) and Dense SVD.

METHODS.md §1: ``W ≈ B A`` with rank ``r`` (Zhang et al. 2016 for Conv2D).

* Conv2D ``(kh, kw, S, T)``: ``Conv2D(r, (kh, kw), strides, padding, dilation,
  use_bias=False)`` → ``Conv2D(T, 1)`` with the bias and activation.
  Params ``r(D + T)`` (+T bias), MACs ``H'W'·r(D + T)``, ``D = kh·kw·S``.
* Dense ``(m, n)``: ``Dense(r, use_bias=False)`` → ``Dense(n)``. Params ``r(m + n)`` (+n).

Fitting: plain truncated SVD, or the closed-form Σ-norm optimum ``[W L]_r L⁻¹``
(METHODS.md §2, matrix case); see :func:`lrf_core.decompose.linalg.lowrank_factors`.

Factors: ``(A, B)`` with ``A (r, D)`` the first layer and ``B (T, r)`` the second.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from lrf_core.covariance import CovarianceFactor
from lrf_core.decompose.base import Cost, Factorization, LayerGeometry, LayerSpec, Method, check_rank_tuple
from lrf_core.decompose.linalg import chain_kernel, lowrank_factors
from lrf_core.layout import kernel_to_matrix, matrix_to_kernel

__all__ = ["CONV_SVD", "DENSE_SVD", "fit_svd"]


def fit_svd(
    kernel: np.ndarray,
    rank: tuple[int, ...],
    *,
    sigma: Optional[CovarianceFactor] = None,
    seed: int = 0,
    n_iter_max: int = 100,
    tol: float = 1e-6,
) -> Factorization:
    """Rank-``r`` factorization ``W ≈ B A`` of a Conv2D or Dense kernel.

    Parameters
    ----------
    kernel : ``(kh, kw, S, T)`` or ``(m, n)``
    rank : ``(r,)`` with ``1 <= r <= min(T, D)``
    sigma : Σ of the layer input (``D × D``, layout order) for the Σ-norm fit, or None
    seed, n_iter_max, tol : unused (closed form); accepted for the common signature

    Returns
    -------
    Factorization with factors ``(A (r, D), B (T, r))``.
    """
    w = kernel_to_matrix(kernel).astype(np.float64)
    (r,) = check_rank_tuple("svd", rank, (min(w.shape),), ("r",))
    b, a = lowrank_factors(w, r, sigma)
    kind = "conv2d" if kernel.ndim == 4 else "dense"
    return Factorization(
        method="svd",
        kind=kind,
        rank=(r,),
        kernel_shape=tuple(kernel.shape),
        factors=(a, b),
        objective="frobenius" if sigma is None else "sigma",
    )


def reconstruct_svd(fact: Factorization) -> np.ndarray:
    a, b = fact.factors
    return matrix_to_kernel(b @ a, fact.kernel_shape)


def _max_rank(geometry: LayerGeometry) -> tuple[int]:
    return (min(geometry.out_channels, geometry.input_dim),)


def _cost(geometry: LayerGeometry, rank: tuple[int, ...]) -> Cost:
    (r,) = rank
    bias = geometry.out_channels if geometry.use_bias else 0
    weights = r * (geometry.input_dim + geometry.out_channels)
    return Cost(params=weights + bias, macs=weights * geometry.output_positions)


def _conv_layers(fact: Factorization, geometry: LayerGeometry, bias: Optional[np.ndarray]) -> list[LayerSpec]:
    a, b = fact.factors
    (r,) = fact.rank
    positions = geometry.output_positions
    first = LayerSpec(
        "Conv2D",
        dict(
            filters=r,
            kernel_size=geometry.kernel_size,
            strides=geometry.strides,
            padding=geometry.padding,
            dilation_rate=geometry.dilation,
            use_bias=False,
        ),
        (chain_kernel(a, geometry.kernel_size, geometry.in_channels),),
        macs=a.size * positions,
    )
    last = LayerSpec(
        "Conv2D",
        dict(filters=geometry.out_channels, kernel_size=(1, 1), use_bias=geometry.use_bias, activation=geometry.activation),
        (chain_kernel(b, (1, 1), r),) + ((bias,) if geometry.use_bias else ()),
        macs=b.size * positions,
    )
    return [first, last]


def _dense_layers(fact: Factorization, geometry: LayerGeometry, bias: Optional[np.ndarray]) -> list[LayerSpec]:
    a, b = fact.factors
    (r,) = fact.rank
    positions = geometry.output_positions
    first = LayerSpec("Dense", dict(units=r, use_bias=False), (a.T,), macs=a.size * positions)
    last = LayerSpec(
        "Dense",
        dict(units=geometry.out_channels, use_bias=geometry.use_bias, activation=geometry.activation),
        (b.T,) + ((bias,) if geometry.use_bias else ()),
        macs=b.size * positions,
    )
    return [first, last]


CONV_SVD = Method(
    id="svd",
    kind="conv2d",
    summary="channel SVD: Conv(r, kh×kw) → Conv(T, 1×1)",
    rank_names=("r",),
    fit=fit_svd,
    reconstruct=reconstruct_svd,
    layers=_conv_layers,
    cost=_cost,
    max_rank=_max_rank,
    supports_sigma=True,
)

DENSE_SVD = Method(
    id="svd",
    kind="dense",
    summary="SVD: Dense(r) → Dense(n)",
    rank_names=("r",),
    fit=fit_svd,
    reconstruct=reconstruct_svd,
    layers=_dense_layers,
    cost=_cost,
    max_rank=_max_rank,
    supports_sigma=True,
)
