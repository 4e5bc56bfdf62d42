"""Rank baselines the search is compared against (METHODS.md §3 item 8).

Two classic ways to pick a rank without looking at the network output:

* **Energy threshold**: keep the leading singular values that hold a fraction of the
  squared spectrum (e.g. 90/95/99 %), per matrix or unfolding.
* **Empirical VBMF** (Nakajima, Sugiyama, Babacan & Tomioka 2013): the rank of the global
  analytic solution of empirical variational Bayesian matrix factorization, with the noise
  variance estimated from the same matrix. Kim et al. 2016 ("Compression of deep
  convolutional neural networks for fast and low power mobile applications", ICLR) choose
  the Tucker-2 ranks ``(r_S, r_T)`` this way, from the mode-S and mode-T unfoldings.

NumPy (and SciPy's scalar optimisers) only; no Keras.

References
----------
S. Nakajima, M. Sugiyama, S. D. Babacan, R. Tomioka. Global analytic solution of
fully-observed variational Bayesian matrix factorization. JMLR 14:1-37, 2013.
Y.-D. Kim, E. Park, S. Yoo, T. Choi, L. Yang, D. Shin. Compression of deep convolutional
neural networks for fast and low power mobile applications. ICLR 2016.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

import numpy as np
from scipy.optimize import brentq, minimize_scalar

from lrf_core.errors import LRFError, UnknownMethodError
from lrf_core.layout import kernel_to_matrix

__all__ = [
    "ENERGY_METHODS",
    "energy_rank",
    "energy_ranks_for",
    "vbmf_rank",
    "vbmf_ranks_tucker2",
]

logger = logging.getLogger(__name__)

#: Method ids :func:`energy_ranks_for` supports, per layer kind.
ENERGY_METHODS: dict[str, tuple[str, ...]] = {
    "conv2d": ("svd", "tucker2", "spatial"),
    "dense": ("svd",),
}


# -- energy threshold ---------------------------------------------------------------------
def _check_energy(energy: float) -> float:
    try:
        value = float(energy)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 < value <= 1.0:  # also rejects NaN
        raise LRFError(
            f"Invalid energy fraction: expected a number with 0 < energy <= 1 (e.g. 0.95 keeps "
            f"95 % of the squared singular values). Received: {energy!r}."
        )
    return value


def energy_rank(singular_values: np.ndarray, energy: float) -> int:
    """Smallest rank that keeps a fraction ``energy`` of the squared spectrum.

    ``r = min { r : Σ_{i<r} s_i² ≥ energy · Σ_i s_i² }`` with ``s`` sorted in decreasing
    order (METHODS.md §3.8). A slack of ``len(s)·eps·Σ s_i²`` absorbs the round-off of the
    cumulative sum, so ``energy=1`` gives the numeric rank: the number of singular values
    whose square is not lost in the round-off of the total.

    Parameters
    ----------
    singular_values : ndarray, shape ``(k,)``, finite and non-negative (any order)
    energy : float, ``0 < energy <= 1``

    Returns
    -------
    r : int, ``1 <= r <= k``. An all-zero spectrum gives ``1`` (a factorization needs a
        rank of at least one; documented clamp).

    Raises
    ------
    LRFError
        If ``energy`` is outside ``(0, 1]`` or the spectrum is empty, not 1-D, negative or
        not finite.
    """
    energy = _check_energy(energy)
    s = np.asarray(singular_values, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise LRFError(
            "energy_rank expects a non-empty 1-D array of finite, non-negative singular values. "
            f"Received an array of shape {s.shape} (min {s.min() if s.size else 'n/a'})."
        )
    cumulative = np.cumsum(np.sort(s)[::-1] ** 2)
    total = cumulative[-1]
    if total == 0.0:
        logger.debug("energy_rank: all-zero spectrum, returning the minimum rank 1")
        return 1
    target = energy * total - s.size * np.finfo(np.float64).eps * total
    return int(min(np.searchsorted(cumulative, target, side="left") + 1, s.size))


def _singular_values(matrix: np.ndarray) -> np.ndarray:
    return np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)


def _mode_unfoldings(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mode-S ``(S, kh·kw·T)`` and mode-T ``(T, kh·kw·S)`` unfoldings of a ``(kh, kw, S, T)`` kernel."""
    kh, kw, s, t = kernel.shape
    return np.moveaxis(kernel, 2, 0).reshape(s, -1), np.moveaxis(kernel, 3, 0).reshape(t, -1)


def _check_kernel(kernel: np.ndarray, ndims: tuple[int, ...], what: str) -> np.ndarray:
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim not in ndims or kernel.size == 0 or not np.all(np.isfinite(kernel)):
        expected = " or ".join({4: "a Conv2D kernel (kh, kw, S, T)", 2: "a Dense kernel (m, n)"}[d] for d in ndims)
        raise LRFError(
            f"{what} expects {expected} with finite values. Received an array of shape {kernel.shape}."
        )
    return kernel


