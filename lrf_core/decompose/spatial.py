"""Spatial (vertical × horizontal) SVD of a Conv2D kernel (Jaderberg et al. 2014; METHODS.md §1–2).

The kernel reshaped to ``(kh·S) × (kw·T)`` is approximated with rank ``r``:
``K[h, w, s, t] ≈ Σ_r V[h, s, r] H[w, r, t]``.

Rebuilt as ``Conv2D(r, (kh, 1), strides=(sh, 1), dilation_rate=(dh, 1), use_bias=False)`` →
``Conv2D(T, (1, kw), strides=(1, sw), dilation_rate=(1, dw))`` with the bias and activation
(TF ``same``/``valid`` padding is separable per axis, so the chain is exact).
Params ``r(kh·S + kw·T)`` (+T bias); MACs per image ``H'·W·kh·S·r + H'·W'·kw·r·T``.

Fitting
-------
* plain: truncated SVD of the reshaped kernel (Jaderberg et al., scheme 2).
* Σ-norm: METHODS.md §2 lists spatial with the closed-form matrix case, but the rank
  constraint is on the *reshaped* kernel while Σ acts on the layout rows, so for a general
  Σ there is no closed form **[our choice]**: start from whichever of {plain fit, the
  closed form ``[Ŵ L_v]_r L_v⁻¹``} has the lower true Σ-error, then run ALS-Σ. Here
  ``Ŵ`` is the ``(kw·T) × (kh·S)`` reshaped kernel and ``L_v`` the root of the
  vertical filter's input covariance averaged over the ``kw`` column offsets (the exact
  optimum when Σ is block diagonal over column offsets with equal blocks). The ALS
  alternates the horizontal filter (output side, closed form ``W Σ Qᵀ (Q Σ Qᵀ)⁻¹``) and the
  vertical filter (input side, normal equations), with the monotone guard of
  :func:`lrf_core.decompose.als_sigma.run_als`.

At full rank ``min(kh·S, kw·T)`` both fits are exact; the Σ fit then returns the plain one.

Factors: ``(V (kh, S, r), H (kw, r, T))``: the vertical and horizontal layer kernels.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from lrf_core.covariance import CovarianceFactor, covariance_factor
from lrf_core.decompose.als_sigma import SigmaTarget, output_slices, run_als, solve_slices
from lrf_core.decompose.base import Cost, Factorization, LayerGeometry, LayerSpec, Method, check_rank_tuple
from lrf_core.decompose.linalg import lowrank_factors
from lrf_core.layout import matrix_to_kernel

__all__ = ["SPATIAL", "fit_spatial", "reconstruct_spatial"]

_NAMES = ("r",)
Factors = tuple[np.ndarray, np.ndarray]


def _full_rank(kernel_shape: tuple[int, ...]) -> int:
    kh, kw, s, t = kernel_shape
    return min(kh * s, kw * t)


def _spatial_matrix(v: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``W̃ (T, D)`` in layout order: ``W̃[t, (h, w, s)] = Σ_r V[h, s, r] H[w, r, t]``."""
    return np.einsum("hsr,wrt->thws", v, h, optimize=True).reshape(h.shape[2], -1)


def _from_reshaped(kernel: np.ndarray, rank: int, sigma_v: Optional[CovarianceFactor]) -> Factors:
    """Best rank-``r`` ``Ŵ ≈ B A`` of ``Ŵ[(w, t), (h, s)]`` (Frobenius, or in the ``Σ_v``-norm)."""
    kh, kw, s, t = kernel.shape
    w_hat = kernel.transpose(1, 3, 0, 2).reshape(kw * t, kh * s)
    b, a = lowrank_factors(w_hat, rank, sigma_v)
    return a.T.reshape(kh, s, rank), b.reshape(kw, t, rank).transpose(0, 2, 1)


def _vertical_covariance(target: SigmaTarget) -> CovarianceFactor:
    """Σ_v[(h, s), (h', s')] = mean over w of Σ[(h, w, s), (h', w, s')]."""
    kh, kw, s = target.dims
    sigma6 = target.sigma.reshape(kh, kw, s, kh, kw, s)
    sigma_v = np.einsum("hwsgwu->hsgu", sigma6) / kw
    return covariance_factor(sigma_v.reshape(kh * s, kh * s))


def _sigma_sweep(target: SigmaTarget, state: Factors) -> tuple[Factors, float]:
    v, h = state
    kh, _, s = target.dims
    r = v.shape[2]
    # vertical filter: W̃[t, ((h, s), w)] = Σ_r V[(h, s), r] P[t, w, r], P[t, w, r] = H[w, r, t]
    v = solve_slices(target, (0, 2), h.transpose(2, 0, 1), v.reshape(kh * s, r))
    # horizontal filter: the same form solved for P (output side, closed form)
    p, error = output_slices(target, (0, 2), v)
    return (v.reshape(kh, s, r), p.transpose(1, 2, 0)), error


