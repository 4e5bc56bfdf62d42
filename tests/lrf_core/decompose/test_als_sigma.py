"""ALS-Σ building blocks: each factor update is the exact optimum, CG agrees with the dense
solve, the Kronecker preconditioner is exact for separable Σ, and the sweep guard is monotone."""

from __future__ import annotations

import numpy as np
import pytest

from lrf_core.covariance import covariance_factor
from lrf_core.decompose import als_sigma
from lrf_core.decompose.als_sigma import (
    SigmaTarget,
    khatri_rao,
    output_factor,
    output_slices,
    ridge_solve,
    run_als,
    solve_khatri_rao,
    solve_slices,
)
from lrf_core.errors import DataError
from lrf_core.layout import kernel_to_matrix

SHAPE = (3, 2, 4, 5)  # kh, kw, S, T


def _target(correlated_sigma, seed: int = 0) -> SigmaTarget:
    kernel = np.random.default_rng(seed).standard_normal(SHAPE)
    return SigmaTarget(kernel, correlated_sigma(*SHAPE[:3], seed=seed), "test")


def _loss(target: SigmaTarget, w_approx: np.ndarray) -> float:
    return float(np.linalg.norm((target.w - w_approx) @ target.root) ** 2)


def _brute_force(target: SigmaTarget, forward, shape) -> np.ndarray:
    """argmin_F ‖(W − forward(F)) L‖ by least squares over the explicit linear map."""
    n = int(np.prod(shape))
    basis = np.eye(n)
    columns = np.stack([(forward(basis[i].reshape(shape)) @ target.root).ravel() for i in range(n)], axis=1)
    x = np.linalg.lstsq(columns, (target.w @ target.root).ravel(), rcond=None)[0]
    return x.reshape(shape)


def _force(path: str, monkeypatch) -> None:
    """Solve by the dense normal matrix or by (uncapped) CG whatever the cost rule would pick."""
    if path == "cg":
        monkeypatch.setattr(als_sigma, "DENSE_LIMIT", 0)
        monkeypatch.setattr(als_sigma, "CG_MAXITER", 500)
    else:
        monkeypatch.setattr(als_sigma, "DENSE_OVER_CG", float("inf"))


def _slices_forward(target, g_axes, p):
    kh, kw, s = target.dims
    letters = "hws"
    g = "".join(letters[a] for a in g_axes)
    e = "".join(letters[a] for a in range(3) if a not in g_axes)
    dims = dict(zip(letters, target.dims))

    def forward(f):
        f = f.reshape(tuple(dims[c] for c in g) + (f.shape[-1],))
        pe = p.reshape((p.shape[0],) + tuple(dims[c] for c in e) + (p.shape[-1],))
        return np.einsum(f"{g}r,t{e}r->thws", f, pe).reshape(p.shape[0], -1)

    return forward


def test_khatri_rao_follows_the_layout_order():
    rng = np.random.default_rng(0)
    a_h, a_w, a_s, a_t = (rng.standard_normal((n, 2)) for n in (3, 2, 4, 5))
    kernel = np.einsum("hr,wr,sr,tr->hwst", a_h, a_w, a_s, a_t)
    np.testing.assert_allclose(a_t @ khatri_rao(a_h, a_w, a_s).T, kernel_to_matrix(kernel), atol=1e-12)


