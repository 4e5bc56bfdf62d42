"""Shared linear-algebra blocks: the Gram-eigenvector path must give what the SVD gives."""

from __future__ import annotations

import numpy as np
import pytest

from lrf_core.decompose.linalg import leading_left_vectors, truncated_svd


@pytest.mark.parametrize("shape, rank", [((16, 144), 5), ((16, 144), 16), ((40, 50), 7)])
def test_leading_left_vectors_match_the_truncated_svd(shape, rank):
    rng = np.random.default_rng(0)
    decay = np.geomspace(1.0, 1e-3, shape[0])  # distinct singular values: the vectors are unique up to sign
    matrix = (rng.standard_normal((shape[0], shape[0])) * decay) @ rng.standard_normal(shape)
    u = leading_left_vectors(matrix, rank)
    expected = truncated_svd(matrix, rank)[0]
    assert u.shape == (shape[0], rank)
    np.testing.assert_allclose(u.T @ u, np.eye(rank), atol=1e-10)
    np.testing.assert_allclose(u, expected, atol=1e-6)  # same vectors and the same sign rule


def test_leading_left_vectors_of_a_rank_deficient_wide_matrix_still_give_an_orthonormal_basis():
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((12, 3)) @ rng.standard_normal((3, 60))  # rank 3, 6 vectors asked
    u = leading_left_vectors(matrix, 6)
    np.testing.assert_allclose(u.T @ u, np.eye(6), atol=1e-10)
    leading = truncated_svd(matrix, 3)[0]
    np.testing.assert_allclose(np.abs(leading.T @ u[:, :3]), np.eye(3), atol=1e-8)  # the range comes first