def fit_spatial(
    kernel: np.ndarray,
    rank: tuple[int, ...],
    *,
    sigma: Optional[CovarianceFactor] = None,
    seed: int = 0,
    n_iter_max: int = 100,
    tol: float = 1e-6,
) -> Factorization:
    """Rank-``r`` spatial factorization ``K ≈ V ⋆ H`` (vertical then horizontal filter).

    Parameters
    ----------
    kernel : ``(kh, kw, S, T)``
    rank : ``(r,)`` with ``1 <= r <= min(kh·S, kw·T)``
    sigma : Σ of the input patches (``D × D``, layout order) for the Σ-norm fit, or None
    seed : unused (deterministic)
    n_iter_max, tol : ALS-Σ sweeps and stopping tolerance (Σ fit only)

    Returns
    -------
    Factorization with factors ``(V (kh, S, r), H (kw, r, T))``.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    (r,) = check_rank_tuple("spatial", rank, (_full_rank(kernel.shape),), _NAMES)
    target = SigmaTarget.of(kernel, sigma, "spatial") if sigma is not None else None
    state = _from_reshaped(kernel, r, None)
    history: tuple[float, ...] = ()
    if target is not None and r < _full_rank(kernel.shape):
        closed = _from_reshaped(kernel, r, _vertical_covariance(target))
        error, closed_error = target.error(_spatial_matrix(*state)), target.error(_spatial_matrix(*closed))
        if closed_error < error:
            state, error = closed, closed_error
        state, history = run_als(state, lambda st: _sigma_sweep(target, st), error, n_iter_max=n_iter_max, tol=tol)
        state = _balance(state)
    return Factorization(
        method="spatial",
        kind="conv2d",
        rank=(r,),
        kernel_shape=tuple(kernel.shape),
        factors=state,
        objective="frobenius" if sigma is None else "sigma",
        history=history,
    )


def _balance(state: Factors) -> Factors:
    """Equal norms per rank-1 term between V and H (W̃ unchanged), for float32 layers."""
    v, h = state
    nv = np.linalg.norm(v, axis=(0, 1))
    nh = np.linalg.norm(h, axis=(0, 2))
    ok = (nv > 0) & (nh > 0)
    scale = np.where(ok, np.sqrt(np.where(ok, nh, 1.0) / np.where(ok, nv, 1.0)), 1.0)
    return v * scale, h / scale[None, :, None]


def reconstruct_spatial(fact: Factorization) -> np.ndarray:
    return matrix_to_kernel(_spatial_matrix(*fact.factors), fact.kernel_shape)


def _max_rank(geometry: LayerGeometry) -> tuple[int]:
    return (_full_rank(geometry.kernel_shape),)


def _cost(geometry: LayerGeometry, rank: tuple[int, ...]) -> Cost:
    (r,) = rank
    kh, kw = geometry.kernel_size
    s, t = geometry.in_channels, geometry.out_channels
    h_mid, w_mid = geometry.output_hw_after((True, False))
    bias = t if geometry.use_bias else 0
    macs = h_mid * w_mid * kh * s * r + geometry.output_positions * kw * r * t
    return Cost(params=r * (kh * s + kw * t) + bias, macs=macs)


def _layers(fact: Factorization, geometry: LayerGeometry, bias: Optional[np.ndarray]) -> list[LayerSpec]:
    v, h = fact.factors
    (r,) = fact.rank
    kh, kw = geometry.kernel_size
    (sh, sw), (dh, dw) = geometry.strides, geometry.dilation
    h_mid, w_mid = geometry.output_hw_after((True, False))
    vertical = LayerSpec(
        "Conv2D",
        dict(filters=r, kernel_size=(kh, 1), strides=(sh, 1), padding=geometry.padding, dilation_rate=(dh, 1), use_bias=False),
        (v[:, None],),
        macs=v.size * h_mid * w_mid,
    )
    horizontal = LayerSpec(
        "Conv2D",
        dict(
            filters=geometry.out_channels,
            kernel_size=(1, kw),
            strides=(1, sw),
            padding=geometry.padding,
            dilation_rate=(1, dw),
            use_bias=geometry.use_bias,
            activation=geometry.activation,
        ),
        (h[None],) + ((bias,) if geometry.use_bias else ()),
        macs=h.size * geometry.output_positions,
    )
    return [vertical, horizontal]


SPATIAL = Method(
    id="spatial",
    kind="conv2d",
    summary="spatial SVD: Conv(r, kh×1) → Conv(T, 1×kw)",
    rank_names=_NAMES,
    fit=fit_spatial,
    reconstruct=reconstruct_spatial,
    layers=_layers,
    cost=_cost,
    max_rank=_max_rank,
    supports_sigma=True,
)
