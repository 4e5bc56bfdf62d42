"""Tucker-2 of a Conv2D kernel on its channel modes (Kim et al. 2016; METHODS.md §1–2).

``K[h, w, s, t] ≈ Σ_{a,b} G[h, w, a, b] U_S[s, a] U_T[t, b]``, ranks ``(r_S, r_T)``.

Rebuilt as ``Conv2D(r_S, 1, use_bias=False)`` → ``Conv2D(r_T, (kh, kw), strides, padding,
dilation, use_bias=False)`` → ``Conv2D(T, 1)`` with the bias and activation.
Params ``S·r_S + kh·kw·r_S·r_T + r_T·T`` (+T bias); MACs per image
``H·W·S·r_S + H'·W'·(kh·kw·r_S·r_T + r_T·T)`` (the first 1×1 runs at input resolution).

Fitting
-------
* plain: HOSVD initialisation then HOOI (higher-order orthogonal iteration) on modes S and
  T, with sign-fixed SVDs, so factors are deterministic and orthonormal.
* Σ-norm (METHODS.md §2, Tucker-2 ALS-Σ): from the plain fit, each sweep updates
  (1) ``U_S`` from its normal equations (dense or preconditioned CG, see
  :mod:`lrf_core.decompose.als_sigma`), (2) the core in closed form
  ``G = U_Tᵀ W Σ A (Aᵀ Σ A)⁻¹`` with ``A = U_S ⊗ I_K`` and ``U_T`` orthonormal,
  (3) ``U_T = W Σ C (Cᵀ Σ C)⁻¹``; monotone guard. METHODS.md §2 orders ``U_T`` before the
  core **[our choice]**: with ``U_T`` last, its solve yields the sweep's Σ-error for ``T·r_T²``
  flops instead of ``T·D²`` (:meth:`~lrf_core.decompose.als_sigma.SigmaTarget.product_error`).
  ``U_S`` and ``U_T`` are re-orthonormalised (QR) before the steps that need it (absorbed in
  the core where the core is kept).

At the full rank ``(S, T)`` both fits are exact; the Σ fit then returns the plain factors.
Two edges of the rank grid need no general ALS **[our choice]**: at ``r_S = S`` the model is
``W̃ = U_T C`` with ``C`` free, whose exact Σ optimum is the matrix closed form
``[W L]_{r_T} L⁻¹`` (the svd method's fit, ``U_S = I``); at ``r_T = T`` the ALS keeps
``U_T = I`` and alternates ``U_S`` and the core only. On a 3×3×512×512 layer the
``(512, 256)`` point took 18 s of ALS and now takes one SVD, at an error no ALS can beat.

Factors: ``(U_S (S, r_S), core (kh, kw, r_S, r_T), U_T (T, r_T))``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from lrf_core.covariance import CovarianceFactor
from lrf_core.decompose.als_sigma import SigmaTarget, output_factor, ridge_solve, run_als, solve_slices
from lrf_core.decompose.base import Cost, Factorization, LayerGeometry, LayerSpec, Method, check_rank_tuple
from lrf_core.decompose.linalg import leading_left_vectors, lowrank_factors, truncated_svd
from lrf_core.layout import kernel_to_matrix, matrix_to_kernel

__all__ = ["TUCKER2", "fit_tucker2", "reconstruct_tucker2"]

_NAMES = ("r_S", "r_T")
Tucker = tuple[np.ndarray, np.ndarray, np.ndarray]


def _tucker_matrix(u_s: np.ndarray, core: np.ndarray, u_t: np.ndarray) -> np.ndarray:
    """``W̃ (T, D)`` in layout order."""
    return np.einsum("sa,hwab,tb->thws", u_s, core, u_t, optimize=True).reshape(u_t.shape[0], -1)


def _orthonormal(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """QR with a positive diagonal of R (deterministic): ``u = Q R``."""
    q, r = np.linalg.qr(u)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    return q * signs, r * signs[:, None]


def _leading_basis(matrix: np.ndarray, rank: int, shared: bool = False) -> np.ndarray:
    """Sign-fixed leading left singular vectors, completed to ``rank`` orthonormal columns
    when the matrix has fewer (e.g. ``S > kh·kw·T``); ``shared`` as :func:`truncated_svd` (the
    rank-dependent HOOI iterates go through :func:`leading_left_vectors`)."""
    u = truncated_svd(matrix, rank, shared=True)[0] if shared else leading_left_vectors(matrix, rank)
    if u.shape[1] < rank:
        q, _ = _orthonormal(np.hstack([u, np.eye(u.shape[0])]))
        u = np.hstack([u, q[:, u.shape[1] : rank]])
    return u


def _hooi(kernel: np.ndarray, r_s: int, r_t: int, n_iter_max: int, tol: float) -> Tucker:
    """Plain Tucker-2: HOSVD start, HOOI refinement."""
    kh, kw, s, t = kernel.shape
    unfold_s = kernel.transpose(2, 0, 1, 3).reshape(s, -1)
    unfold_t = kernel.transpose(3, 0, 1, 2).reshape(t, -1)
    u_s = _leading_basis(unfold_s, r_s, shared=True)  # the HOSVD start is the same for every rank
    u_t = _leading_basis(unfold_t, r_t, shared=True)
    previous = 0.0
    for _ in range(n_iter_max if (r_s < s or r_t < t) else 0):
        proj_t = np.einsum("hwst,tb->shwb", kernel, u_t, optimize=True).reshape(s, -1)
        u_s = _leading_basis(proj_t, r_s)
        proj_s = np.einsum("hwst,sa->thwa", kernel, u_s, optimize=True).reshape(t, -1)
        u_t = _leading_basis(proj_s, r_t)
        core_norm = float(np.linalg.norm(u_t.T @ proj_s))
        if abs(core_norm - previous) <= tol * max(core_norm, 1e-300):
            break
        previous = core_norm
    core = np.einsum("hwst,sa,tb->hwab", kernel, u_s, u_t, optimize=True)
    return u_s, core, u_t


def _sigma_sweep(target: SigmaTarget, state: Tucker, fixed_t: bool) -> tuple[Tucker, float]:
    """One ALS-Σ sweep; ``fixed_t``: ``U_T = I`` (``r_T = T``), so the core solve is the last step."""
    u_s, core, u_t = state
    kh, kw, s = target.dims
    k = kh * kw
    r_s, r_t = core.shape[2], core.shape[3]
    # (1) U_S: W̃[t, (s, (h, w))] = Σ_a U_S[s, a] P[t, (h, w), a]
    q_t, r_ut = _orthonormal(u_t)
    core = np.einsum("hwab,cb->hwac", core, r_ut)
    p = np.einsum("tb,hwab->thwa", q_t, core, optimize=True).reshape(-1, k, r_s)
    q_s, _ = _orthonormal(solve_slices(target, (2,), p, u_s))  # same span; the core is solved next
    # (2) core: G = U_Tᵀ (W Σ A) (Aᵀ Σ A)⁻¹ (U_T orthonormal), A[(k, s), (k', a)] = δ_kk' U_S[s, a]
    d = k * s
    sigma_a = (target.sigma.reshape(d * k, s) @ q_s).reshape(d, k * r_s)          # Σ A
    gram_a = (q_s.T @ sigma_a.reshape(k, s, k * r_s).transpose(1, 0, 2).reshape(s, -1))
    gram_a = gram_a.reshape(r_s, k, k * r_s).transpose(1, 0, 2).reshape(k * r_s, k * r_s)
    w_sigma_a = (target.w_sigma.reshape(-1, s) @ q_s).reshape(-1, k * r_s)        # (T, K r_S)
    if fixed_t:
        g_mat = ridge_solve(gram_a, w_sigma_a.T).T                                # (T, K r_S)
        core = g_mat.reshape(r_t, kh, kw, r_s).transpose(1, 2, 3, 0)
        state = (q_s, core, q_t)
        return state, target.product_error(g_mat, gram_a, w_sigma_a, lambda: _tucker_matrix(*state))
    g_mat = ridge_solve(gram_a, (q_t.T @ w_sigma_a).T).T                         # (r_T, K r_S)
    core = g_mat.reshape(r_t, kh, kw, r_s).transpose(1, 2, 3, 0)
    # (3) U_T = W Σ Cᵀ (C Σ Cᵀ)⁻¹ with C[b, (h, w, s)] = Σ_a G[h, w, a, b] U_S[s, a]; last, as its
    # solve gives the sweep's error (run_als)
    c = np.einsum("hwab,sa->bhws", core, q_s).reshape(r_t, -1)
    u_t, error = output_factor(target, c)
    return (q_s, core, u_t), error


def _whitened_output_basis(kernel: np.ndarray, r_t: int, sigma: CovarianceFactor) -> Tucker:
    """The exact Σ optimum at ``r_S = S``: ``U_S`` spans every input channel, so ``W̃ = U_T C`` with ``C``
    free, the matrix case of METHODS.md §2: ``W̃ = [W L]_{r_T} L⁻¹`` (``U_S = I``)."""
    kh, kw, s, _ = kernel.shape
    b, a = lowrank_factors(kernel_to_matrix(kernel), r_t, sigma)                 # W̃ = B A
    q_t, r_b = _orthonormal(b)
    return np.eye(s), matrix_to_kernel(r_b @ a, (kh, kw, s, r_t)), q_t


def _identity_output(state: Tucker) -> Tucker:
    """At ``r_T = T``: the same ``W̃`` with ``U_T = I`` (its square basis absorbed in the core)."""
    u_s, core, u_t = state
    return u_s, np.einsum("hwab,tb->hwat", core, u_t), np.eye(u_t.shape[0])


def _normalised(state: Tucker) -> Tucker:
    u_s, core, u_t = state
    q_s, r_s = _orthonormal(u_s)
    q_t, r_t = _orthonormal(u_t)
    return q_s, np.einsum("hwab,ca,db->hwcd", core, r_s, r_t, optimize=True), q_t


def fit_tucker2(
    kernel: np.ndarray,
    rank: tuple[int, ...],
    *,
    sigma: Optional[CovarianceFactor] = None,
    seed: int = 0,
    n_iter_max: int = 100,
    tol: float = 1e-6,
) -> Factorization:
    """Tucker-2 ``K ≈ G ×_S U_S ×_T U_T`` of a Conv2D kernel.

    Parameters
    ----------
    kernel : ``(kh, kw, S, T)``
    rank : ``(r_S, r_T)`` with ``1 <= r_S <= S`` and ``1 <= r_T <= T``
    sigma : Σ of the input patches (``D × D``, layout order) for the Σ-norm fit, or None
    seed : unused (HOSVD/HOOI and the ALS are deterministic)
    n_iter_max, tol : HOOI iterations / ALS-Σ sweeps and their stopping tolerance

    Returns
    -------
    Factorization with factors ``(U_S (S, r_S), core (kh, kw, r_S, r_T), U_T (T, r_T))``.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    _, _, s, t = kernel.shape
    r_s, r_t = check_rank_tuple("tucker2", rank, (s, t), _NAMES)
    history: tuple[float, ...] = ()
    if sigma is None or (r_s == s and r_t == t):
        state = _hooi(kernel, r_s, r_t, n_iter_max, tol)
    elif r_s == s:
        state = _whitened_output_basis(kernel, r_t, sigma)
    else:
        target = SigmaTarget.of(kernel, sigma, "tucker2")
        fixed_t = r_t == t
        state = _hooi(kernel, r_s, r_t, n_iter_max, tol)
        if fixed_t:
            state = _identity_output(state)
        state, history = run_als(state, lambda st: _sigma_sweep(target, st, fixed_t),
                                 target.error(_tucker_matrix(*state)), n_iter_max=n_iter_max, tol=tol)
        state = _normalised(state)
    return Factorization(
        method="tucker2",
        kind="conv2d",
        rank=(r_s, r_t),
        kernel_shape=tuple(kernel.shape),
        factors=state,
        objective="frobenius" if sigma is None else "sigma",
        history=history,
    )