def energy_ranks_for(kernel: np.ndarray, method_id: str, energy: float) -> tuple[int, ...]:
    """Energy-threshold rank tuple of one layer for a method (METHODS.md §3.8).

    The spectrum each rank entry is read from:

    * ``"svd"`` (Conv2D): the matrix ``W (T, kh·kw·S)`` of :func:`lrf_core.layout.kernel_to_matrix`;
      (Dense): the ``(m, n)`` kernel. Returns ``(r,)``.
    * ``"tucker2"``: ``r_S`` from the mode-S unfolding ``(S, kh·kw·T)``, ``r_T`` from the
      mode-T unfolding ``(T, kh·kw·S)``. Returns ``(r_S, r_T)``.
    * ``"spatial"``: the kernel reshaped ``(kh·S) × (kw·T)`` (Jaderberg et al. 2014).
      Returns ``(r,)``.

    Parameters
    ----------
    kernel : ndarray, shape ``(kh, kw, S, T)`` or ``(m, n)``
    method_id : one of :data:`ENERGY_METHODS` for the kernel's layer kind
    energy : float, ``0 < energy <= 1``

    Returns
    -------
    rank : tuple of int, each within the method's full rank

    Raises
    ------
    UnknownMethodError
        For a method without an energy rule for this layer kind (message lists the ids).
    LRFError
        For a bad kernel or energy.
    """
    energy = _check_energy(energy)
    kernel = _check_kernel(kernel, (4, 2), "energy_ranks_for")
    kind = "conv2d" if kernel.ndim == 4 else "dense"
    if method_id not in ENERGY_METHODS[kind]:
        raise UnknownMethodError(
            f"No energy-threshold rank rule for method `{method_id}` on a {kind} layer. "
            f"Supported: {', '.join(ENERGY_METHODS[kind])}."
        )
    if method_id == "svd":
        return (energy_rank(_singular_values(kernel_to_matrix(kernel)), energy),)
    if method_id == "tucker2":
        mode_s, mode_t = _mode_unfoldings(kernel)
        return (
            energy_rank(_singular_values(mode_s), energy),
            energy_rank(_singular_values(mode_t), energy),
        )
    kh, kw, s, t = kernel.shape  # spatial
    reshaped = kernel.transpose(0, 2, 1, 3).reshape(kh * s, kw * t)
    return (energy_rank(_singular_values(reshaped), energy),)


# -- empirical VBMF -----------------------------------------------------------------------
def _tau_lower(alpha: float) -> float:
    """``τ̲(α)``: the positive zero of ``log(τ+1) + α·log(τ/α+1) − τ`` (Nakajima et al. 2013).

    Equivalently the zero-crossing of ``Φ(τ) + Φ(τ/α)``, ``Φ(z) = log(z+1)/z − 1/2``.
    Public implementations use the approximation ``2.5129·√α`` (exact at ``α = 1``);
    here it is solved to machine precision.
    """
    def g(tau: float) -> float:
        return math.log1p(tau) + alpha * math.log1p(tau / alpha) - tau

    # g > 0 just above 0 (slope α·… > 0 region) and g → −∞; bracket around 2.5129·√α
    low, high = 1e-3 * math.sqrt(alpha), 10.0 * math.sqrt(alpha) + 10.0
    return float(brentq(g, low, high, xtol=1e-14))


def _tau(x: np.ndarray, alpha: float) -> np.ndarray:
    """``τ(x; α) = ½ (x − (1+α) + √((x − (1+α))² − 4α))`` for ``x ≥ x̄``."""
    b = x - (1.0 + alpha)
    return 0.5 * (b + np.sqrt(np.maximum(b * b - 4.0 * alpha, 0.0)))


def _evb_objective(sigma2: float, gamma2: np.ndarray, l: int, m: int, x_bar: float) -> float:
    """Free energy (up to constants) of the EVB solution as a function of ``σ²``.

    ``Ω(σ²) = Σ_h ψ0(x_h) + Σ_{h: x_h > x̄} ψ1(x_h)``, ``x_h = γ_h²/(Mσ²)`` with
    ``ψ0(x) = x − log x`` and ``ψ1(x) = log(τ+1) + α·log(τ/α+1) − τ``, ``τ = τ(x; α)``
    (Nakajima et al. 2013, the empirical VB noise variance estimator). ``−log x_h`` is
    written as ``log σ² + const`` so zero singular values do not produce ``−∞``.
    """
    alpha = l / m
    x = gamma2 / (m * sigma2)
    value = float(np.sum(x)) + l * math.log(sigma2)
    big = x[x > x_bar]
    if big.size:
        tau = _tau(big, alpha)
        value += float(np.sum(np.log1p(tau) + alpha * np.log1p(tau / alpha) - tau))
    return value


