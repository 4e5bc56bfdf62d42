"""Rank baselines (METHODS.md §3.8): energy threshold and empirical VBMF."""

from __future__ import annotations

import numpy as np
import pytest

from lrf_core.errors import LRFError, UnknownMethodError
from lrf_core.rank_baselines import energy_rank, energy_ranks_for, vbmf_rank, vbmf_ranks_tucker2


def _low_rank(rng, shape, rank, noise):
    signal = rng.standard_normal((shape[0], rank)) @ rng.standard_normal((rank, shape[1]))
    return signal + noise * rng.standard_normal(shape)


def _planted_tucker2(rng, kh, kw, s, t, r_s, r_t, noise):
    core = rng.standard_normal((kh, kw, r_s, r_t))
    u_s = np.linalg.qr(rng.standard_normal((s, r_s)))[0]
    u_t = np.linalg.qr(rng.standard_normal((t, r_t)))[0]
    kernel = np.einsum("hwab,sa,tb->hwst", core, u_s, u_t)
    return kernel + noise * rng.standard_normal(kernel.shape)


@pytest.mark.parametrize(
    "energy, expected", [(13 / 14, 2), (9 / 14, 1), (0.5, 1), (0.65, 2), (0.92, 2), (13 / 14 + 1e-9, 3), (1.0, 3)]
)
def test_energy_rank_is_exact_on_a_diagonal_spectrum(energy, expected):
    assert energy_rank(np.array([3.0, 2.0, 1.0]), energy) == expected


def test_energy_rank_ignores_the_order_of_the_spectrum():
    assert energy_rank(np.array([1.0, 3.0, 2.0]), 13 / 14) == 2


def test_energy_one_gives_the_full_numeric_rank(rng):
    matrix = _low_rank(rng, (30, 20), 7, 0.0)
    s = np.linalg.svd(matrix, compute_uv=False)
    assert energy_rank(s, 1.0) == np.linalg.matrix_rank(matrix) == 7
    assert energy_rank(np.linalg.svd(rng.standard_normal((12, 9)), compute_uv=False), 1.0) == 9


@pytest.mark.parametrize("energy", [0.0, -0.1, 1.01, float("nan"), "high", None])
def test_invalid_energy_raises_a_clear_error(energy):
    with pytest.raises(LRFError, match="0 < energy <= 1"):
        energy_rank(np.array([3.0, 2.0, 1.0]), energy)


def test_energy_rank_rejects_a_bad_spectrum_and_clamps_zero_to_one():
    with pytest.raises(LRFError, match="non-negative"):
        energy_rank(np.array([1.0, -1.0]), 0.9)
    assert energy_rank(np.zeros(4), 0.9) == 1


def test_energy_ranks_for_reads_the_documented_spectra(rng):
    kernel = _planted_tucker2(rng, 3, 3, 16, 24, 3, 5, 0.0)
    assert energy_ranks_for(kernel, "tucker2", 1.0) == (3, 5)
    # a rank-2 W matrix (T, kh·kw·S)
    w = _low_rank(rng, (24, 3 * 3 * 16), 2, 0.0)
    conv = w.reshape(24, 3, 3, 16).transpose(1, 2, 3, 0)
    assert energy_ranks_for(conv, "svd", 1.0) == (2,)
    # spatial: rank 4 in the (kh·S) × (kw·T) reshaping
    reshaped = _low_rank(rng, (3 * 16, 3 * 24), 4, 0.0)
    spatial = reshaped.reshape(3, 16, 3, 24).transpose(0, 2, 1, 3)
    assert energy_ranks_for(spatial, "spatial", 1.0) == (4,)
    assert energy_ranks_for(_low_rank(rng, (40, 30), 6, 0.0), "svd", 1.0) == (6,)
    assert energy_ranks_for(_low_rank(rng, (40, 30), 6, 0.0), "svd", 0.5)[0] < 6


def test_energy_ranks_for_unknown_method_lists_supported_ids(rng):
    with pytest.raises(UnknownMethodError, match="Supported: svd, tucker2, spatial"):
        energy_ranks_for(rng.standard_normal((3, 3, 4, 5)), "cp", 0.9)
    with pytest.raises(UnknownMethodError, match="Supported: svd"):
        energy_ranks_for(rng.standard_normal((6, 5)), "tucker2", 0.9)


@pytest.mark.parametrize("shape", [(60, 40), (40, 60)])
def test_vbmf_recovers_a_planted_rank(rng, shape):
    assert vbmf_rank(_low_rank(rng, shape, 5, 0.01)) == 5


def test_vbmf_with_known_noise_variance(rng):
    matrix = _low_rank(rng, (60, 40), 8, 0.1)
    assert vbmf_rank(matrix, sigma2=0.01) == 8
    with pytest.raises(LRFError, match="sigma2"):
        vbmf_rank(matrix, sigma2=0.0)


def test_vbmf_on_pure_noise_is_clamped_to_one(rng):
    assert vbmf_rank(rng.standard_normal((60, 40))) == 1
    assert vbmf_rank(np.zeros((10, 8))) == 1


def test_vbmf_ranks_tucker2_recovers_planted_ranks(rng):
    kernel = _planted_tucker2(rng, 3, 3, 32, 48, 4, 6, 0.01)
    assert vbmf_ranks_tucker2(kernel) == (4, 6)
    with pytest.raises(LRFError, match=r"\(kh, kw, S, T\)"):
        vbmf_ranks_tucker2(rng.standard_normal((5, 6)))
