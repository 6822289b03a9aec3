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


@pytest.mark.parametrize("leaf_size", [0, 1, 7, 24, 10_000])  # 0 is taken as 1
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
    with pytest.raises(RuntimeError, match="factorise first"):
        chol.solve(rhs)
    chol.factorise(h.data)
    with pytest.raises(DegenerateInputError, match="not positive definite"):
        chol.factorise(-h.data)
    with pytest.raises(RuntimeError, match="factorise first"):  # no half-made factor is used
        chol.solve(rhs)
    assert not chol.factorised
    with pytest.raises(ValueError, match=r"expected \(\d+,\) values"):
        chol.factorise(h.data[:-1])
    with pytest.raises(ValueError, match=r"expected \(256,\) or \(256, c\) values"):
        chol.factorise(h.data, rhs[:, :, None])
    with pytest.raises(ValueError, match=r"expected \(n, 3\) positions, got \(64, 2\)"):
        MeshCholesky(pos[:, :2], h.indptr, h.indices, 4)
    with pytest.raises(ValueError, match="a pattern of 252 columns needs 253 indptr entries"):
        MeshCholesky(pos[:-1], h.indptr, h.indices, 4)
    coo = h.tocoo()
    off = (coo.row // 4 != 0) | (coo.col // 4 != 0)  # node 0 loses its diagonal block
    hole = sp.csc_matrix((coo.data[off], (coo.row[off], coo.col[off])), shape=h.shape)
    with pytest.raises(DegenerateInputError, match="every node needs its diagonal block"):
        MeshCholesky(pos, hole.indptr, hole.indices, 4)


def _csr(n: int, edges: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    e = np.array(edges + [(i, i) for i in range(n)])
    g = sp.csr_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    g = (g + g.T).tocsr()
    g.sort_indices()
    return g.indptr.astype(np.int64), g.indices.astype(np.int64)


def test_the_separator_is_the_smaller_touching_side() -> None:
    """Ten nodes on a line, cut at the median into 0-4 and 5-9; node 9 is also joined to 0-4,
    so the lower side touches with five nodes, the upper with two (5 and 9): those separate."""
    pos = np.stack([np.arange(10.0), np.zeros(10), np.zeros(10)], 1)
    edges = [(i, i + 1) for i in range(9)] + [(9, i) for i in range(5)]
    own, children = MeshCholesky._dissect(pos, _csr(10, edges), 4)
    assert sorted(own[-1].tolist()) == [5, 9]
    below = [
        sorted(np.concatenate([own[c] for c in _subtree(children, k)]).tolist())
        for k in children[-1]
    ]
    assert sorted(below) == [[0, 1, 2, 3, 4], [6, 7, 8]]


def _subtree(children: list[list[int]], root: int) -> list[int]:
    out, stack = [], [root]
    while stack:
        t = stack.pop()
        out.append(t)
        stack.extend(children[t])
    return out


def test_small_fronts_merge_into_their_parents() -> None:
    """Fronts with fewer own nodes than merge_below join their parent, their own nodes first;
    a front of exactly merge_below stays."""
    own = [np.array([0, 1]), np.array([2, 3, 4]), np.array([5]), np.array([6, 7, 8, 9])]
    children = [[], [], [0, 1], [2]]  # 0, 1 under 2, under the root 3
    got_own, got_children = MeshCholesky._amalgamate(own, children, 3)
    # front 0 joins 2 (which then has three and stays); front 1 has three and stays
    assert [o.tolist() for o in got_own] == [[2, 3, 4], [0, 1, 5], [6, 7, 8, 9]]
    assert got_children == [[], [0], [1]]


def test_update_blocks_never_overlap_while_alive_and_sit_first_fit() -> None:
    """Every block is placed at the lowest offset free of the blocks alive then: earlier fronts
    whose parent is this front or a later one (a brute-force search over candidate offsets)."""
    rng = np.random.default_rng(5)
    for _ in range(30):
        n = int(rng.integers(2, 25))
        parent = [int(rng.integers(f + 1, n)) for f in range(n - 1)] + [-1]
        children = [[c for c in range(n) if parent[c] == f] for f in range(n)]
        sizes = rng.integers(0, 5, n) ** 2
        off = MeshCholesky._place_updates(sizes, children)
        for f in range(n):
            live = [(off[g], off[g] + sizes[g]) for g in range(f) if parent[g] >= f and sizes[g]]
            fits = [
                at
                for at in sorted({0, *(hi for _, hi in live)})
                if all(at + sizes[f] <= lo or at >= hi for lo, hi in live)
            ]
            assert off[f] == (fits[0] if sizes[f] else off[f]), (f, parent, sizes.tolist())
