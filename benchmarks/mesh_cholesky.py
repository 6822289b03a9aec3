"""Sparse Cholesky for SPD systems on a mesh's vertex graph with dense per-vertex blocks.

The REALY non-rigid ICP solves ``H X = B`` with ``H`` of size ``4n x 4n``: a 4 x 4 block for
every vertex pair joined by an edge (and every vertex). Its pattern is fixed for a region while
its values change from one iteration to the next, so the analysis is done once:

- ordering: geometric nested dissection of the vertex graph, all parts of a level at once. A
  vertex set is cut at the median of its principal axis; the vertices of the smaller side that
  touch the other side form the separator, eliminated after both halves. Sets of at most
  ``leaf_size`` vertices are leaves; a separator of fewer than ``merge_below`` vertices is merged
  into its parent's.
- fronts: one dense frontal matrix per node of the dissection tree, holding its own vertices'
  rows and columns and those of the later vertices they couple to (its boundary), with the
  blocks ``F11`` (own x own), ``F21`` (boundary x own) and ``F22`` (boundary x boundary) at fixed
  places in two buffers reused by every factorisation.

Factorisation (multifrontal): for each front, children first, assemble ``H``'s entries owned by
the front's vertices and add the children's update matrices, then in place with LAPACK/BLAS:
``F11 = L11 L11^T`` (potrf), ``L21 = F21 L11^{-T}`` (trsm), and the update
``F22 = -L21 L21^T + (children's parts)`` (syrk) passed to the parent. Only lower triangles are
kept valid. The arithmetic is dense BLAS-3; Python walks the tree (several hundred fronts for a
14k-vertex region).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.linalg import blas, lapack

from facehd.errors import DegenerateInputError
from facehd.threads import one_blas_thread

__all__ = ["MeshCholesky"]


class MeshCholesky:
    """Cholesky factorisations of SPD matrices sharing one block sparsity pattern.

    Parameters
    ----------
    positions : (n, 3) float, one point per graph node (drives the dissection).
    indptr, indices : the CSC (or CSR: the pattern is symmetric) pattern of the ``bn x bn``
        matrices, with dof ``b i + k`` the ``k``-th of node ``i``; nodes ``i`` and ``j`` are
        adjacent when any entry couples their dofs.
    block : dofs per node ``b``.
    leaf_size : largest vertex set factorised as one leaf front.
    merge_below : a front with fewer own vertices is merged into its parent (fewer, larger
        fronts: less Python work for a little more arithmetic).
    """

    def __init__(
        self,
        positions: np.ndarray,
        indptr: np.ndarray,
        indices: np.ndarray,
        block: int,
        *,
        leaf_size: int = 24,
        merge_below: int = 8,
    ) -> None:
        pos = np.asarray(positions, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 3:
            raise ValueError(f"MeshCholesky: expected (n, 3) positions, got {pos.shape}")
        n = len(pos)
        b = int(block)
        indptr = np.asarray(indptr, dtype=np.int64)
        indices = np.asarray(indices, dtype=np.int64)
        if len(indptr) != b * n + 1:
            raise ValueError(
                f"MeshCholesky: a pattern of {b * n} columns needs {b * n + 1} indptr entries, "
                f"got {len(indptr)}"
            )
        self.n, self.block = n, b
        self.nnz = len(indices)
        cols = np.repeat(np.arange(b * n), np.diff(indptr))
        rows = indices
        graph = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.int8), (rows // b, cols // b)), shape=(n, n)
        )
        graph.sum_duplicates()
        if not np.array_equal(graph.diagonal() != 0, np.ones(n, dtype=bool)):
            raise DegenerateInputError("MeshCholesky: every node needs its diagonal block")
        adj = (graph.indptr.astype(np.int64), graph.indices.astype(np.int64))

        # nested dissection tree, in postorder (children before their parent)
        own, children = self._dissect(pos, adj, max(int(leaf_size), 1))
        own, children = self._amalgamate(own, children, int(merge_below))
        n_fronts = len(own)
        order = np.concatenate(own)
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        starts = np.concatenate([[0], np.cumsum([len(o) for o in own])])
        k_of = b * np.diff(starts)

        # boundaries: the later nodes a front's nodes or its children's boundaries couple to
        boundary: list[np.ndarray] = []
        for f, nodes in enumerate(own):
            cand = [_neighbours(adj, nodes)[1]] + [boundary[c] for c in children[f]]
            nb = np.unique(np.concatenate(cand))
            nb = nb[rank[nb] >= starts[f + 1]]
            boundary.append(nb[np.argsort(rank[nb])])
        r_of = np.array([b * len(nb) for nb in boundary], dtype=np.int64)

        # each stored entry belongs to the front of its earlier-eliminated node
        front_of = np.repeat(np.arange(n_fronts), np.diff(starts))[rank]
        owner = np.where(rank[rows // b] <= rank[cols // b], rows // b, cols // b)
        fr = front_of[owner]
        sort = np.argsort(fr, kind="stable")
        split = np.searchsorted(fr[sort], np.arange(n_fronts + 1))
        local = np.full(n, -1, dtype=np.int64)

        def front_local(f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
            """Entries of front ``f``: (data index, local row, local column) and, per child,
            the local dofs of its boundary."""
            front = np.concatenate([own[f], boundary[f]])
            local[front] = np.arange(len(front))
            sel = sort[split[f] : split[f + 1]]
            lr = local[rows[sel] // b] * b + rows[sel] % b
            lc = local[cols[sel] // b] * b + cols[sel] % b
            rel = [local[boundary[c]] for c in children[f]]
            local[front] = -1
            return sel, lr, lc, rel

        # storage: own block L11 and boundary block L21 of every front in one buffer (kept for
        # the solves); update blocks in a second buffer, placed first-fit among the live ones
        l_off = np.concatenate([[0], np.cumsum(k_of * k_of + r_of * k_of)])
        u_off = self._place_updates(r_of * r_of, children)
        self._fronts: list[_Front] = []
        for f in range(n_fronts):
            sel, lr, lc, rel = front_local(f)
            k, r = int(k_of[f]), int(r_of[f])
            # entries of the F11 and F21 blocks (F12 is F21's transpose, F22 gets none: its
            # entries belong to later fronts), column-major
            keep = lc < k
            lr, lc = lr[keep], lc[keep]
            kids = [
                (c, self._block_pairs(rc, b, k // b))
                for c, rc in zip(children[f], rel, strict=True)
            ]
            self._fronts.append(
                _Front(
                    f,
                    k,
                    r,
                    (int(starts[f]) * b, int(starts[f + 1]) * b),
                    self._dofs(rank[boundary[f]], b),
                    (int(l_off[f]), int(u_off[f])),
                    sel[keep],
                    np.where(lr < k, lc * k + lr, k * k + lc * r + (lr - k)),
                    kids,
                )
            )
        self._l_size = int(l_off[-1])
        self._u_size = int(max((u_off + r_of * r_of).max(), 1))
        self._views: list[tuple[np.ndarray, ...]] | None = None
        self.perm = self._dofs(order, b)
        """(bn,) dofs in elimination order."""
        self.n_fronts = n_fronts
        self.sizes = np.stack([k_of, r_of], axis=1)
        """(fronts, 2) own and boundary dofs of each front."""
        self._factored = False

    @staticmethod
    def _block_pairs(rel: np.ndarray, b: int, k_nodes: int) -> list[tuple]:
        """Extend-add of a child's update matrix into node positions ``rel`` (increasing) of
        its parent's front, whose first ``k_nodes`` nodes are its own.

        Returns ``(block, rows, columns, update rows, update columns)`` for the pairs of
        contiguous runs of ``rel`` on or below the diagonal; ``block`` 0, 1, 2 is the parent's
        F11, F21 or F22 and the slices are dofs local to it.
        """
        if len(rel) == 0:
            return []
        cut = np.flatnonzero((np.diff(rel) != 1) | (rel[1:] == k_nodes)) + 1
        lo = np.concatenate([[0], cut]).tolist()
        hi = np.concatenate([cut, [len(rel)]]).tolist()
        runs = []
        for start, a, e in zip(rel[lo].tolist(), lo, hi, strict=True):
            in_own = start < k_nodes
            at = start if in_own else start - k_nodes
            runs.append((in_own, slice(b * at, b * (at + e - a)), slice(b * a, b * e)))
        pairs = []
        for i, (own_i, dst_i, src_i) in enumerate(runs):
            for own_j, dst_j, src_j in runs[: i + 1]:
                block = 0 if own_i else (1 if own_j else 2)
                pairs.append((block, dst_i, dst_j, src_i, src_j))
        return pairs

    @staticmethod
    def _place_updates(sizes: np.ndarray, children: list[list[int]]) -> np.ndarray:
        """Offsets of the update blocks in one buffer, first fit among the blocks still alive
        (a front's update lives from its factorisation to its parent's)."""
        live: list[tuple[int, int, int]] = []  # (offset, end, front), sorted by offset
        off = np.zeros(len(sizes), dtype=np.int64)
        for f, size in enumerate(sizes.tolist()):
            at = 0
            for lo, hi, _ in live:
                if lo - at >= size:
                    break
                at = max(at, hi)
            off[f] = at
            dead = set(children[f])
            live = [blk for blk in live if blk[2] not in dead]
            if size:
                live.append((at, at + size, f))
                live.sort()
        return off

    @staticmethod
    def _dofs(nodes: np.ndarray, b: int) -> np.ndarray:
        return (np.asarray(nodes, dtype=np.int64)[:, None] * b + np.arange(b)).ravel()

    @staticmethod
    def _dissect(
        pos: np.ndarray, adj: tuple[np.ndarray, np.ndarray], leaf: int
    ) -> tuple[list[np.ndarray], list[list[int]]]:
        """Nested dissection tree of the graph ``adj`` (CSR ``(indptr, indices)``) in postorder:
        ``(own nodes, children)`` per tree node, children before parents, the root last.

        All parts of one level are cut together: each at the median of its projection on its
        principal axis; the nodes of the side with fewer of them that touch the other side are
        the part's separator (a tree node whose children are what remains of the two sides).
        """
        n = len(pos)
        indptr, indices = adj
        src = np.repeat(np.arange(n), np.diff(indptr))
        own: list[np.ndarray] = []
        children: list[list[int]] = []
        nodes = np.arange(n)  # the nodes still in parts, and their parts
        part = np.zeros(n, dtype=np.int64)
        parent = [-1]  # tree node each part hangs from
        where = np.full(n, -1, dtype=np.int64)  # part of each node still in one, else -1
        while len(nodes):
            n_parts = len(parent)
            size = np.bincount(part, minlength=n_parts)
            order = np.argsort(part, kind="stable")
            groups = np.split(nodes[order], np.cumsum(size)[:-1])
            cut = size > leaf
            # principal axis of each part
            w = np.maximum(size, 1)[:, None]
            centre = np.stack([np.bincount(part, pos[nodes, d], n_parts) for d in range(3)], 1) / w
            q = pos[nodes] - centre[part]
            cov = np.empty((n_parts, 3, 3))
            for i in range(3):
                for j in range(i, 3):
                    cov[:, i, j] = cov[:, j, i] = np.bincount(part, q[:, i] * q[:, j], n_parts)
            axis = np.linalg.eigh(cov)[1][:, :, -1]
            proj = np.einsum("ij,ij->i", q, axis[part])
            # the upper half of each part along its axis
            sorted_ = np.lexsort((proj, part))
            start = np.concatenate([[0], np.cumsum(size)[:-1]])
            rank_in = np.empty(len(nodes), dtype=np.int64)
            rank_in[sorted_] = np.arange(len(nodes)) - start[part[sorted_]]
            side = rank_in >= size[part] // 2
            # nodes touching the other side of their part
            where[nodes] = part
            node_side = np.zeros(n, dtype=bool)
            node_side[nodes] = side
            e_src, e_dst = src, indices
            same = (where[e_src] >= 0) & (where[e_src] == where[e_dst])
            cross = same & (node_side[e_src] != node_side[e_dst])
            touching = np.zeros(n, dtype=bool)
            touching[e_src[cross]] = True
            touch = touching[nodes]
            count_hi = np.bincount(part, touch & side, n_parts)
            count_lo = np.bincount(part, touch & ~side, n_parts)
            sep_side = count_hi < count_lo  # separator on the upper side when it is smaller
            in_sep = touch & (side == sep_side[part]) & cut[part]
            where[nodes] = -1
            # tree nodes: leaves and separators; what remains of each side is a part of the next
            # level (lower side first)
            next_part = np.full((n_parts, 2), -1, dtype=np.int64)
            new_parent: list[int] = []
            sep_groups = np.split(
                nodes[order][in_sep[order]],
                np.cumsum(np.bincount(part[in_sep], minlength=n_parts))[:-1],
            )
            keep = ~in_sep & cut[part]
            for p in range(n_parts):
                t = len(own)
                if parent[p] >= 0:
                    children[parent[p]].append(t)
                children.append([])
                if not cut[p]:
                    own.append(groups[p])
                    continue
                own.append(sep_groups[p])
                for s_ in (0, 1):
                    next_part[p, s_] = len(new_parent)
                    new_parent.append(t)
            nxt = next_part[part[keep], side[keep].astype(np.int64)]
            used = np.bincount(nxt, minlength=len(new_parent)) > 0
            renumber = np.cumsum(used) - 1
            nodes, part = nodes[keep], renumber[nxt]
            parent = [q_ for q_, u in zip(new_parent, used, strict=True) if u]
        return _postorder(own, children, 0)

    def _plan(self) -> list[tuple]:
        """Per front, views into two buffers made once: its (F11, F21) segment, the column-major
        F11, F21 and F22 blocks, and the extend-add pairs as (parent block slice, child update
        slice) views, those into F11 or F21 and those into F22."""
        if self._views is None:
            self._lbuf = np.zeros(self._l_size)
            self._ubuf = np.zeros(self._u_size)
            blocks = []
            for fr in self._fronts:
                k, r = fr.k, fr.r
                lo, uo = fr.offsets
                seg = self._lbuf[lo : lo + k * k + r * k]
                f11 = seg[: k * k].reshape((k, k), order="F")
                f21 = seg[k * k :].reshape((r, k), order="F")
                f22 = self._ubuf[uo : uo + r * r].reshape((r, r), order="F")
                blocks.append((seg, f11, f21, f22))
            views = []
            for fr, (seg, f11, f21, f22) in zip(self._fronts, blocks, strict=True):
                adds = [
                    (block, (f11, f21, f22)[block][dst_i, dst_j], blocks[c][3][src_i, src_j])
                    for c, pairs in fr.children
                    for block, dst_i, dst_j, src_i, src_j in pairs
                ]
                adds_l = [(to, upd) for block, to, upd in adds if block < 2]
                adds_u = [(to, upd) for block, to, upd in adds if block == 2]
                views.append((fr, seg, f11, f21, f22, adds_l, adds_u))
            self._views = views
        return self._views

    @staticmethod
    def _amalgamate(
        own: list[np.ndarray], children: list[list[int]], merge_below: int
    ) -> tuple[list[np.ndarray], list[list[int]]]:
        """Merge each front (but the root) with fewer than ``merge_below`` own nodes into its
        parent, bottom up; the merged front's own nodes are the child's then the parent's.

        Returns the new tree in postorder.
        """
        n_fronts = len(own)
        parent = np.full(n_fronts, -1, dtype=np.int64)
        for f, kids in enumerate(children):
            parent[kids] = f
        own = list(own)
        children = [list(c) for c in children]
        alive = np.ones(n_fronts, dtype=bool)
        for f in range(n_fronts - 1):  # postorder: children first, the root last
            p = int(parent[f])
            if p < 0 or len(own[f]) >= merge_below:
                continue
            own[p] = np.concatenate([own[f], own[p]])
            children[p] = [c for c in children[p] if c != f] + children[f]
            parent[children[f]] = p
            alive[f] = False
        new_own, new_children = _postorder(own, children, n_fronts - 1)
        assert len(new_own) == int(alive.sum())
        return new_own, new_children

    def factorise(self, data: np.ndarray, rhs: np.ndarray | None = None) -> np.ndarray | None:
        """Factorise the matrix with this pattern and values ``data`` (aligned with ``indices``).

        With ``rhs`` ((bn,) or (bn, c)), also return ``H^{-1} rhs``: the forward substitution
        then runs front by front while each front's factor is fresh in cache.
        Raises :class:`DegenerateInputError` when the matrix is not positive definite.
        """
        data = np.asarray(data, dtype=np.float64)
        if data.shape != (self.nnz,):
            raise ValueError(f"factorise: expected ({self.nnz},) values, got {data.shape}")
        y = None if rhs is None else self._permuted(rhs)
        self._factored = False
        with one_blas_thread():
            self._factorise(data, y)
        self._factored = True
        if y is None:
            return None
        with one_blas_thread():
            return self._backward(y, rhs)

    def _factorise(self, data: np.ndarray, y: np.ndarray | None) -> None:
        # only lower triangles are read and kept valid; LAPACK works in place on the views
        for fr, seg, f11, f21, f22, adds_l, adds_u in self._plan():
            seg.fill(0.0)
            seg[fr.dst] = data[fr.src]
            for to, upd in adds_l:
                to += upd
            out, info = lapack.dpotrf(f11, lower=1, clean=0, overwrite_a=1)
            if info != 0:
                raise DegenerateInputError(
                    f"MeshCholesky: the matrix is not positive definite (front {fr.index})"
                )
            _same(out, f11)
            if fr.r:
                _same(blas.dtrsm(1.0, f11, f21, side=1, lower=1, trans_a=1, overwrite_b=1), f21)
                # F22 = -L21 L21^T (overwriting it) + the children's parts of it
                _same(blas.dsyrk(-1.0, f21, c=f22, lower=1, overwrite_c=1), f22)
                for to, upd in adds_u:
                    to += upd
            if y is not None:
                self._forward(fr, y, f11, f21)

    @property
    def factorised(self) -> bool:
        """Whether :meth:`factorise` has run."""
        return self._factored

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """``H^{-1} rhs`` for (bn,) or (bn, c) ``rhs``."""
        if not self._factored:
            raise RuntimeError("MeshCholesky.solve: factorise first")
        y = self._permuted(rhs)
        with one_blas_thread():
            for fr, _, f11, f21, *_ in self._plan():
                self._forward(fr, y, f11, f21)
            return self._backward(y, rhs)

    def _permuted(self, rhs: np.ndarray) -> np.ndarray:
        """(bn, c) copy of ``rhs`` in elimination order."""
        b = np.asarray(rhs, dtype=np.float64)
        nd = self.block * self.n
        if b.shape[0] != nd or b.ndim not in (1, 2):
            raise ValueError(f"solve: expected ({nd},) or ({nd}, c) values, got {b.shape}")
        return b[self.perm].reshape(nd, -1)

    @staticmethod
    def _forward(fr: _Front, y: np.ndarray, l11: np.ndarray, l21: np.ndarray) -> None:
        """One front of ``y <- L^{-1} y``."""
        yk = y[fr.own[0] : fr.own[1]]
        ykt = yk.T  # x = L11^{-1} y_own as x^T L11^T = y_own^T, in place on this column-major view
        _same(blas.dtrsm(1.0, l11, ykt, side=1, lower=1, trans_a=1, overwrite_b=1), ykt)
        if fr.r:
            y[fr.bd] -= l21 @ yk

    def _backward(self, y: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        """``L^{-T} y`` in place, returned in the original dof order and shape of ``rhs``."""
        for fr, _, l11, l21, *_ in reversed(self._plan()):
            yk = y[fr.own[0] : fr.own[1]]
            if fr.r:
                yk -= l21.T @ y[fr.bd]
            ykt = yk.T
            _same(blas.dtrsm(1.0, l11, ykt, side=1, lower=1, overwrite_b=1), ykt)
        out = np.empty_like(y)
        out[self.perm] = y
        return out[:, 0] if np.ndim(rhs) == 1 else out


def _same(result: np.ndarray, target: np.ndarray) -> None:
    """Copy a LAPACK result into ``target`` unless it was computed there in place."""
    if result is not target:
        target[...] = result


def _neighbours(adj: tuple[np.ndarray, np.ndarray], nodes: np.ndarray) -> tuple[np.ndarray, ...]:
    """(position in ``nodes``, neighbour) pairs of a CSR adjacency ``(indptr, indices)``."""
    indptr, indices = adj
    lo = indptr[nodes]
    cnt = indptr[nodes + 1] - lo
    row = np.repeat(np.arange(len(nodes)), cnt)
    idx = np.arange(len(row)) + np.repeat(lo - (np.cumsum(cnt) - cnt), cnt)
    return row, indices[idx]


class _Front(NamedTuple):
    """One front factorised on its own (dense LAPACK on its frontal matrix)."""

    index: int
    """Front number (postorder)."""
    k: int
    """Own dofs."""
    r: int
    """Boundary dofs."""
    own: tuple[int, int]
    """Own dofs' range in elimination order."""
    bd: np.ndarray
    """(r,) boundary dofs in elimination order."""
    offsets: tuple[int, int]
    """Where its (F11, F21) and its F22 start in the two buffers."""
    src: np.ndarray
    """Stored entries it assembles (indices into the values)."""
    dst: np.ndarray
    """Their positions in its (F11, F21) segment (each block column-major)."""
    children: list
    """(child front, extend-add pairs) per child."""


def _postorder(
    own: list[np.ndarray], children: list[list[int]], root: int
) -> tuple[list[np.ndarray], list[list[int]]]:
    """The tree below ``root`` renumbered in postorder (children before their parent): each
    node's own vertices and its children's new numbers."""
    post_own: list[np.ndarray] = []
    post_children: list[list[int]] = []
    number: dict[int, int] = {}
    stack = [(root, False)]
    while stack:
        t, done = stack.pop()
        if done:
            number[t] = len(post_own)
            post_own.append(own[t])
            post_children.append([number[c] for c in children[t]])
            continue
        stack.append((t, True))
        stack.extend((c, False) for c in reversed(children[t]))
    return post_own, post_children
