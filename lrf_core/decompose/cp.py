"""CP (canonical polyadic) decomposition of a Conv2D kernel (Lebedev et al. 2015; METHODS.md §1–2).

``K[h, w, s, t] ≈ Σ_r A_H[h, r] A_W[w, r] A_S[s, r] A_T[t, r]``, rank ``R``.

Rebuilt as ``Conv2D(R, 1, use_bias=False)`` → ``DepthwiseConv2D((kh, 1), strides=(sh, 1),
dilation_rate=(dh, 1))`` → ``DepthwiseConv2D((1, kw), strides=(1, sw), dilation_rate=(1, dw))``
→ ``Conv2D(T, 1)`` with the bias and activation. TF's ``same``/``valid`` padding is separable
per axis, so the chain computes exactly the reconstructed kernel's convolution.
Params ``R(S + kh + kw + T)`` (+T bias); MACs per image
``R·(H·W·S + H'·W·kh + H'·W'·kw + H'·W'·T)``.

Strided layers **[our choice]**: TensorFlow's ``DepthwiseConv2D`` only runs with equal strides
along rows and columns, so the ``(sh, 1)`` / ``(1, sw)`` split of METHODS.md §1 cannot use it
when the layer is strided. Then the two spatial layers are the same filters as grouped
convolutions, ``Conv2D(R, (kh, 1), strides=(sh, 1), groups=R)`` → ``Conv2D(R, (1, kw),
strides=(1, sw), groups=R)`` (standard Keras layers, exact, same params and MACs; TFLite
converts them to ``CONV_2D``).

Fitting
-------
* plain: CP-ALS with TensorLy's ``parafac`` conventions (``init='svd'``, seeded random
  columns when ``R`` exceeds a mode size, stop when the relative error changes by < ``tol``),
  implemented here with cheap MTTKRPs: ``parafac`` forms the ``(S·T·kw) × R`` Khatri-Rao
  product for the ``kh`` mode and takes 0.3–1 s per iteration on a 3×3×256×256 kernel
  **[our choice]**.
* Σ-norm (METHODS.md §2, CP ALS-Σ): from the plain fit, each sweep solves the normal
  equations of ``A_S`` (preconditioned CG when large), ``A_H`` and ``A_W`` (dense, they are
  tiny), then ``A_T = W Σ M (Mᵀ Σ M)⁻¹`` with ``M = A_H ⊙ A_W ⊙ A_S``; monotone guard. The
  paper publishes no CP code: these equations are derived (see
  :mod:`lrf_core.decompose.als_sigma`).

Maximum rank **[our choice]**: a tensor has no exact CP rank that is easy to compute, so
``max_rank`` is the bound ``kh·kw·min(S, T)``, and at that rank ``fit`` returns the exact
elementary construction instead of running ALS: one rank-1 term per ``(h, w, s)`` slice
(``A_T`` column = ``K[h, w, s, :]``) when ``S <= T``, else one per ``(h, w, t)`` slice.

Factors: ``(A_H (kh, R), A_W (kw, R), A_S (S, R), A_T (T, R))``, columns balanced (equal
norms across the four factors, signs in ``A_T``), so float32 layers stay well scaled.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from lrf_core.covariance import CovarianceFactor
from lrf_core.decompose.als_sigma import SigmaTarget, khatri_rao, output_factor, ridge_solve, run_als, solve_khatri_rao
from lrf_core.decompose.base import Cost, Factorization, LayerGeometry, LayerSpec, Method, check_rank_tuple
from lrf_core.decompose.linalg import truncated_svd
from lrf_core.layout import matrix_to_kernel

__all__ = ["CP", "fit_cp", "reconstruct_cp"]

_NAMES = ("R",)
Factors = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _full_rank(kernel_shape: tuple[int, ...]) -> int:
    kh, kw, s, t = kernel_shape
    return kh * kw * min(s, t)


def _cp_matrix(a_h: np.ndarray, a_w: np.ndarray, a_s: np.ndarray, a_t: np.ndarray) -> np.ndarray:
    """``W̃ = A_T Mᵀ (T, D)``, ``M = A_H ⊙ A_W ⊙ A_S`` in layout order."""
    return a_t @ khatri_rao(a_h, a_w, a_s).T


def _elementary(kernel: np.ndarray) -> Factors:
    """Exact CP with ``kh·kw·min(S, T)`` terms, one per kernel slice."""
    kh, kw, s, t = kernel.shape
    h_idx, w_idx, c_idx = (i.ravel() for i in np.meshgrid(np.arange(kh), np.arange(kw), np.arange(min(s, t)), indexing="ij"))
    r = h_idx.size
    cols = np.arange(r)
    a_h, a_w = np.zeros((kh, r)), np.zeros((kw, r))
    a_h[h_idx, cols] = 1.0
    a_w[w_idx, cols] = 1.0
    if s <= t:
        a_s = np.zeros((s, r))
        a_s[c_idx, cols] = 1.0
        a_t = kernel[h_idx, w_idx, c_idx, :].T.copy()
    else:
        a_t = np.zeros((t, r))
        a_t[c_idx, cols] = 1.0
        a_s = kernel[h_idx, w_idx, :, c_idx].T.copy()
    return a_h, a_w, a_s, a_t


def _balance(factors: Factors) -> Factors:
    """Equal column norms across the factors; signs of A_H, A_W, A_S fixed, moved into A_T."""
    norms = [np.linalg.norm(f, axis=0) for f in factors]
    weight = np.prod(norms, axis=0)
    scale = weight ** (1.0 / len(factors))
    out = []
    for f, n in zip(factors, norms):
        safe = np.where(n > 0, n, 1.0)
        out.append(f / safe * np.where(n > 0, scale, 0.0))
    for i in range(len(out) - 1):
        pivot = np.argmax(np.abs(out[i]), axis=0)
        signs = np.sign(out[i][pivot, np.arange(out[i].shape[1])])
        signs[signs == 0] = 1.0
        out[i] = out[i] * signs
        out[-1] = out[-1] * signs
    return tuple(out)  # type: ignore[return-value]


def _svd_init(kernel: np.ndarray, rank: int, seed: int) -> list[np.ndarray]:
    """TensorLy's ``init='svd'``: leading left singular vectors of each unfolding (the first
    scaled by the singular values), padded with seeded uniform columns when ``R`` > mode size."""
    rng = np.random.default_rng(seed)
    factors = []
    for mode, size in enumerate(kernel.shape):
        unfolding = np.moveaxis(kernel, mode, 0).reshape(size, -1)
        u, s, _ = truncated_svd(unfolding, min(rank, size), shared=True)
        if mode == 0:
            u = u * s
        if size < rank:
            u = np.hstack([u, rng.random((size, rank - size))])
        factors.append(u)
    return factors


def _plain_cp(kernel: np.ndarray, rank: int, seed: int, n_iter_max: int, tol: float) -> Factors:
    """CP-ALS in the Frobenius norm (as TensorLy ``parafac``, ``init='svd'``, stopping when the
    relative error changes by less than ``tol``), with MTTKRPs that never form the large
    Khatri-Rao products (a 3×3×256×256 kernel at R = 128 takes well under a second)."""
    kh, kw, s, t = kernel.shape
    a_h, a_w, a_s, a_t = _svd_init(kernel, rank, seed)
    w = kernel.reshape(-1, t)
    norm2 = float(np.sum(kernel**2))
    previous = None
    for _ in range(n_iter_max):
        y = (w @ a_t).reshape(kh, kw, s, rank)                       # K ×_T A_T
        gram_t = a_t.T @ a_t
        a_h = ridge_solve((a_w.T @ a_w) * (a_s.T @ a_s) * gram_t, np.einsum("hwsr,wr,sr->rh", y, a_w, a_s, optimize=True)).T
        a_w = ridge_solve((a_h.T @ a_h) * (a_s.T @ a_s) * gram_t, np.einsum("hwsr,hr,sr->rw", y, a_h, a_s, optimize=True)).T
        a_s = ridge_solve((a_h.T @ a_h) * (a_w.T @ a_w) * gram_t, np.einsum("hwsr,hr,wr->rs", y, a_h, a_w, optimize=True)).T
        mttkrp = w.T @ khatri_rao(a_h, a_w, a_s)                     # (T, R)
        gram = (a_h.T @ a_h) * (a_w.T @ a_w) * (a_s.T @ a_s)
        a_t = ridge_solve(gram, mttkrp.T).T
        residual2 = norm2 - 2.0 * float(np.sum(mttkrp * a_t)) + float(np.sum(gram * (a_t.T @ a_t)))
        error = np.sqrt(max(residual2, 0.0) / norm2) if norm2 > 0 else 0.0
        if previous is not None and abs(previous - error) < tol:
            break
        previous = error
    return a_h, a_w, a_s, a_t


def _move_scale(factor: np.ndarray, a_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm columns for ``factor``, the norms moved into ``A_T`` (W̃ unchanged)."""
    norms = np.linalg.norm(factor, axis=0)
    safe = np.where(norms > 0, norms, 1.0)
    return factor / safe, a_t * safe