def reconstruct_tucker2(fact: Factorization) -> np.ndarray:
    return matrix_to_kernel(_tucker_matrix(*fact.factors), fact.kernel_shape)


def _max_rank(geometry: LayerGeometry) -> tuple[int, int]:
    return (geometry.in_channels, geometry.out_channels)


def _cost(geometry: LayerGeometry, rank: tuple[int, ...]) -> Cost:
    r_s, r_t = rank
    kh, kw = geometry.kernel_size
    s, t = geometry.in_channels, geometry.out_channels
    h_in, w_in = geometry.input_hw
    bias = t if geometry.use_bias else 0
    params = s * r_s + kh * kw * r_s * r_t + r_t * t
    macs = h_in * w_in * s * r_s + geometry.output_positions * (kh * kw * r_s * r_t + r_t * t)
    return Cost(params=params + bias, macs=macs)


def _layers(fact: Factorization, geometry: LayerGeometry, bias: Optional[np.ndarray]) -> list[LayerSpec]:
    u_s, core, u_t = fact.factors
    r_s, r_t = fact.rank
    h_in, w_in = geometry.input_hw
    positions = geometry.output_positions
    first = LayerSpec(
        "Conv2D",
        dict(filters=r_s, kernel_size=(1, 1), use_bias=False),
        (u_s[None, None],),
        macs=u_s.size * h_in * w_in,
    )
    middle = LayerSpec(
        "Conv2D",
        dict(
            filters=r_t,
            kernel_size=geometry.kernel_size,
            strides=geometry.strides,
            padding=geometry.padding,
            dilation_rate=geometry.dilation,
            use_bias=False,
        ),
        (core,),
        macs=core.size * positions,
    )
    last = LayerSpec(
        "Conv2D",
        dict(filters=geometry.out_channels, kernel_size=(1, 1), use_bias=geometry.use_bias, activation=geometry.activation),
        (u_t.T[None, None],) + ((bias,) if geometry.use_bias else ()),
        macs=u_t.size * positions,
    )
    return [first, middle, last]


TUCKER2 = Method(
    id="tucker2",
    kind="conv2d",
    summary="Tucker-2: Conv(r_S, 1×1) → Conv(r_T, kh×kw) → Conv(T, 1×1)",
    rank_names=_NAMES,
    fit=fit_tucker2,
    reconstruct=reconstruct_tucker2,
    layers=_layers,
    cost=_cost,
    max_rank=_max_rank,
    supports_sigma=True,
)
