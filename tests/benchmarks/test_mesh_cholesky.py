"""The nested-dissection multifrontal Cholesky against dense and SciPy sparse solves."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from benchmarks.mesh_cholesky import MeshCholesky
from facehd.errors import DegenerateInputError
from facehd.mesh import height_field_mesh


def _block_system(
    n_side: int, seed: int, block: int = 4
) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
    """A random SPD matrix with dense ``block`` x ``block`` blocks on a grid mesh's vertex graph
    (stiffness on the edges plus a random SPD block per vertex), as the non-rigid ICP builds."""
    rng = np.random.default_rng(seed)
    xs = np.linspace(-1.0, 1.0, n_side)
    mesh = height_field_mesh(0.2 * np.sin(3 * xs)[None, :] * np.cos(2 * xs)[:, None], xs, xs)
    n = mesh.n_vertices
    e = np.concatenate([mesh.faces[:, [0, 1]], mesh.faces[:, [0, 2]], mesh.faces[:, [1, 2]]])
    e = np.unique(np.sort(e, axis=1), axis=0)
    inc = sp.csr_matrix(
        (
            np.r_[np.ones(len(e)), -np.ones(len(e))],
            (np.r_[np.arange(len(e)), np.arange(len(e))], np.r_[e[:, 0], e[:, 1]]),
        ),
        shape=(len(e), n),
    )
    lap = (inc.T @ inc).tocsr()
    g = sp.diags(rng.uniform(0.5, 2.0, block))
    blocks = rng.normal(size=(n, block, block))
    blocks = blocks @ blocks.transpose(0, 2, 1) * rng.uniform(0.01, 1.0, (n, 1, 1))
    h = 30.0 * sp.kron(lap, g) + sp.block_diag(list(blocks))
    h = sp.csr_matrix(h)
    h.sort_indices()
    return mesh.vertices, h, rng.normal(size=(block * n, 3))


@pytest.mark.parametrize("leaf_size", [1, 7, 24, 10_000])
def test_solve_equals_a_dense_solve(leaf_size: int) -> None:
    pos, h, rhs = _block_system(14, seed=leaf_size)
    chol = MeshCholesky(pos, h.indptr, h.indices, 4, leaf_size=leaf_size)
    chol.factorise(h.data)
    dense = np.linalg.solve(h.toarray(), rhs)
    np.testing.assert_allclose(chol.solve(rhs), dense, rtol=0, atol=1e-10 * np.abs(dense).max())
    np.testing.assert_allclose(
        chol.solve(rhs[:, 0]), dense[:, 0], rtol=0, atol=1e-10 * np.abs(dense).max()
    )


def test_refactorising_new_values_equals_a_sparse_lu_solve() -> None:
    pos, h, rhs = _block_system(40, seed=3)
    chol = MeshCholesky(pos, h.indptr, h.indices, 4)
    assert chol.n_fronts > 20  # a real dissection tree
    chol.factorise(h.data)
    h2 = h.copy()
    h2.data = h.data * np.random.default_rng(4).uniform(0.5, 1.5, h.nnz)
    h2 = (h2 + h2.T) * 0.5 + sp.eye(h.shape[0]) * 1e3  # same pattern, new values, still SPD
    h2 = sp.csr_matrix(h2)
    h2.sort_indices()
    assert np.array_equal(h2.indices, h.indices) and np.array_equal(h2.indptr, h.indptr)
    fused = chol.factorise(h2.data, rhs)
    ref = spla.splu(h2.tocsc()).solve(rhs)
    got = chol.solve(rhs)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10 * np.abs(ref).max())
    np.testing.assert_allclose(fused, got, rtol=0, atol=1e-13 * np.abs(ref).max())
    assert np.linalg.norm(h2 @ got - rhs) <= 1e-12 * np.linalg.norm(rhs)


def test_indefinite_matrix_and_bad_input_raise() -> None:
    pos, h, rhs = _block_system(8, seed=1)
    chol = MeshCholesky(pos, h.indptr, h.indices, 4)
    with pytest.raises(RuntimeError):
        chol.solve(rhs)
    with pytest.raises(DegenerateInputError):
        chol.factorise(-h.data)
    with pytest.raises(ValueError):
        chol.factorise(h.data[:-1])
    with pytest.raises(ValueError):
        MeshCholesky(pos[:-1], h.indptr, h.indices, 4)