def _sigma_sweep(target: SigmaTarget, state: Factors) -> tuple[Factors, float]:
    a_h, a_w, a_s, a_t = state
    a_s = solve_khatri_rao(target, (2,), a_t, khatri_rao(a_h, a_w), a_s)
    a_s, a_t = _move_scale(a_s, a_t)
    a_h = solve_khatri_rao(target, (0,), a_t, khatri_rao(a_w, a_s), a_h)
    a_h, a_t = _move_scale(a_h, a_t)
    a_w = solve_khatri_rao(target, (1,), a_t, khatri_rao(a_h, a_s), a_w)
    a_w, a_t = _move_scale(a_w, a_t)
    a_t, error = output_factor(target, khatri_rao(a_h, a_w, a_s).T)
    return (a_h, a_w, a_s, a_t), error


def fit_cp(
    kernel: np.ndarray,
    rank: tuple[int, ...],
    *,
    sigma: Optional[CovarianceFactor] = None,
    seed: int = 0,
    n_iter_max: int = 100,
    tol: float = 1e-6,
) -> Factorization:
    """Rank-``R`` CP of a Conv2D kernel.

    Parameters
    ----------
    kernel : ``(kh, kw, S, T)``
    rank : ``(R,)`` with ``1 <= R <= kh·kw·min(S, T)``
    sigma : Σ of the input patches (``D × D``, layout order) for the Σ-norm fit, or None
    seed : seeds the random initial columns used when ``R`` exceeds a mode size
    n_iter_max, tol : CP-ALS iterations and ALS-Σ sweeps, and their stopping tolerance

    Returns
    -------
    Factorization with factors ``(A_H (kh, R), A_W (kw, R), A_S (S, R), A_T (T, R))``.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    (r,) = check_rank_tuple("cp", rank, (_full_rank(kernel.shape),), _NAMES)
    target = SigmaTarget.of(kernel, sigma, "cp") if sigma is not None else None
    history: tuple[float, ...] = ()
    if r == _full_rank(kernel.shape):
        state = _elementary(kernel)
    else:
        state = _plain_cp(kernel, r, seed, n_iter_max, tol)
        if target is not None:
            state = _balance(state)
            state, history = run_als(state, lambda st: _sigma_sweep(target, st), target.error(_cp_matrix(*state)),
                                     n_iter_max=n_iter_max, tol=tol)
    return Factorization(
        method="cp",
        kind="conv2d",
        rank=(r,),
        kernel_shape=tuple(kernel.shape),
        factors=_balance(state),
        objective="frobenius" if sigma is None else "sigma",
        history=history,
    )


def reconstruct_cp(fact: Factorization) -> np.ndarray:
    return matrix_to_kernel(_cp_matrix(*fact.factors), fact.kernel_shape)


def _max_rank(geometry: LayerGeometry) -> tuple[int]:
    return (_full_rank(geometry.kernel_shape),)


def _cost(geometry: LayerGeometry, rank: tuple[int, ...]) -> Cost:
    (r,) = rank
    kh, kw = geometry.kernel_size
    s, t = geometry.in_channels, geometry.out_channels
    h_in, w_in = geometry.input_hw
    h_mid, w_mid = geometry.output_hw_after((True, False))
    positions = geometry.output_positions
    bias = t if geometry.use_bias else 0
    macs = r * (h_in * w_in * s + h_mid * w_mid * kh + positions * (kw + t))
    return Cost(params=r * (s + kh + kw + t) + bias, macs=macs)


def _spatial_layer(factor: np.ndarray, axis: int, geometry: LayerGeometry) -> tuple[str, dict, np.ndarray]:
    """The per-channel ``(kh, 1)`` (axis 0) or ``(1, kw)`` (axis 1) filter layer of the chain."""
    r = factor.shape[1]
    size = [1, 1]
    size[axis] = factor.shape[0]
    strides, dilation = [1, 1], [1, 1]
    strides[axis], dilation[axis] = geometry.strides[axis], geometry.dilation[axis]
    config = dict(
        kernel_size=tuple(size), strides=tuple(strides), padding=geometry.padding, dilation_rate=tuple(dilation), use_bias=False
    )
    kernel = factor.reshape(size[0], size[1], r)
    if tuple(geometry.strides) == (1, 1):
        return "DepthwiseConv2D", config, kernel[:, :, :, None]
    # TF depthwise needs equal strides: the same filters as a grouped convolution
    return "Conv2D", dict(filters=r, groups=r, **config), kernel[:, :, None, :]


def _layers(fact: Factorization, geometry: LayerGeometry, bias: Optional[np.ndarray]) -> list[LayerSpec]:
    a_h, a_w, a_s, a_t = fact.factors
    (r,) = fact.rank
    h_in, w_in = geometry.input_hw
    h_mid, w_mid = geometry.output_hw_after((True, False))
    positions = geometry.output_positions
    specs = [LayerSpec("Conv2D", dict(filters=r, kernel_size=(1, 1), use_bias=False), (a_s[None, None],), macs=a_s.size * h_in * w_in)]
    for axis, factor, macs in ((0, a_h, a_h.size * h_mid * w_mid), (1, a_w, a_w.size * positions)):
        class_name, config, kernel = _spatial_layer(factor, axis, geometry)
        specs.append(LayerSpec(class_name, config, (kernel,), macs=macs))
    specs.append(
        LayerSpec(
            "Conv2D",
            dict(filters=geometry.out_channels, kernel_size=(1, 1), use_bias=geometry.use_bias, activation=geometry.activation),
            (a_t.T[None, None],) + ((bias,) if geometry.use_bias else ()),
            macs=a_t.size * positions,
        )
    )
    return specs


CP = Method(
    id="cp",
    kind="conv2d",
    summary="CP: Conv(R, 1×1) → DWConv(kh×1) → DWConv(1×kw) → Conv(T, 1×1)",
    rank_names=_NAMES,
    fit=fit_cp,
    reconstruct=reconstruct_cp,
    layers=_layers,
    cost=_cost,
    max_rank=_max_rank,
    supports_sigma=True,
)