def test_output_factor_is_the_least_squares_optimum(correlated_sigma):
    target = _target(correlated_sigma)
    q = np.random.default_rng(1).standard_normal((3, target.w.shape[1]))
    p, error = output_factor(target, q)
    assert error == pytest.approx(target.error(p @ q), rel=1e-9)
    expected = _brute_force(target, lambda f: f @ q, (SHAPE[3], 3))
    np.testing.assert_allclose(p, expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("g_axes", [(0, 2), (2,), (1,)])
def test_output_slices_is_output_factor_with_the_block_diagonal_q(g_axes, correlated_sigma):
    target = _target(correlated_sigma)
    split = target.split(g_axes)
    f = np.random.default_rng(4).standard_normal((split.g, 2))
    p, error = output_slices(target, g_axes, f)
    # the explicit Q[(e, r), D] = δ_ee' F[g', r], rows in (e, r) order
    q = split.from_modes(np.einsum("gr,ev->ergv", f, np.eye(split.e)).reshape(-1, split.g, split.e))
    expected, expected_error = output_factor(target, q)
    np.testing.assert_allclose(p.reshape(p.shape[0], -1), expected, rtol=1e-8, atol=1e-10)
    assert error == pytest.approx(expected_error, rel=1e-9)
    assert error == pytest.approx(target.error(expected @ q), rel=1e-9)


def test_mode_split_round_trips_the_layout(correlated_sigma):
    target = _target(correlated_sigma)
    for g_axes in [(0,), (1,), (2,), (0, 2), (1, 2), (0, 1)]:
        split = target.split(g_axes)
        np.testing.assert_array_equal(split.from_modes(split.to_modes(target.w)), target.w)


@pytest.mark.parametrize("m", [1, 3, 7])
def test_product_error_agrees_with_the_direct_error_for_any_p(m, correlated_sigma):
    target = _target(correlated_sigma)
    rng = np.random.default_rng(m)
    q = rng.standard_normal((m, target.w.shape[1]))
    p = rng.standard_normal((SHAPE[3], m)) * 0.1
    gram, cross = q @ target.sigma @ q.T, target.w_sigma @ q.T
    assert target.product_error(p, gram, cross, lambda: p @ q) == pytest.approx(target.error(p @ q), rel=1e-10)


def test_product_error_is_exact_where_the_factored_form_cancels(correlated_sigma):
    """W̃ = W up to 1e-9: the factored form loses every digit to cancellation (here it is negative)."""
    target = _target(correlated_sigma)
    q = np.eye(target.w.shape[1])
    p = target.w + 1e-9 * np.random.default_rng(3).standard_normal(target.w.shape)
    gram, cross = target.sigma, target.w_sigma
    exact = target.error(p @ q)
    assert 0 < exact < 1e-7
    assert target.product_error(p, gram, cross, lambda: p @ q) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("g_axes", [(2,), (0, 2), (1,)])
@pytest.mark.parametrize("path", ["dense", "cg"])
def test_solve_slices_is_the_least_squares_optimum(g_axes, path, correlated_sigma, monkeypatch):
    _force(path, monkeypatch)
    target = _target(correlated_sigma)
    split = target.split(g_axes)
    rng = np.random.default_rng(2)
    p = rng.standard_normal((SHAPE[3], split.e, 2))
    f = solve_slices(target, g_axes, p, np.zeros((split.g, 2)))
    forward = _slices_forward(target, g_axes, p)
    expected = _brute_force(target, forward, (split.g, 2))
    assert _loss(target, forward(f)) == pytest.approx(_loss(target, forward(expected)), rel=1e-9)
    np.testing.assert_allclose(f, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("g_axes", [(2,), (0,), (1,)])
@pytest.mark.parametrize("path", ["dense", "cg"])
def test_solve_khatri_rao_is_the_least_squares_optimum(g_axes, path, correlated_sigma, monkeypatch):
    _force(path, monkeypatch)
    target = _target(correlated_sigma, seed=1)
    split = target.split(g_axes)
    rng = np.random.default_rng(3)
    r = 3
    left = rng.standard_normal((SHAPE[3], r))
    others = [rng.standard_normal((target.dims[a], r)) for a in split.e_axes]
    n = khatri_rao(*others)

    def forward(f):
        mats = {g_axes[0]: f, split.e_axes[0]: others[0], split.e_axes[1]: others[1]}
        return left @ khatri_rao(mats[0], mats[1], mats[2]).T

    f = solve_khatri_rao(target, g_axes, left, n, np.zeros((split.g, r)))
    expected = _brute_force(target, forward, (split.g, r))
    assert _loss(target, forward(f)) == pytest.approx(_loss(target, forward(expected)), rel=1e-9)
    np.testing.assert_allclose(f, expected, rtol=1e-5, atol=1e-7)


def test_dense_solves_are_chosen_only_when_cheap_against_capped_cg():
    from lrf_core.decompose.als_sigma import CG_MAXITER, DENSE_LIMIT, DENSE_OVER_CG, use_dense

    # Tucker-2 U_S of a 16-channel 3×3 conv at r = 8 (n = 128): build 1.3 M + Cholesky 0.7 M flops vs CG 1.3 M
    g, e, r = 16, 9, 8
    d = g * e
    assert use_dense(g * r, g * g * e * e * r * r, r * d * d + g * e * e * r * r, g, r)
    # the same at 64 channels, r = 32 (n = 2 048): 3.2 G flops against ~80 M for the capped CG
    g, r = 64, 32
    d = g * e
    build, apply = g * g * e * e * r * r, r * d * d + g * e * e * r * r
    assert (build + (g * r) ** 3 / 3) > 30 * CG_MAXITER * apply  # ~40×
    assert not use_dense(g * r, build, apply, g, r)
    assert not use_dense(DENSE_LIMIT + 1, 0.0, 1e30, DENSE_LIMIT + 1, 1)  # the memory cap holds however cheap


def test_kronecker_preconditioner_solves_separable_sigma_in_one_cg_step(monkeypatch):
    """Σ = B_s ⊗ A_(h,w) (s slowest after reordering) makes the normal matrix B ⊗ C exactly."""
    monkeypatch.setattr(als_sigma, "DENSE_LIMIT", 0)
    monkeypatch.setattr(als_sigma, "CG_MAXITER", 1)
    rng = np.random.default_rng(4)
    kh, kw, s, t = SHAPE
    a = rng.standard_normal((kh * kw, 2 * kh * kw))
    b = rng.standard_normal((s, 2 * s))
    sigma_gse = np.kron(b @ b.T, a @ a.T).reshape(s, kh, kw, s, kh, kw)
    sigma = sigma_gse.transpose(1, 2, 0, 4, 5, 3).reshape(kh * kw * s, -1)  # back to (h, w, s) layout
    target = SigmaTarget(rng.standard_normal(SHAPE), covariance_factor(sigma), "test")
    p = rng.standard_normal((t, kh * kw, 2))
    f = solve_slices(target, (2,), p, np.zeros((s, 2)))
    forward = _slices_forward(target, (2,), p)
    expected = _brute_force(target, forward, (s, 2))
    np.testing.assert_allclose(f, expected, rtol=1e-6, atol=1e-8)


def test_ridge_solve_survives_a_singular_gram():
    gram = np.diag([1.0, 1.0, 0.0])
    x = ridge_solve(gram, np.array([1.0, 2.0, 0.0]))
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(x, [1.0, 2.0, 0.0], atol=1e-9)


def test_run_als_restores_the_previous_iterate_when_the_error_rises():
    errors = {0: 1.0, 1: 0.5, 2: 0.4, 3: 0.45, 4: 0.1}
    state, history = run_als(0, lambda s: (s + 1, errors[s + 1]), errors[0], n_iter_max=10, tol=1e-6)
    assert state == 2
    assert history == (0.5, 0.4)


def test_run_als_stops_on_tolerance_and_on_the_sweep_cap():
    state, history = run_als(0, lambda s: (s + 1, 1.0 / (2 + s)), 1.0, n_iter_max=3, tol=1e-6)
    assert state == 3 and history == pytest.approx((0.5, 1 / 3, 0.25))
    state, history = run_als(0, lambda s: (s + 1, 1.0 - 1e-3 * min(s + 1, 2)), 1.0, n_iter_max=50, tol=1e-6)
    assert state == 3 and len(history) == 3 and history[-1] == history[-2]


def test_sigma_target_rejects_a_sigma_of_the_wrong_size():
    sigma = covariance_factor(np.eye(5))
    with pytest.raises(DataError, match=r"must be 24×24 .* Received 5×5"):
        SigmaTarget(np.zeros(SHAPE), sigma, "tucker2")
