"""Shared building blocks of the Σ-norm ALS fits of tucker2, cp and spatial (METHODS.md §2).

All three Conv2D methods approximate ``W ∈ R^{T×D}`` (layout order ``d = (h·kw + w)·S + s``)
by a multilinear ``W̃`` and minimise ``‖(W − W̃) L‖_F²  = tr((W − W̃) Σ (W − W̃)ᵀ)`` one factor
at a time. Two kinds of factor occur:

* **output-side** ``P (T × m)`` with ``W̃ = P Q``: closed form ``P = W Σ Qᵀ (Q Σ Qᵀ)⁻¹``
  (:func:`output_factor`).
* **input-side** ``F[g, r]`` where ``g`` runs over some of the axes ``(h, w, s)`` of ``D`` and
  ``e`` over the others: ``W̃[t, (g, e)] = Σ_r F[g, r] P[t, e, r]``. The optimum solves the
  normal equations ``𝓗(F) = B`` with
  ``𝓗(F)[g, r] = Σ_{t,e} P[t,e,r] (W̃(F) Σ)[t,(g,e)]`` and ``B`` the same with ``W`` in place
  of ``W̃(F)``. ``𝓗`` only needs ``M[e,r,f,q] = Σ_t P[t,e,r] P[t,f,q]``:
  :func:`solve_slices` takes ``P`` as a dense array (tucker2's ``U_S``, spatial's vertical
  filter); :func:`solve_khatri_rao` takes the CP form ``P[t,e,r] = A_T[t,r] N[e,r]`` without
  ever forming ``P``.

The normal equations are solved densely (with a tiny ridge, exact) when there are at most
:data:`DENSE_LIMIT` unknowns and building and factoring the matrix costs at most
:data:`DENSE_OVER_CG` times the flops of the capped CG solve; otherwise matrix-free by
conjugate gradients warm-started at the current iterate and capped at :data:`CG_MAXITER`
iterations **[our choice]**. The cost rule replaced a size limit alone, under which a
Tucker-2 ``U_S`` of a 64-channel 3×3 conv at ``r_S = 32`` (2 048 unknowns) cost ~40× the flops
of its CG solve. Measured on the search's candidate grids (12 points, 10 sweeps, every Conv2D
layer of the Fashion-MNIST zoo, bench/, issue 5; one thread): tucker2 + cp + spatial CPU time
fell 63 → 27 s (ResNet-style), 54 → 12 s (MobileNetV2-style) and 23 → 9 s (VGG-style); the
candidates' relative Σ-errors changed by a median of 0 and a 95th percentile of +0.03 %
(the worst, +7.7 %, a rank-heavy CP candidate of a 16-channel layer). CG is preconditioned by ``B_g ⊗ C_r``, where ``A_e ⊗ B_g`` is the
nearest Kronecker product of Σ (Van Loan; exact when Σ separates into the ``e`` and ``g``
axes) and ``C = Σ_{e,f} A_e[e,f] M[e,·,f,·]`` **[our choice]**. Truncated (P)CG started at the
current iterate never increases the objective, so every factor update is monotone.

:func:`run_als` is the sweep driver with the monotone guard: each sweep returns its relative
Σ-error (every method's sweep ends with the output-side solve, whose products give the error
almost for free, :meth:`SigmaTarget.product_error`); if it rose, the previous iterate is
restored and the loop stops; it also stops when the error changed by less than ``tol`` or
after ``n_iter_max`` sweeps.

All solves use ``Σ = sigma.damped`` (``L Lᵀ``, damping included), so the error the guard
sees and the equations being solved agree.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, TypeVar

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve
from scipy.sparse.linalg import LinearOperator, cg

from lrf_core.covariance import CovarianceFactor
from lrf_core.errors import DataError
from lrf_core.layout import kernel_to_matrix
from lrf_core.memo import digest, memoized_for

__all__ = [
    "DENSE_LIMIT",
    "DENSE_OVER_CG",
    "CG_MAXITER",
    "EXACT_ERROR_BELOW",
    "SigmaTarget",
    "ModeSplit",
    "khatri_rao",
    "ridge_solve",
    "output_factor",
    "output_slices",
    "solve_slices",
    "solve_khatri_rao",
    "run_als",
    "use_dense",
]

logger = logging.getLogger(__name__)

#: Largest number of unknowns solved with a dense normal matrix (its memory: 32 MB at 2 048).
DENSE_LIMIT = 2048
#: A dense solve (build + Cholesky) may cost this many times the capped CG solve's flops: it is exact.
DENSE_OVER_CG = 4.0
#: Relative Σ-errors below this are computed exactly, not from the factored form (cancellation).
EXACT_ERROR_BELOW = 1e-3
#: CG iterations per factor update (warm-started, so ALS sweeps keep refining).
CG_MAXITER = 5
CG_RTOL = 1e-10
#: Relative ridge ``ε·trace/n`` of the small solves (survives rank-deficient Gram matrices).
RIDGE = 1e-12
_POWER_ITERATIONS = 30
_EIG_FLOOR = 1e-10

State = TypeVar("State")


def khatri_rao(*matrices: np.ndarray) -> np.ndarray:
    """Column-wise Kronecker product, first matrix slowest: ``out[(i, j, …), r] = A[i,r] B[j,r] …``."""
    out = matrices[0]
    for m in matrices[1:]:
        out = (out[:, None, :] * m[None, :, :]).reshape(-1, m.shape[1])
    return out


def ridge_solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve ``(G + ε I) X = rhs`` for a symmetric PSD ``G``, ``ε = RIDGE·trace(G)/n``."""
    n = gram.shape[0]
    gram = 0.5 * (gram + gram.T)
    scale = float(np.trace(gram)) / max(n, 1)
    eps = RIDGE * scale if scale > 0 else RIDGE
    regularised = gram + eps * np.eye(n)
    try:
        return cho_solve(cho_factor(regularised, lower=True), rhs)
    except (LinAlgError, ValueError):
        return np.linalg.lstsq(regularised, rhs, rcond=None)[0]