def _estimate_sigma2(gamma: np.ndarray, l: int, m: int, x_bar: float) -> float:
    """Minimise the EVB free energy over the paper's interval ``[σ̲², σ̄²]`` for ``σ²``.

    ``σ̄² = Σ_h γ_h² / (LM)``; ``σ̲² = max(γ_{H̄+1}²/(M x̄), Σ_{h>H̄} γ_h² / (M(L−H̄)))`` with
    ``H̄ = ⌈L/(1+α)⌉ − 1`` (1-based). The objective can be multimodal, so a log-spaced grid
    picks the basin and a bounded scalar search refines it (deterministic).
    """
    alpha = l / m
    gamma2 = gamma**2
    upper = float(np.sum(gamma2)) / (l * m)
    h_bar = min(math.ceil(l / (1.0 + alpha)) - 1, l - 1)  # 0-based index of γ_{H̄+1}
    lower = max(gamma2[h_bar] / (m * x_bar), float(np.mean(gamma2[h_bar:])) / m)
    lower = min(max(lower, upper * 1e-12), upper)
    if upper <= lower * (1.0 + 1e-12):
        return upper
    grid = np.geomspace(lower, upper, 241)
    values = np.array([_evb_objective(v, gamma2, l, m, x_bar) for v in grid])
    best = int(np.argmin(values))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    result = minimize_scalar(
        _evb_objective, bounds=(a, b), args=(gamma2, l, m, x_bar), method="bounded",
        options={"xatol": a * 1e-10},
    )
    return float(result.x) if result.fun <= values[best] else float(grid[best])


def vbmf_rank(matrix: np.ndarray, sigma2: Optional[float] = None) -> int:
    """Rank of the empirical VBMF solution (Nakajima, Sugiyama, Babacan & Tomioka 2013).

    With ``V (L, M)``, ``L ≤ M`` (the matrix is transposed otherwise), ``α = L/M`` and
    singular values ``γ_h``, the global analytic VB solution keeps component ``h`` iff

    ``γ_h > γ̲^EVB = σ·√(M·x̄)``, ``x̄ = (1 + τ̲)(1 + α/τ̲)``,

    with ``τ̲`` the positive zero of ``log(τ+1) + α·log(τ/α+1) − τ`` (≈ ``2.5129·√α``).
    When ``sigma2`` is None the noise variance ``σ²`` is estimated by minimising the
    empirical VB free energy over ``[σ̲², σ̄²]`` (the paper's bounds), as in the standard
    EVBMF algorithm Kim et al. 2016 use for Tucker-2 ranks.

    Parameters
    ----------
    matrix : ndarray, shape ``(L, M)``, finite
    sigma2 : float, optional
        Known noise variance per entry (``> 0``); estimated when None.

    Returns
    -------
    r : int, ``1 <= r <= min(L, M)``. EVBMF legitimately returns 0 on pure noise (and on
        an all-zero matrix); since a factorization needs at least one component the result
        is **clamped to 1** (logged at debug level).

    References
    ----------
    S. Nakajima, M. Sugiyama, S. D. Babacan, R. Tomioka. Global analytic solution of
    fully-observed variational Bayesian matrix factorization. JMLR 14:1-37, 2013
    (Theorem on the EVB threshold and the noise variance estimator).
    """
    v = np.asarray(matrix, dtype=np.float64)
    if v.ndim != 2 or v.size == 0 or not np.all(np.isfinite(v)):
        raise LRFError(f"vbmf_rank expects a non-empty finite 2-D matrix. Received shape {v.shape}.")
    if sigma2 is not None and not (np.isfinite(sigma2) and float(sigma2) > 0):
        raise LRFError(f"vbmf_rank: sigma2 must be a positive noise variance or None. Received {sigma2!r}.")
    if v.shape[0] > v.shape[1]:
        v = v.T
    l, m = v.shape
    alpha = l / m
    tau_lower = _tau_lower(alpha)
    x_bar = (1.0 + tau_lower) * (1.0 + alpha / tau_lower)
    gamma = _singular_values(v)
    if gamma[0] == 0.0:
        logger.debug("vbmf_rank: all-zero matrix, returning the minimum rank 1")
        return 1
    if sigma2 is None:
        sigma2 = _estimate_sigma2(gamma, l, m, x_bar)
    threshold = math.sqrt(m * float(sigma2) * x_bar)
    rank = int(np.sum(gamma > threshold))
    if rank == 0:
        logger.debug("vbmf_rank: EVBMF keeps no component (sigma2=%.3g); clamping to 1", sigma2)
    return max(rank, 1)


def vbmf_ranks_tucker2(kernel: np.ndarray) -> tuple[int, int]:
    """Tucker-2 ranks ``(r_S, r_T)`` by EVBMF on the mode-S and mode-T unfoldings (Kim et al. 2016).

    Parameters
    ----------
    kernel : ndarray, shape ``(kh, kw, S, T)``

    Returns
    -------
    (r_S, r_T) : ``1 <= r_S <= S``, ``1 <= r_T <= T``: :func:`vbmf_rank` of the
        ``(S, kh·kw·T)`` and ``(T, kh·kw·S)`` unfoldings, each with its own noise estimate.
    """
    kernel = _check_kernel(kernel, (4,), "vbmf_ranks_tucker2")
    mode_s, mode_t = _mode_unfoldings(kernel)
    return vbmf_rank(mode_s), vbmf_rank(mode_t)