class ModeSplit:
    """Σ viewed with the ``D`` axes reordered as ``(g, e)``: ``g`` the solved factor's axes.

    Attributes
    ----------
    g_axes, e_axes : axes of ``(h, w, s)`` (0, 1, 2), each in natural order
    g, e : sizes ``G = Π dims[g_axes]``, ``E = Π dims[e_axes]``
    sigma : ``(D, D)`` Σ with rows and columns in ``(g, e)`` order
    """

    def __init__(self, dims: tuple[int, int, int], sigma: np.ndarray, g_axes: tuple[int, ...]):
        self.dims = dims
        self.g_axes = tuple(g_axes)
        self.e_axes = tuple(a for a in range(3) if a not in self.g_axes)
        self.perm = self.g_axes + self.e_axes
        self.g = int(np.prod([dims[a] for a in self.g_axes]))
        self.e = int(np.prod([dims[a] for a in self.e_axes]))
        d = self.g * self.e
        if self.perm == (0, 1, 2):
            self.sigma = sigma
        else:
            p = self.perm
            self.sigma = np.ascontiguousarray(
                sigma.reshape(dims + dims).transpose(p + tuple(3 + a for a in p)).reshape(d, d)
            )
        self._kron: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None

    def to_modes(self, x: np.ndarray) -> np.ndarray:
        """Rows ``(n, D)`` in layout order → ``(n, G, E)``."""
        n = x.shape[0]
        moved = x.reshape((n,) + self.dims).transpose((0,) + tuple(1 + a for a in self.perm))
        return moved.reshape(n, self.g, self.e)

    def from_modes(self, x: np.ndarray) -> np.ndarray:
        """``(n, G, E)`` → rows ``(n, D)`` in layout order (the inverse of :meth:`to_modes`)."""
        n = x.shape[0]
        back = tuple(1 + self.perm.index(a) for a in range(3))
        return x.reshape((n,) + tuple(self.dims[a] for a in self.perm)).transpose((0,) + back).reshape(n, -1)

    def kronecker(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nearest Kronecker product ``Σ ≈ B_g ⊗ A_e`` (in ``(g, e)`` order), made PSD.

        Returns ``(A_e (E, E), eigenvalues of B_g, eigenvectors of B_g)`` (floored positive).
        """
        if self._kron is None:
            g, e = self.g, self.e
            rearranged = self.sigma.reshape(g, e, g, e).transpose(0, 2, 1, 3).reshape(g * g, e * e)
            a = np.eye(e).ravel() / np.sqrt(e)
            for _ in range(_POWER_ITERATIONS):
                a = rearranged.T @ (rearranged @ a)
                norm = np.linalg.norm(a)
                if norm == 0:
                    a = np.eye(e).ravel()
                    break
                a /= norm
            b = (rearranged @ a).reshape(g, g)
            a = a.reshape(e, e)
            if np.trace(a) < 0:
                a, b = -a, -b
            a_psd = _psd(0.5 * (a + a.T))
            lb, ub = np.linalg.eigh(0.5 * (b + b.T))
            lb = np.maximum(lb, _EIG_FLOOR * max(float(lb.max()), 1e-300))
            self._kron = (a_psd, lb, ub)
        return self._kron


def _psd(matrix: np.ndarray) -> np.ndarray:
    lam, vec = np.linalg.eigh(matrix)
    lam = np.maximum(lam, _EIG_FLOOR * max(float(lam.max()), 1e-300))
    return (vec * lam) @ vec.T


class SigmaTarget:
    """The fixed data of one Σ fit of a Conv2D kernel ``(kh, kw, S, T)``.

    Attributes
    ----------
    w : ``(T, D)`` layout matrix; sigma : ``(D, D)`` damped Σ ``= L Lᵀ``; root : ``L``
    w_sigma : ``W Σ``, ``(T, D)``, computed once
    dims : ``(kh, kw, S)``
    """

    def __init__(self, kernel: np.ndarray, sigma: CovarianceFactor, method_id: str):
        kh, kw, s, t = kernel.shape
        d = kh * kw * s
        if sigma.dim != d:
            raise DataError(
                f"Σ for method `{method_id}` must be {d}×{d} (kh·kw·S for kernel shape {tuple(kernel.shape)}). "
                f"Received {sigma.dim}×{sigma.dim}: use the statistics of this layer's input patches."
            )
        self.dims = (kh, kw, s)
        self.w = kernel_to_matrix(kernel).astype(np.float64)
        self.root = np.asarray(sigma.root, dtype=np.float64)
        damped = sigma.damped
        self.sigma = 0.5 * (damped + damped.T)
        self.w_sigma = self.w @ self.sigma
        self.norm = float(np.linalg.norm(self.w @ self.root))
        self.energy = float(np.vdot(self.w, self.w_sigma))  # ⟨W, WΣ⟩ = ‖W L‖², in the Σ the solves use
        self._splits: dict[tuple[int, ...], ModeSplit] = {}

    @classmethod
    def of(cls, kernel: np.ndarray, sigma: CovarianceFactor, method_id: str) -> "SigmaTarget":
        """The target of ``kernel`` under ``sigma``, built once per layer inside a :func:`lrf_core.memo.layer_memo`
        block (its fixed data and lazily built mode splits are rank-independent; ALS never modifies them)."""
        return memoized_for(sigma, ("sigma_target", digest(kernel)), lambda: cls(kernel, sigma, method_id))

    def error(self, w_approx: np.ndarray) -> float:
        """Relative Σ-error ``‖(W − W̃) L‖_F / ‖W L‖_F``."""
        num = float(np.linalg.norm((self.w - w_approx) @ self.root))
        if self.norm == 0:
            return 0.0 if num == 0 else float("inf")
        return num / self.norm

    def product_error(
        self, p: np.ndarray, gram: np.ndarray, cross: np.ndarray, w_approx: Callable[[], np.ndarray]
    ) -> float:
        """Relative Σ-error of ``W̃ = P Q`` from ``gram = Q Σ Qᵀ`` ``(m, m)`` and ``cross = W Σ Qᵀ`` ``(T, m)``;
        ``w_approx()`` builds ``W̃`` for the exact fallback.

        ``‖(W − P Q) L‖² = ⟨W, WΣ⟩ − 2⟨P, cross⟩ + ⟨P gram, P⟩``: ``T·m²`` flops where :meth:`error` takes
        ``T·D²`` (0.23 s a call at T = 512, D = 4 608, a fifth of an ALS sweep there). The subtraction
        cancels as the error shrinks: below :data:`EXACT_ERROR_BELOW` (relative) the error is
        recomputed with :meth:`error`, so what the ALS guard compares stays accurate to ~1e-10.
        """
        if self.energy <= 0:
            return self.error(w_approx())
        num = self.energy - 2.0 * float(np.vdot(p, cross)) + float(np.vdot(p @ gram, p))
        if num < EXACT_ERROR_BELOW**2 * self.energy:
            return self.error(w_approx())
        return float(np.sqrt(num / self.energy))

    def split(self, g_axes: tuple[int, ...]) -> ModeSplit:
        key = tuple(g_axes)
        if key not in self._splits:
            self._splits[key] = ModeSplit(self.dims, self.sigma, key)
        return self._splits[key]


def output_factor(target: SigmaTarget, q: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact minimiser over ``P`` of ``‖(W − P Q) L‖_F``: ``P = W Σ Qᵀ (Q Σ Qᵀ)⁻¹``, and its error.

    Parameters
    ----------
    q : ``(m, D)`` the input side of ``W̃ = P Q`` (layout order)

    Returns
    -------
    ``(P (T, m), relative Σ-error of P Q)``; the error comes from the products the solve already
    formed (:meth:`SigmaTarget.product_error`), so a sweep that ends here gets it for ``T·m²`` flops.
    """
    gram = (q @ target.sigma) @ q.T
    cross = target.w_sigma @ q.T
    p = ridge_solve(gram, cross.T).T
    return p, target.product_error(p, gram, cross, lambda: p @ q)


def output_slices(target: SigmaTarget, g_axes: tuple[int, ...], f: np.ndarray) -> tuple[np.ndarray, float]:
    """:func:`output_factor` for ``W̃[t, (g, e)] = Σ_r F[g, r] P[t, e, r]``, solving for ``P`` with ``F`` fixed.

    Here ``Q[(e, r), (g', e')] = δ_ee' F[g', r]`` is block diagonal, so ``Q Σ`` needs only
    ``Fᵀ Σ_g`` (``R·D²`` flops) where the dense product takes ``E·R·D²``: 3× fewer for a 3-wide
    kernel (spatial's horizontal filter).

    Parameters
    ----------
    g_axes : the axes of ``(h, w, s)`` that ``F`` indexes; f : ``(G, R)``

    Returns
    -------
    ``(P (T, E, R), relative Σ-error of W̃)``.
    """
    split = target.split(g_axes)
    g, e = split.g, split.e
    r = f.shape[1]
    x = (f.T @ split.sigma.reshape(g, e * g * e)).reshape(r, e, g, e)          # (Q Σ)[(e, r), (g', e')]
    gram = np.einsum("regv,gq->ervq", x, f, optimize=True).reshape(e * r, e * r)
    cross = np.einsum("tge,gr->ter", split.to_modes(target.w_sigma), f, optimize=True).reshape(-1, e * r)
    p = ridge_solve(gram, cross.T).T

    def w_approx() -> np.ndarray:
        return split.from_modes(np.einsum("gr,ter->tge", f, p.reshape(-1, e, r), optimize=True))

    return p.reshape(-1, e, r), target.product_error(p, gram, cross, w_approx)


def use_dense(n: int, build_flops: float, apply_flops: float, g: int, r: int) -> bool:
    """Whether ``n = G·R`` normal equations are solved densely (see the module docstring).

    Dense: ``build_flops`` plus the Cholesky's ``n³/3``. CG: :data:`CG_MAXITER` applications of the
    normal operator (``apply_flops`` each) and of the Kronecker preconditioner (``2·G·R·(G + R)``).
    """
    dense = build_flops + n**3 / 3.0
    cg_flops = CG_MAXITER * (apply_flops + 2.0 * g * r * (g + r))
    return n <= DENSE_LIMIT and dense <= DENSE_OVER_CG * cg_flops


def _solve(
    split: ModeSplit,
    rhs: np.ndarray,
    f0: np.ndarray,
    apply: Callable[[np.ndarray], np.ndarray],
    dense: Callable[[], np.ndarray],
    flops: tuple[float, float],
    precond_core: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """``flops``: (building the dense normal matrix, one application of the normal operator)."""
    g, r = rhs.shape
    n = g * r
    if use_dense(n, *flops, g, r):
        return ridge_solve(dense(), rhs.reshape(n)).reshape(g, r)
    a_e, lb, ub = split.kronecker()
    lc, uc = np.linalg.eigh(precond_core(a_e))
    lc = np.maximum(lc, _EIG_FLOOR * max(float(lc.max()), 1e-300))
    denom = np.outer(lb, lc)

    def precondition(y: np.ndarray) -> np.ndarray:
        return (ub @ ((ub.T @ y.reshape(g, r) @ uc) / denom) @ uc.T).ravel()

    op = LinearOperator((n, n), matvec=lambda x: apply(x.reshape(g, r)).ravel(), dtype=np.float64)
    m = LinearOperator((n, n), matvec=precondition, dtype=np.float64)
    x, _ = cg(op, rhs.ravel(), x0=f0.ravel(), rtol=CG_RTOL, atol=0.0, maxiter=CG_MAXITER, M=m)
    return x.reshape(g, r)


def solve_slices(
    target: SigmaTarget, g_axes: tuple[int, ...], p: np.ndarray, f0: np.ndarray
) -> np.ndarray:
    """Optimal input-side factor ``F`` for ``W̃[t, (g, e)] = Σ_r F[g, r] P[t, e, r]``.

    Parameters
    ----------
    g_axes : the axes of ``(h, w, s)`` that ``F`` indexes (natural order); ``e`` is the rest
    p : ``(T, E, R)`` the rest of the model, ``e`` in natural axis order
    f0 : ``(G, R)`` current factor (CG warm start)

    Returns
    -------
    F : ``(G, R)``, the minimiser of ``‖(W − W̃) L‖_F`` with everything else fixed.
    """
    split = target.split(g_axes)
    g, e = split.g, split.e
    t, _, r = p.shape
    z = split.to_modes(target.w_sigma)                        # (T, G, E)
    rhs = z.transpose(1, 0, 2).reshape(g, t * e) @ p.reshape(t * e, r)
    p2 = p.reshape(t, e * r)
    m4 = (p2.T @ p2).reshape(e, r, e, r)                       # M[e, r, f, q]
    m_flat = m4.reshape(e * r * e, r)
    d = g * e

    def apply(f: np.ndarray) -> np.ndarray:
        x = (f.T @ split.sigma.reshape(g, e * d)).reshape(r, e, g, e)       # x[r, e, h, f]
        return x.transpose(2, 1, 0, 3).reshape(g, e * r * e) @ m_flat

    def dense() -> np.ndarray:
        s = split.sigma.reshape(g, e, g, e).transpose(0, 2, 1, 3).reshape(g * g, e * e)
        mt = m4.transpose(0, 2, 1, 3).reshape(e * e, r * r)
        return (s @ mt).reshape(g, g, r, r).transpose(0, 2, 1, 3).reshape(g * r, g * r)

    def core(a_e: np.ndarray) -> np.ndarray:
        return np.einsum("ef,erfq->rq", a_e, m4)

    return _solve(split, rhs, f0, apply, dense, (float(g * g * e * e * r * r), float(r * d * d + g * e * e * r * r)), core)


def solve_khatri_rao(
    target: SigmaTarget, g_axes: tuple[int, ...], left: np.ndarray, n: np.ndarray, f0: np.ndarray
) -> np.ndarray:
    """Optimal CP factor ``F`` for ``W̃[t, (g, e)] = Σ_r left[t, r] F[g, r] N[e, r]``.

    Parameters
    ----------
    left : ``(T, R)`` output factor ``A_T``
    n : ``(E, R)`` Khatri-Rao product of the other input factors, ``e`` in natural axis order
    f0 : ``(G, R)`` current factor

    The normal matrix is ``(A_Tᵀ A_T)[r, q] · Σ_{e,f} N[e,r] Σ[(g,e),(h,f)] N[f,q]``
    (a Hadamard product), applied in ``O(D² R)`` without forming ``P``.
    """
    split = target.split(g_axes)
    g, e = split.g, split.e
    r = left.shape[1]
    d = g * e
    z = split.to_modes(left.T @ target.w_sigma)                 # (R, G, E)
    rhs = np.einsum("rge,er->gr", z, n, optimize=True)
    gram_t = left.T @ left

    def apply(f: np.ndarray) -> np.ndarray:
        v = (f[:, None, :] * n[None, :, :]).reshape(d, r)
        y = ((split.sigma @ v) @ gram_t).reshape(g, e, r)
        return np.einsum("ger,er->gr", y, n)

    def dense() -> np.ndarray:
        x = (split.sigma.reshape(d * g, e) @ n).reshape(g, e, g, r)          # x[g, e, h, q]
        h = (n.T @ x.transpose(1, 0, 2, 3).reshape(e, g * g * r)).reshape(r, g, g, r)
        h = h.transpose(1, 0, 2, 3) * gram_t[None, :, None, :]
        return h.reshape(g * r, g * r)

    def core(a_e: np.ndarray) -> np.ndarray:
        return gram_t * (n.T @ a_e @ n)

    return _solve(split, rhs, f0, apply, dense, (float(d * d * r + g * g * e * r * r), float(d * d * r + d * r * r)),
                  core)


def run_als(
    state: State,
    sweep: Callable[[State], tuple[State, float]],
    error: float,
    *,
    n_iter_max: int,
    tol: float,
) -> tuple[State, tuple[float, ...]]:
    """Sweep until converged, never accepting a sweep that raised the Σ-error.

    ``sweep`` returns the next state and its relative Σ-error (each method's sweep ends with an
    output-side solve, whose products give it, :meth:`SigmaTarget.product_error`); ``error`` is
    the starting state's.
    Returns the final state and the relative Σ-error after each accepted sweep
    (non-increasing by construction).
    """
    previous = error
    history: list[float] = []
    for i in range(n_iter_max):
        candidate, current = sweep(state)
        if not np.isfinite(current) or current > previous:
            logger.debug("ALS-Σ sweep %d raised the error (%.3e > %.3e): restored, stopping", i, current, previous)
            break
        state = candidate
        history.append(current)
        if previous - current < tol:
            break
        previous = current
    return state, tuple(history)
