"""Triangle meshes: the :class:`Mesh` value, mesh input and output, vertex normals.

Reading takes OBJ (facehd's reader), PLY (trimesh's parser), STL (trimesh's; the corners each
triangle stores on its own are merged where they coincide), OFF/COFF (facehd's) and VRML 2.0
``IndexedFaceSet``
geometry (:mod:`facehd.vrml`); facehd then checks the data (finite vertices, triangles in range;
vertices with NaN or inf coordinates that no face uses keep their number, moved onto a used
vertex, with a warning)
and raises :class:`~facehd.errors.InputFileError` naming the file and the problem instead of
letting a library traceback escape. Writing is OBJ or PLY.

Vertex order is part of a mesh's meaning (it fixes correspondence with a morphable model), so
:func:`load_mesh` returns the file's vertices in the file's order, without merging or splitting
(except STL, which shares no vertices, and VRML files of several face sets, whose coincident
points are merged: :mod:`facehd.vrml`):

- a file with one UV per vertex (every face corner of a vertex has the same UV, as when every
  ``f`` entry pairs vertex ``i`` with ``vt`` ``i``, as facehd writes them) keeps its UVs as
  ``Mesh.uvs``, however its faces are grouped (``o``, ``g``, ``usemtl``);
- a file whose UVs have seams (a vertex used with different UVs in different faces) cannot hold
  per-vertex UVs without splitting vertices. By default its vertices are kept as they are and its
  UVs are dropped (``uvs=None``); ``load_mesh(path, split_seams=True)`` instead returns the
  split mesh: one vertex per distinct (position index, UV) pair that faces use, ordered by
  position index, so vertices on seams appear several times and the vertex count grows.
- OBJ: every ``v`` line is a vertex, in file order, and every ``f`` line a polygon (split into a
  fan of triangles), in file order, whatever the groups; negative (relative) indices count back
  from the latest ``v`` (``vt``) before the face line, as the format says. A vertex no face uses
  keeps its place; its UV is the ``vt`` of the same number where every face corner pairs
  ``v i`` with ``vt i`` (as facehd writes them), else ``(0, 0)``. Normals (``vn``) are not read
  (facehd computes its own), lines, points and free-form geometry are left out.
- PLY: UVs stored with the vertices (``s t``, ``u v``, ``texture_u texture_v``) are every
  vertex's own, also of vertices no face uses. Faces stored as triangle strips (``tristrips``)
  are not read (the file is refused, naming that).

Writing is facehd's own (simple, exact) OBJ/PLY writer, atomic: data go to a temporary file in the
same folder, which is then renamed over the destination, so a partial file never has the final name.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facehd.csvtext import atomic_write_bytes
from facehd.errors import InputFileError, InputFileWarning, is_broken_link, is_file_or_broken_link

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from facehd.transforms import Similarity

__all__ = [
    "Mesh",
    "MeshFileWarning",
    "MESH_SUFFIXES",
    "is_scan_file",
    "is_compressed_scan_file",
    "COMPRESSED_SUFFIXES",
    "OTHER_MESH_SUFFIXES",
    "is_other_mesh_file",
    "find_scan_files",
    "load_mesh",
    "load_textured_mesh",
    "save_mesh",
    "texture_path",
    "vertex_normals",
    "drop_stretched_faces",
    "face_normals",
    "height_field_mesh",
    "atomic_write_bytes",
    "connected_pieces",
    "consistent_winding",
    "main_parts",
    "open_edges",
    "drop_duplicate_faces",
    "weld_vertices",
]

log = logging.getLogger(__name__)

MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".wrl")
"""Mesh file formats :func:`load_mesh` reads (OBJ, PLY, STL, OFF, VRML 2.0)."""
_FORMATS = "expected " + ", ".join(MESH_SUFFIXES[:-1]) + " or " + MESH_SUFFIXES[-1]

# what a file name ends with, before its mesh suffix, when it is no scan: facehd's own outputs
# beside scans (true surfaces, fitted levels), and a data or mesh file with a suffix appended
# to put it aside (``scan.lm7.txt.off``, ``old.obj.off``)
_NOT_A_SCAN = re.compile(
    r"\.(gt_[A-Za-z0-9]+|m[012]|txt|npy|pp|csv|json|obj|ply|stl|off|wrl)$", re.I
)


def is_scan_file(path: Path) -> bool:
    """Whether ``path`` (an existing file's path) names a scan to read: a mesh suffix
    (:data:`MESH_SUFFIXES`), and not a facehd output beside scans (``<id>.gt_m1.ply``,
    ``<id>.m0.ply``) nor a file put aside by a suffix appended to its name."""
    suffix = path.suffix.lower()
    return suffix in MESH_SUFFIXES and not _NOT_A_SCAN.search(path.name[: -len(suffix)])


#: Suffixes of compressed files: a scan compressed (``head.obj.gz``) is not read, but listed so
#: that it fails naming the problem instead of being passed over.
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip", ".7z")


def is_compressed_scan_file(path: Path) -> bool:
    """Whether ``path`` names a scan file compressed (``head.obj.gz``, ``s.ply.zip``): a
    :data:`COMPRESSED_SUFFIXES` suffix after a name :func:`is_scan_file` accepts."""
    suffix = path.suffix.lower()
    return suffix in COMPRESSED_SUFFIXES and is_scan_file(path.with_name(path.name[: -len(suffix)]))


#: Suffixes of 3D formats facehd does not read: a scan in one (``head.glb``) is listed so that
#: it fails asking for a conversion instead of being passed over.
OTHER_MESH_SUFFIXES = (
    ".glb", ".gltf", ".fbx", ".dae", ".3ds", ".x3d", ".3mf", ".usd", ".usda", ".usdc", ".usdz",
    ".blend", ".ma", ".mb", ".3dm", ".ptx", ".e57",
)  # fmt: skip


def is_other_mesh_file(path: Path) -> bool:
    """Whether ``path`` names a 3D file in a format facehd does not read
    (:data:`OTHER_MESH_SUFFIXES`)."""
    return path.suffix.lower() in OTHER_MESH_SUFFIXES


def find_scan_files(root: str | Path) -> list[tuple[str, Path, bool]]:
    """``(scan id, path, shares its stem)`` of every scan under ``root``, sorted by id.

    Scans are the files :func:`is_scan_file` accepts, in any subfolder except build-priors'
    ``*.shards`` work folders, hidden files and folders (``.<name>``, macOS's ``._<name>``)
    left out. A scan's id is its path relative to ``root`` without the suffix,
    or with it when another scan in the same folder has the same stem (``head.obj`` and
    ``head.ply`` are ``head.obj`` and ``head.ply``; the third item is then True).

    Names that say a scan but hold none that can be read are listed too, so that reading them
    fails naming the problem (:func:`load_mesh`) where they would otherwise be passed over in
    silence: a link whose target does not exist (a dataset of links into a store that is not
    mounted), a compressed scan (:func:`is_compressed_scan_file`; its id is its path with
    both suffixes, ``head.obj.gz``, so that it never changes another scan's, and it is left out
    beside the file it decompresses to, ``head.obj``, which is read) and a scan in a 3D format
    facehd does not read (:func:`is_other_mesh_file`; its id is its path, ``head.glb``, and it
    is left out beside a scan of the same stem that is read, ``head.obj``: an export of it).

    Raises
    ------
    InputFileError
        ``root`` is not a folder or holds no scan.
    """
    from facehd.errors import InputFileError

    root = Path(root)
    if root.is_file():
        raise InputFileError(root, "is a file: give the folder of scans")
    if not root.is_dir():
        raise InputFileError(root, "scans folder does not exist")
    found = sorted(
        p
        for p in root.rglob("*")
        if (is_scan_file(p) or is_compressed_scan_file(p) or is_other_mesh_file(p))
        # a regular file, or a link to nothing (a folder named like a scan is searched)
        and is_file_or_broken_link(p)
        and not any(part.endswith(".shards") for part in p.relative_to(root).parent.parts)
        # hidden files and folders: macOS's ._<name> resource forks copied beside the scans
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not found:
        raise InputFileError(root, f"no scan found (files {', '.join(MESH_SUFFIXES)})")
    if all(is_other_mesh_file(p) for p in found):
        raise InputFileError(
            root,
            f"no scan found (files {', '.join(MESH_SUFFIXES)}); its "
            f"{', '.join(sorted({p.suffix.lower() for p in found}))} files are in a format facehd "
            "does not read: convert them to OBJ or PLY",
        )
    scans = [p for p in found if not is_compressed_scan_file(p) and not is_other_mesh_file(p)]
    readable = set(scans)
    read_stems = {p.with_suffix("") for p in scans}
    # named by their whole path; a compressed copy beside the scan it holds, or an export in
    # another format beside a scan that is read, is no scan of its own
    out = [
        (p.relative_to(root).as_posix(), p, False)
        for p in found
        if (is_compressed_scan_file(p) and p.with_suffix("") not in readable)
        or (is_other_mesh_file(p) and p.with_suffix("") not in read_stems)
    ]
    stems = [p.relative_to(root).with_suffix("").as_posix() for p in scans]
    counts = Counter(stems)
    for p, stem in zip(scans, stems, strict=True):
        clash = counts[stem] > 1
        out.append((p.relative_to(root).as_posix() if clash else stem, p, clash))
    return sorted(out, key=lambda item: item[0])


@dataclass(eq=False)
class Mesh:
    """A triangle mesh in millimetres.

    Treat a ``Mesh`` as immutable: the cached normals are computed once from the arrays present at
    first access. Use :meth:`copy` or :meth:`transformed` to make changed meshes.
    """

    vertices: np.ndarray
    """(V, 3) float64 vertex positions."""
    faces: np.ndarray
    """(F, 3) int64 vertex indices (0-based), counter-clockwise seen from outside."""
    uvs: np.ndarray | None = None
    """(V, 2) float64 per-vertex texture coordinates (u right, v up, in [0, 1]) or None."""
    colors: np.ndarray | None = None
    """(V, 3) float64 per-vertex RGB in [0, 1] or None."""

    def __post_init__(self) -> None:
        v = np.asarray(self.vertices, dtype=np.float64)
        f = np.asarray(self.faces)
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"Mesh.vertices: expected (V, 3), got shape {v.shape}")
        if f.size == 0:
            f = f.reshape(0, 3)
        if f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"Mesh.faces: expected (F, 3), got shape {f.shape}")
        if f.size and not np.issubdtype(f.dtype, np.integer):
            if not np.array_equal(f, np.round(f)):
                raise ValueError("Mesh.faces: expected integer vertex indices")
        f = f.astype(np.int64, copy=False)
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise ValueError(
                f"Mesh.faces: indices must lie in [0, {len(v) - 1}], got [{f.min()}, {f.max()}]"
            )
        self.vertices = v
        self.faces = f
        if self.uvs is not None:
            uv = np.asarray(self.uvs, dtype=np.float64)
            if uv.shape != (len(v), 2):
                raise ValueError(f"Mesh.uvs: expected ({len(v)}, 2), got shape {uv.shape}")
            self.uvs = uv
        if self.colors is not None:
            c = np.asarray(self.colors, dtype=np.float64)
            if c.shape != (len(v), 3):
                raise ValueError(f"Mesh.colors: expected ({len(v)}, 3), got shape {c.shape}")
            self.colors = c

    @property
    def n_vertices(self) -> int:
        """Number of vertices V."""
        return int(self.vertices.shape[0])

    @property
    def n_faces(self) -> int:
        """Number of faces F."""
        return int(self.faces.shape[0])

    @cached_property
    def face_normals(self) -> np.ndarray:
        """(F, 3) unit face normals (zero for zero-area faces)."""
        return face_normals(self.vertices, self.faces)

    @cached_property
    def vertex_normals(self) -> np.ndarray:
        """(V, 3) area-weighted unit vertex normals (zero for vertices in no face)."""
        return vertex_normals(self.vertices, self.faces)

    @cached_property
    def welded(self) -> np.ndarray:
        """(V,) int64: the vertices welded by position, each vertex's index among the mesh's
        distinct positions (in first-use order, :func:`merge_equal_rows`): vertices at the same
        position (a UV seam, a triangle soup) share one. The mesh checks that treat such
        vertices as one (:func:`connected_pieces`, :func:`drop_duplicate_faces`,
        :func:`consistent_winding`) share this one sort of the vertices."""
        weld = merge_equal_rows(self.vertices)[1]
        weld.setflags(write=False)  # shared by every check of this mesh
        return weld

    @cached_property
    def used_vertices(self) -> np.ndarray:
        """(V,) bool: the vertices some face uses (:func:`vertices_in_faces`). A vertex no face
        uses is no part of the surface."""
        used = vertices_in_faces(self.faces, self.n_vertices)
        used.setflags(write=False)
        return used

    @cached_property
    def face_areas(self) -> np.ndarray:
        """(F,) face areas (mm²)."""
        tri = self.vertices[self.faces]
        return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)

    def copy(self) -> Mesh:
        """A deep copy (arrays copied, caches dropped)."""
        return Mesh(
            self.vertices.copy(),
            self.faces.copy(),
            None if self.uvs is None else self.uvs.copy(),
            None if self.colors is None else self.colors.copy(),
        )

    def transformed(self, sim: Similarity) -> Mesh:
        """The mesh with ``sim`` applied to its vertices (faces, UVs and colours kept).

        When ``sim`` contains a reflection the winding of every face is reversed (columns 1 and 2
        swapped, face order unchanged) so normals keep pointing outwards.
        """
        faces = self.faces[:, [0, 2, 1]] if sim.is_reflection else self.faces.copy()
        return Mesh(
            sim.apply(self.vertices),
            faces,
            None if self.uvs is None else self.uvs.copy(),
            None if self.colors is None else self.colors.copy(),
        )

    def subset_vertices(self, keep: np.ndarray) -> tuple[Mesh, np.ndarray]:
        """Keep the vertices where ``keep`` is True and the faces whose 3 vertices are all kept.

        Parameters
        ----------
        keep : (V,) bool

        Returns
        -------
        (mesh, index) where ``index`` (V',) int64 gives each kept vertex's index in ``self``.
        """
        keep = np.asarray(keep)
        if keep.shape != (self.n_vertices,) or keep.dtype != bool:
            raise ValueError(f"subset_vertices: expected a ({self.n_vertices},) bool mask")
        index = np.flatnonzero(keep)
        remap = np.full(self.n_vertices, -1, dtype=np.int64)
        remap[index] = np.arange(len(index))
        face_ok = keep[self.faces].all(axis=1)
        mesh = Mesh(
            self.vertices[index],
            remap[self.faces[face_ok]],
            None if self.uvs is None else self.uvs[index],
            None if self.colors is None else self.colors[index],
        )
        return mesh, index


def vertices_in_faces(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """(n_vertices,) bool: True for each vertex index that appears in ``faces`` (any shape)."""
    used = np.zeros(n_vertices, dtype=bool)
    used[np.asarray(faces, dtype=np.int64).ravel()] = True
    return used


def connected_pieces(mesh: Mesh) -> tuple[int, np.ndarray]:
    """The mesh's connected pieces: ``(count, label)`` with ``label`` (F,) the piece of each face.

    Faces are connected through shared vertices, and vertices at the same position count as one,
    so a mesh split along its UV seams (:func:`load_mesh` ``split_seams``) or stored as a triangle
    soup (an STL) is not cut into pieces by it.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if mesh.n_faces == 0:
        return 0, np.zeros(0, dtype=np.int64)
    weld = mesh.welded
    f = weld[mesh.faces]
    n = int(weld.max()) + 1
    a = np.concatenate([f[:, 0], f[:, 1]])
    b = np.concatenate([f[:, 1], f[:, 2]])
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    count, label = connected_components(graph, directed=False)
    # number the pieces that hold faces 0..k-1 (unused vertices form pieces of their own)
    used, face_label = np.unique(label[f[:, 0]], return_inverse=True)
    return len(used), face_label.astype(np.int64)


STRETCH_FACTOR = 50.0
"""A triangle with an edge this many times the mesh's median edge length is stretched
(:func:`drop_stretched_faces`). The real head scan of the project's checks has triangles up to 18
times its median edge (at its cut edges); facehd-synth's scans up to 6."""


def drop_stretched_faces(mesh: Mesh, factor: float = STRETCH_FACTOR) -> tuple[Mesh, int]:
    """The mesh without its stretched triangles: ``(mesh, faces dropped)``.

    A triangle is stretched when one of its edges is more than ``factor`` times the median edge
    length of the mesh: a scanner's spike (one vertex thrown far off the surface, still joined to
    its neighbours) or a triangle bridging a depth jump. One such vertex sets the scan's size and
    framing as if the head were metres wide. Unit-free. The vertices stay (those only the
    dropped triangles used go unused); a mesh with none comes back as it is (the same object,
    0 dropped).
    """
    if mesh.n_faces == 0:
        return mesh, 0
    f = mesh.faces
    v = mesh.vertices
    edges = np.linalg.norm(v[f] - v[np.roll(f, -1, axis=1)], axis=2)  # (F, 3)
    median = float(np.median(edges))
    if not np.isfinite(median) or median <= 0.0:
        return mesh, 0
    keep = edges.max(axis=1) <= factor * median
    if keep.all():
        return mesh, 0
    return Mesh(v, f[keep], mesh.uvs, mesh.colors), int((~keep).sum())


def weld_vertices(mesh: Mesh) -> tuple[Mesh, int]:
    """The mesh with the vertices at one position merged into one: ``(mesh, vertices merged)``.

    A triangle soup (each face with corners of its own) or a file that lists vertices twice
    describes the same surface as the welded mesh, but counts its points more than once and
    gives them the normal of fewer faces. Each merged vertex keeps its first occurrence's UV and
    colour, and the vertices keep the order of their first occurrences; a mesh without such
    vertices comes back as it is (the same object, 0 merged).
    """
    weld = mesh.welded
    n = int(weld.max()) + 1 if len(weld) else 0
    if n == mesh.n_vertices:
        return mesh, 0
    keep = np.empty(n, dtype=np.int64)
    keep[weld[::-1]] = np.arange(len(weld) - 1, -1, -1)  # each position's first vertex
    out = Mesh(
        mesh.vertices[keep],
        weld[mesh.faces],
        None if mesh.uvs is None else mesh.uvs[keep],
        None if mesh.colors is None else mesh.colors[keep],
    )
    # its positions are distinct, in first-use order: the checks that weld it again
    # (drop_duplicate_faces, ...) need not sort its vertices once more
    welded = np.arange(n, dtype=np.int64)
    welded.setflags(write=False)
    out.__dict__["welded"] = welded
    return out, int(mesh.n_vertices - n)


def drop_duplicate_faces(mesh: Mesh) -> tuple[Mesh, int]:
    """The mesh without its repeated triangles: ``(mesh, faces dropped)``.

    A triangle is repeated when another one, earlier in the file, has the same three corners
    (vertices at the same position count as one), in either winding: a double-sided export
    stores each face twice, once each way, and their area-weighted vertex normals cancel to
    nothing. The first of each is kept; a mesh without repeats comes back as it is (the same
    object, 0 dropped).
    """
    if mesh.n_faces < 2:
        return mesh, 0
    weld = mesh.welded
    c = np.sort(weld[mesh.faces], axis=1).astype(np.int64)
    n = int(weld.max()) + 1
    if n < 1 << 21:  # one integer per triangle: a 1-D unique is several times faster
        _, first = np.unique((c[:, 0] << 42) | (c[:, 1] << 21) | c[:, 2], return_index=True)
        keep = np.sort(first)
    else:  # a lexicographic sort: 3-4 times faster than a unique over rows (6M triangles)
        keep, _ = merge_equal_rows(c)
    if len(keep) == mesh.n_faces:
        return mesh, 0
    return Mesh(mesh.vertices, mesh.faces[keep], mesh.uvs, mesh.colors), int(
        mesh.n_faces - len(keep)
    )


def open_edges(faces: np.ndarray) -> np.ndarray:
    """(F, 3) bool: edge ``k`` of each face (from corner ``k`` to corner ``k + 1 mod 3``) is used
    by no other face: the mesh's border, where it was cut or has a hole."""
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    edges = np.sort(np.stack([f, np.roll(f, -1, axis=1)], axis=2), axis=2)  # (F, 3, 2)
    key = edges[..., 0] * (int(f.max(initial=0)) + 1) + edges[..., 1]  # one integer per edge
    _, inverse, counts = np.unique(key.reshape(-1), return_inverse=True, return_counts=True)
    return (counts == 1)[inverse.reshape(-1)].reshape(f.shape)


def consistent_winding(mesh: Mesh) -> tuple[Mesh, int]:
    """The mesh with every face wound like its neighbours: ``(mesh, faces flipped)``.

    Two triangles sharing an edge agree when they run along it in opposite directions. Each
    connected surface (faces joined through edges that exactly two faces share; vertices at the
    same position count as one, so UV seams and triangle soups do not cut it) is made to agree
    throughout, keeping the winding of the larger part of its area (of its first face on a tie):
    a file wound consistently, inwards or outwards, comes back unchanged (the same object, 0
    flipped). A surface that cannot agree (a Moebius strip) is left as it is; so are degenerate
    triangles and triangles stored twice, which say nothing about their neighbours.

    Mixed windings come from scans stitched from several captures or hole-filled by tools that
    ignore orientation; their area-weighted vertex normals cancel out, and any shading or
    normal-based matching on them is noise.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nf = mesh.n_faces
    if nf < 2:
        return mesh, 0
    weld = mesh.welded
    f = weld[mesh.faces]
    a = f.reshape(-1)  # directed edge k of face i: f[i, k] -> f[i, (k + 1) % 3]
    b = f[:, [1, 2, 0]].reshape(-1)
    face = np.repeat(np.arange(nf), 3)
    key = np.minimum(a, b) * (int(weld.max()) + 1) + np.maximum(a, b)
    order = np.argsort(key)
    key, fwd, face = key[order], (a < b)[order], face[order]
    same = key[1:] == key[:-1]
    # runs of equal undirected edges; keep those of exactly two faces (manifold edges)
    start = np.flatnonzero(np.concatenate([[True], ~same]))
    length = np.diff(np.concatenate([start, [len(key)]]))
    pair = start[length == 2]
    f1, f2 = face[pair], face[pair + 1]
    # not a face with itself (a degenerate edge), nor two copies of one triangle (a face stored
    # twice meets its copy along the same edges in the same direction, and neither is wrong)
    srt = np.sort(f, axis=1)
    proper = (srt[:, 0] != srt[:, 1]) & (srt[:, 1] != srt[:, 2])
    ok = (f1 != f2) & proper[f1] & proper[f2] & np.any(srt[f1] != srt[f2], axis=1)
    f1, f2 = f1[ok], f2[ok]
    flip = (fwd[pair] == fwd[pair + 1])[ok]  # same direction: one of the two must turn
    if not flip.any():  # every surface agrees already
        return mesh, 0
    # the double cover: node i is face i as stored, node nf + i face i turned over
    rows = np.concatenate([f1, f1 + nf])
    cols = np.concatenate([np.where(flip, f2 + nf, f2), np.where(flip, f2, f2 + nf)])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(2 * nf, 2 * nf))
    _, cover = connected_components(graph, directed=False)
    _, surface = connected_components(
        coo_matrix((np.ones(len(f1), np.int8), (f1, f2)), shape=(nf, nf)), directed=False
    )
    as_stored = cover[:nf]
    # each surface's reference: the cover component of its first face as stored; faces in the
    # other component are wound against it (a surface that cannot agree has one component, with
    # every face both ways: none is against it)
    first = np.full(surface.max() + 1, nf, dtype=np.int64)
    np.minimum.at(first, surface, np.arange(nf))
    against = as_stored != as_stored[first[surface]]
    area = mesh.face_areas + 1e-30  # zero-area faces still count
    w_against = np.bincount(surface, weights=area * against, minlength=len(first))
    w_all = np.bincount(surface, weights=area, minlength=len(first))
    # turn the minority: the faces against the reference, or the reference's own faces
    minority_is_against = w_against <= 0.5 * w_all
    turn = np.where(minority_is_against[surface], against, ~against)
    n_turn = int(turn.sum())
    if n_turn == 0:
        return mesh, 0
    faces = mesh.faces.copy()
    faces[turn] = faces[turn][:, [0, 2, 1]]
    return Mesh(mesh.vertices, faces, mesh.uvs, mesh.colors), n_turn


def main_parts(mesh: Mesh, gap: float = 0.25, most: int = 4) -> list[np.ndarray]:
    """The mesh's candidate main parts, each an (F,) bool face mask, largest first.

    A main part is a connected piece (:func:`connected_pieces`) with every smaller piece whose
    bounding box lies within ``gap`` times the piece's largest bounding-box side of the piece's
    box: an ear or a patch of hair stored apart stays with the head; a speck a metre away does
    not, nor a scanner table larger than the head, however near. The candidates grow from the
    ``most`` largest pieces by area, in that order (a scan whose largest piece is not the head, a
    table under it, has the head next). Unit-free. One piece (or none): the whole mesh.
    """
    count, label = connected_pieces(mesh)
    if count <= 1:
        return [np.ones(mesh.n_faces, dtype=bool)]
    area = np.bincount(label, weights=mesh.face_areas, minlength=count)
    # each piece's bounding box over its vertices, grouped by piece (pieces meet at no vertex)
    piece = np.full(mesh.n_vertices, -1, dtype=np.int64)
    piece[mesh.faces.ravel()] = np.repeat(label, 3)
    used = np.flatnonzero(piece >= 0)
    used = used[np.argsort(piece[used], kind="stable")]
    starts = np.searchsorted(piece[used], np.arange(count))
    lo = np.minimum.reduceat(mesh.vertices[used], starts)
    hi = np.maximum.reduceat(mesh.vertices[used], starts)
    order = np.argsort(-area, kind="stable")
    out = []
    for seed in order[:most]:
        size = float((hi[seed] - lo[seed]).max())
        # per-axis gap between each piece's box and the seed's (0 where they overlap)
        apart = np.maximum(0.0, np.maximum(lo - hi[seed], lo[seed] - hi))
        near = (np.linalg.norm(apart, axis=1) <= gap * size) & (area <= area[seed])
        out.append(near[label])
    return out


# ------------------------------------------------------------------------------------------
# normals


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit face normals (numpy).

    Parameters
    ----------
    vertices : (V, 3) float
    faces : (F, 3) int

    Returns
    -------
    (F, 3) unit normals by the right-hand rule; zero rows for zero-area faces.
    """
    v, f = _check_vf(vertices, faces)
    tri = v[f]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)


#: How :func:`vertex_normals` weighs the normals of a vertex's faces.
NORMAL_WEIGHTINGS = ("area", "uniform")


def vertex_normals(vertices: Any, faces: Any, weighting: str = "area") -> Any:
    """Unit vertex normals, area-weighted by default.

    Each vertex gets the sum of the normals of its faces, normalised: scaled by their areas
    (``weighting="area"``), or each of unit length (``"uniform"``, as Deep3DFaceRecon and HRN
    sum the faces of the BFM's ``point_buf``).

    Parameters
    ----------
    vertices : (V, 3) numpy array, or a torch tensor (V, 3) / (B, V, 3) (differentiable).
    faces : (F, 3) int array or tensor.
    weighting : ``"area"`` or ``"uniform"`` (:data:`NORMAL_WEIGHTINGS`).

    Returns
    -------
    Same type and shape as ``vertices``. Numpy: vertices in no face (or whose faces have zero
    total area) get a zero normal. Torch: the norm is clamped at 1e-12 so gradients stay finite.
    """
    if weighting not in NORMAL_WEIGHTINGS:
        raise ValueError(f"vertex_normals: weighting must be area or uniform, got {weighting!r}")
    if _is_torch(vertices):
        import torch

        if vertices.shape[-1] != 3 or vertices.dim() not in (2, 3):
            raise ValueError(
                f"vertex_normals: expected (V, 3) or (B, V, 3), got {tuple(vertices.shape)}"
            )
        if isinstance(faces, np.ndarray) and not faces.flags.writeable:
            faces = faces.copy()  # a Mesh's read-only faces: torch warns on shared read-only data
        f = torch.as_tensor(faces, device=vertices.device).long()
        if f.dim() != 2 or f.shape[1] != 3:
            raise ValueError(f"vertex_normals: faces must be (F, 3), got {tuple(f.shape)}")
        batched = vertices.dim() == 3
        v = vertices if batched else vertices.unsqueeze(0)
        b, nv, _ = v.shape
        # flatten the batch so every gather/scatter is one dim-0 op (several times faster)
        offsets = (torch.arange(b, device=v.device) * nv)[:, None]
        flat = v.reshape(b * nv, 3)
        corners = [flat.index_select(0, (f[:, k][None] + offsets).reshape(-1)) for k in range(3)]
        fn = torch.linalg.cross(corners[1] - corners[0], corners[2] - corners[0], dim=-1)
        if weighting == "uniform":
            fn = fn / fn.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        vn = torch.zeros_like(flat)
        for k in range(3):
            vn = vn.index_add(0, (f[:, k][None] + offsets).reshape(-1), fn)
        vn = vn / vn.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        vn = vn.reshape(b, nv, 3)
        return vn if batched else vn[0]
    v, f = _check_vf(vertices, faces)
    tri = v[f]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    if weighting == "uniform":
        area = np.linalg.norm(fn, axis=1, keepdims=True)
        fn = np.divide(fn, area, out=np.zeros_like(fn), where=area > 0)
    vn = np.zeros_like(v)
    for k in range(3):
        _scatter_add(vn, f[:, k], fn)
    norm = np.linalg.norm(vn, axis=1, keepdims=True)
    return np.divide(vn, norm, out=np.zeros_like(vn), where=norm > 0)


def _scatter_add(out: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """``out[index] += values`` with repeated indices accumulated (faster than np.add.at)."""
    for c in range(out.shape[1]):
        out[:, c] += np.bincount(index, weights=values[:, c], minlength=out.shape[0])


def _check_vf(vertices: Any, faces: Any) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"expected vertices of shape (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"expected faces of shape (F, 3), got {f.shape}")
    f = f.astype(np.int64, copy=False)
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"face indices out of range [0, {len(v) - 1}]")
    return v, f


# ------------------------------------------------------------------------------------------
# procedural meshes


def height_field_mesh(heights: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> Mesh:
    """A regular grid mesh ``z = heights[i, j]`` at ``(xs[j], ys[i])``, with UVs.

    Parameters
    ----------
    heights : (H, W) float, H, W >= 2.
    xs : (W,) float, increasing.
    ys : (H,) float, increasing.

    Returns
    -------
    Mesh with V = H*W vertices (row-major: vertex ``i*W + j``), 2*(H-1)*(W-1) faces facing +z,
    and UVs ``u = j/(W-1)``, ``v = i/(H-1)``.
    """
    z = np.asarray(heights, dtype=np.float64)
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2 or z.shape[1] < 2:
        raise ValueError(f"height_field_mesh: heights must be (H, W) with H, W >= 2, got {z.shape}")
    h, w = z.shape
    if xs.shape != (w,) or ys.shape != (h,):
        raise ValueError(f"height_field_mesh: expected xs ({w},) and ys ({h},)")
    gx, gy = np.meshgrid(xs, ys)
    vertices = np.stack([gx, gy, z], axis=-1).reshape(-1, 3)
    idx = np.arange(h * w).reshape(h, w)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    gu, gv = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    uvs = np.stack([gu, gv], axis=-1).reshape(-1, 2)
    return Mesh(vertices, faces, uvs)


# ------------------------------------------------------------------------------------------
# reading

#: The byte order mark some editors put before UTF-8 text.
_UTF8_BOM = b"\xef\xbb\xbf"


def load_mesh(path: str | Path, *, split_seams: bool = False) -> Mesh:
    """Read a triangle mesh from an ``.obj``, ``.ply``, ``.stl``, ``.off`` or ``.wrl`` file.

    Vertex colours (OBJ ``v x y z r g b``, PLY ``red green blue``, OFF ``COFF``, VRML ``Color``)
    and per-vertex UVs are kept. Quads and polygons are split into triangles. See the module
    docstring for what happens with UV seams, and for STL's merged corners.

    Parameters
    ----------
    path : the file.
    split_seams : when the file's UVs have seams, return the mesh split along them (vertices
        duplicated, UVs kept) instead of the file's vertices without UVs.

    Returns
    -------
    Mesh

    Raises
    ------
    InputFileError
        The file is missing (or a link to nothing), unreadable, compressed, of another format,
        empty, has no faces, has NaN/inf vertices in faces, or face indices out of range.
    """
    path = Path(path)
    if not path.exists():
        if is_broken_link(path):
            raise InputFileError(path, f"a link to {path.readlink()}, which does not exist")
        raise InputFileError(path, "file does not exist")
    if not path.is_file():
        raise InputFileError(path, "not a regular file")
    suffix = path.suffix.lower()
    if is_compressed_scan_file(path):
        raise InputFileError(
            path,
            f"compressed ({suffix}): decompress it first (facehd reads "
            f"{path.with_suffix('').suffix} files, not compressed ones)",
        )
    if suffix not in MESH_SUFFIXES:
        convert = (
            ": convert it to OBJ or PLY (MeshLab, Blender)" if is_other_mesh_file(path) else ""
        )
        raise InputFileError(path, f"unsupported mesh format {suffix!r} ({_FORMATS}){convert}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(path, f"cannot read file: {exc.strerror or exc}") from exc
    if not data.strip():
        raise InputFileError(path, "file is empty")
    if suffix in (".obj", ".off", ".wrl") and data.startswith(_UTF8_BOM):
        # a text file saved by an editor that marks UTF-8 (Windows' Notepad): the mark is no
        # part of the first line, which would otherwise be unread (an OBJ a vertex short)
        data = data[len(_UTF8_BOM) :]
    try:
        reader = {
            ".obj": _read_obj,
            ".ply": _read_ply,
            ".stl": _read_stl,
            ".off": _read_off,
            ".wrl": _read_wrl,
        }[suffix]
        parts = reader(data, split_seams)
    except InputFileError:
        raise
    except _UVProblem as exc:
        warnings.warn(
            f"{path}: texture coordinates left out ({exc}); the geometry is read",
            MeshFileWarning,
            stacklevel=2,
        )
        parts = exc.parts
    except _Problem as exc:
        raise InputFileError(path, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad file
        kind = suffix[1:].upper()
        raise InputFileError(path, f"cannot parse as {kind}: {type(exc).__name__}: {exc}") from None
    vertices, faces, uvs, colors = parts
    return _validated(path, vertices, faces, uvs, colors)


def load_textured_mesh(
    path: str | Path, *, max_texture_size: int = 2048
) -> tuple[Mesh, np.ndarray | None]:
    """A scan with its colour texture, when its file has one (:func:`texture_path`).

    With one texture image, the mesh comes back split along its UV seams (``load_mesh(path,
    split_seams=True)``: the same surface, one UV per vertex) with the image; otherwise (no
    material, no ``map_Kd``, a missing or unreadable image, several images, a PLY) it is
    :func:`load_mesh`'s mesh and ``None``, and a :class:`MeshFileWarning` naming the file says
    why a texture named in the files was not used (a missing material library or image, an
    unreadable image, several images, no texture coordinates).

    Parameters
    ----------
    path : the mesh file.
    max_texture_size : a larger image is shrunk to this longest side (scanner textures reach
        8192², 0.8 GB as floats, far more than renders of a face need).

    Returns
    -------
    (mesh, texture): texture (H, W, 3) float32 RGB in [0, 1], row 0 at ``v = 1``, or None.

    Raises
    ------
    InputFileError
        As :func:`load_mesh`.
    """
    path = Path(path)
    image_path = texture_path(path)
    if image_path is None:
        return load_mesh(path), None
    try:
        from PIL import Image

        with Image.open(image_path) as im:
            im = im.convert("RGB")
            if max(im.size) > max_texture_size:
                k = max_texture_size / max(im.size)
                size = (max(1, round(im.size[0] * k)), max(1, round(im.size[1] * k)))
                im = im.resize(size, Image.Resampling.BOX)
            texture = np.asarray(im, dtype=np.float32) / 255.0
    except Exception as exc:  # noqa: BLE001 - an unreadable texture only loses the colours
        _texture_warning(f"{path}: texture {image_path} unreadable ({exc}); geometry only")
        return load_mesh(path), None
    mesh = load_mesh(path, split_seams=True)
    if mesh.uvs is None:
        _texture_warning(f"{path}: texture {image_path} but no texture coordinates; geometry only")
        return load_mesh(path), None
    return mesh, texture


def texture_path(path: str | Path) -> Path | None:
    """The one colour texture image a mesh file names, or None.

    An OBJ names it through ``mtllib`` and its materials' ``map_Kd`` (paths relative to the OBJ's
    and the MTL's folders; options before the file name are skipped, names may hold spaces); a
    VRML file through its ``ImageTexture`` ``url``; a PLY file through a ``comment TextureFile``
    line in its header (as MeshLab writes it; both relative to the file's folder). An image
    named by a path that does not exist here (an absolute path from another machine) is looked
    for by its file name beside the material library (the VRML or PLY file). None for other
    formats, no material library, no ``map_Kd``, ``ImageTexture`` or ``TextureFile``, several
    different images or a missing image or material library (the last three with a
    :class:`MeshFileWarning` naming the file and what is missing).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".obj", ".wrl", ".ply"):
        return None
    try:
        if suffix == ".ply":  # the header is enough
            with open(path, "rb") as fh:
                head = fh.read(1 << 16)
        else:
            head = path.read_bytes()
    except OSError:
        return None  # load_mesh reports it
    head = head.removeprefix(_UTF8_BOM)  # as load_mesh reads it: mtllib may be the first line
    images: dict[Path, Path] = {}  # image as named -> the folder of the file naming it
    if suffix == ".wrl":
        from facehd.vrml import texture_urls

        for name in texture_urls(head.decode("utf-8", "replace")):
            images[path.parent / name] = path.parent
    if suffix == ".ply":
        header = head[: head.find(b"end_header")] if b"end_header" in head else b""
        for m in re.finditer(rb"^comment[ \t]+TextureFile[ \t]+(.+?)[ \t\r]*$", header, re.M):
            images[path.parent / m.group(1).decode("utf-8", "replace")] = path.parent
    libs = re.findall(rb"^[ \t]*mtllib[ \t]+(.+?)[ \t\r]*$", head, re.MULTILINE)
    for lib in libs if suffix == ".obj" else []:
        mtl = path.parent / lib.decode("utf-8", "replace")
        try:
            text = mtl.read_text(errors="replace")
        except OSError:
            _texture_warning(f"{path}: material library {mtl} not found; geometry only")
            continue
        for m in re.finditer(r"^[ \t]*map_Kd[ \t]+(.+?)[ \t\r]*$", text, re.MULTILINE):
            images[mtl.parent / _map_file_name(m.group(1))] = mtl.parent
    if len(images) != 1:
        if len(images) > 1:
            _texture_warning(f"{path}: {len(images)} texture images; geometry only")
        return None
    ((image, folder),) = images.items()
    if not image.is_file():
        # a scan moved from another machine often names its texture by an absolute path (a
        # Windows one, say): the same file name beside the material library is tried next
        beside = folder / re.split(r"[\\/]", str(image))[-1]
        if not beside.is_file():
            _texture_warning(f"{path}: texture {image} not found; geometry only")
            return None
        image = beside
    return image


def _texture_warning(message: str) -> None:
    """A texture named in a mesh's files that cannot be used: a :class:`MeshFileWarning`, which
    callers can record (``warnings.catch_warnings(record=True)``) and report with the scan."""
    warnings.warn(message, MeshFileWarning, stacklevel=3)


_MAP_OPTION = re.compile(r"^-(\w+)\s+((?:(?:[-+]?[\d.]+(?:[eE][-+]?\d+)?|on|off)\s+){1,3})")


def _map_file_name(text: str) -> str:
    """The file name of an MTL texture statement's arguments: what follows its options (``-s 1 1
    1``, ``-bm 0.5``, ``-clamp on`` ...); names may hold spaces."""
    rest = text.strip()
    while (m := _MAP_OPTION.match(rest)) is not None:
        rest = rest[m.end() :]
    return rest


class MeshFileWarning(InputFileWarning):
    """A mesh file was read with part of it left out or changed: a texture that is missing or
    unreadable (:func:`load_textured_mesh`, :func:`texture_path`), vertices with NaN or inf
    coordinates that no face uses, set to a used vertex's position (:func:`load_mesh`). The
    message names the file and what was done."""


class _Problem(Exception):
    """A problem with a file's content, reported as an InputFileError by load_mesh."""


class _UVProblem(_Problem):
    """A problem with a file's texture coordinates alone: load_mesh keeps the geometry read
    (``parts``, without UVs) and says, in a :class:`MeshFileWarning`, that the UVs were left
    out. A scan's surface is what a fit needs; a broken UV table is no reason to refuse it."""

    def __init__(self, message: str, parts: tuple) -> None:
        super().__init__(message)
        self.parts = parts


def _triangles(faces: Any) -> np.ndarray:
    import trimesh

    if faces is None:
        raise _Problem("no faces (a point cloud, not a mesh)")
    if isinstance(faces, np.ndarray) and faces.ndim == 2 and faces.shape[1] == 3:
        return faces.astype(np.int64)
    if len(faces) == 0:
        raise _Problem("no faces (a point cloud, not a mesh)")
    tri = np.asarray(trimesh.geometry.triangulate_quads(faces), dtype=np.int64)
    if tri.ndim != 2 or tri.shape[1] != 3:
        raise _Problem("faces are neither triangles nor quads")
    return tri


def _colors01(c: Any, n: int) -> np.ndarray | None:
    if c is None:
        return None
    c = np.asarray(c)
    if c.ndim != 2 or c.shape[0] != n or c.shape[1] < 3:
        return None
    rgb = c[:, :3]
    if np.issubdtype(rgb.dtype, np.integer) or (rgb.size and float(np.nanmax(rgb)) > 1.0):
        return rgb.astype(np.float64) / 255.0
    return rgb.astype(np.float64)


_PLY_COLOR_NAMES = (("red", "green", "blue"), ("diffuse_red", "diffuse_green", "diffuse_blue"))


def _ply_colors(kw: dict, n: int) -> np.ndarray | None:
    """(n, 3) vertex colours in [0, 1] of a PLY file read by trimesh: its ``red green blue``
    (or ``diffuse_red diffuse_green diffuse_blue``) vertex properties, integers divided by their
    type's largest value (``uchar`` 255, ``ushort`` 65535), floats as :func:`_colors01` takes
    them (0-1, or 0-255 when above 1); None without colours."""
    raw = kw.get("metadata", {}).get("_ply_raw", {}).get("vertex")
    if raw is None:
        return _colors01(kw.get("vertex_colors"), n)
    props, data = raw.get("properties", {}), raw.get("data")
    names = next((k for k in _PLY_COLOR_NAMES if all(c in props for c in k)), None)
    if names is None or data is None:
        return None
    rgb = np.column_stack([np.asarray(data[c]).reshape(-1) for c in names])
    if rgb.shape != (n, 3):
        return None
    if np.issubdtype(rgb.dtype, np.integer):
        return np.clip(rgb.astype(np.float64) / np.iinfo(rgb.dtype).max, 0.0, 1.0)
    return _colors01(rgb, n)


def _uv_of(geom: dict) -> np.ndarray | None:
    visual = geom.get("visual")
    uv = getattr(visual, "uv", None)
    if uv is None:
        return None
    uv = np.asarray(uv, dtype=np.float64)
    if uv.shape != (len(geom["vertices"]), 2):
        return None
    return uv


# a comment after the data of an element line: ``v 0 0 0 # nose``
_OBJ_TRAILING_COMMENT = re.compile(rb"^([ \t]*(?:v|vt|vn|vp|f|l|p)[ \t][^#\n]*)#[^\n]*", re.M)

#: The first line of the OBJ files facehd writes (:func:`save_mesh`): their counts.
_FACEHD_OBJ_HEADER = re.compile(rb"^# facehd mesh: (\d+) vertices, (\d+) faces", re.M)

#: Lines of one kind parsed together (bounds the memory a big scan's words take).
_OBJ_CHUNK_LINES = 1 << 19
#: Control bytes (other than tab, line and page breaks) and the whitespace only
#: :meth:`bytes.split` takes as such: a chunk holding one is read word by word.
_OBJ_ODD_BYTES = bytes([*range(0, 9), 11, 12, *range(14, 32), 127])

_OBJ_KINDS = {b"v": "vertex", b"vt": "texture coordinate", b"vn": "normal"}


def _read_obj(data: bytes, split_seams: bool) -> tuple:
    if _looks_binary(data):
        raise _Problem("not a text OBJ file (binary data): unreadable as OBJ")
    data = data.replace(b"\t", b" ")  # whitespace as any other (the reader splits on spaces)
    # a comment after the data of a line (``v 0 0 0 # nose``): the line's data alone (the line
    # itself stays, so line numbers in messages are the file's)
    if _after_data(data, b"#") and _OBJ_TRAILING_COMMENT.search(data):
        data = _OBJ_TRAILING_COMMENT.sub(rb"\1", data)
    return _read_obj_text(data, split_seams)


def _after_data(data: bytes, mark: bytes) -> bool:
    """Whether ``mark`` follows something other than spaces on one of the lines of ``data``
    (the quick look before a whole-file search: most files hold it at line starts alone,
    in a few comment lines)."""
    at = data.find(mark)
    for _ in range(1000):
        if at < 0:
            return False
        if data[data.rfind(b"\n", 0, at) + 1 : at].strip():
            return True
        at = data.find(mark, at + 1)
    return True  # many: the search decides


def _looks_binary(data: bytes) -> bool:
    """Whether a file that should be text starts with binary data: a NUL byte, or more than 5%
    control bytes (other than tab, line and page breaks), in its first 64 KiB."""
    head = data[: 1 << 16]
    if b"\x00" in head:
        return True
    control = sum(head.count(bytes([c])) for c in (*range(1, 9), *range(14, 32), 127))
    return control > 0.05 * len(head)


class _ObjLines:
    """The lines of an OBJ text (tabs already spaces): where each starts and ends, and which
    are ``v``, ``vt``, ``vn`` and ``f`` lines (the keyword first on its line, after any
    indentation). Line numbers count from 0."""

    def __init__(self, data: bytes) -> None:
        if b"\n" not in data:  # lines ended by CR alone (classic Mac OS)
            data = data.replace(b"\r", b"\n")
        if b"\\\n" in data or b"\\\r\n" in data:  # a line continued on the next
            data = re.sub(rb"\\\r?\n", b" ", data)
        self._find_lines(data)
        if (self._padded[self.starts] == ord(" ")).any():  # indented: the keyword after spaces
            self._find_lines(re.sub(rb"(?m)^ +", b"", data))
        padded = self._padded
        c0, c1, c2 = (padded[self.starts + k] for k in range(3))
        space = np.isin(np.arange(256), (ord(" "), ord("\r"), ord("\n")))
        v = c0 == ord("v")
        self.lines = {
            b"v": np.flatnonzero(v & space[c1]),
            b"vt": np.flatnonzero(v & (c1 == ord("t")) & space[c2]),
            b"vn": np.flatnonzero(v & (c1 == ord("n")) & space[c2]),
            b"f": np.flatnonzero((c0 == ord("f")) & space[c1]),
        }

    def _find_lines(self, data: bytes) -> None:
        self.data = data
        breaks = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
        self.starts = np.concatenate([[0], breaks + 1])
        self.ends = np.concatenate([breaks, [len(data)]])
        self._padded = np.frombuffer(data + b"\n\n\n", dtype=np.uint8)

    def text(self, line: int) -> str:
        """``line N: '<text>'`` of line ``line`` (N counting from 1, as editors do)."""
        shown = self.data[self.starts[line] : self.ends[line]].strip()[:60]
        return f"line {line + 1}: {shown.decode('utf-8', 'replace')!r}"

    def chunks(self, keyword: bytes) -> Iterator[tuple[np.ndarray, bytes]]:
        """The ``keyword`` lines in chunks: ``(lines, text)``, the chunk's line numbers and their
        text, one line after another, each from its keyword (tabs already spaces)."""
        every = self.lines[keyword]
        for lo in range(0, len(every), _OBJ_CHUNK_LINES):
            lines = every[lo : lo + _OBJ_CHUNK_LINES]
            # runs of consecutive lines are one slice of the file
            cut = np.flatnonzero(np.diff(lines) != 1) + 1
            first = lines[np.concatenate([[0], cut])].tolist()
            last = lines[np.concatenate([cut - 1, [len(lines) - 1]])].tolist()
            yield (
                lines,
                b"\n".join(
                    self.data[self.starts[a] : self.ends[b]]
                    for a, b in zip(first, last, strict=True)
                ),
            )

    def words(
        self, keyword: bytes, lines: np.ndarray, text: bytes
    ) -> tuple[np.ndarray, np.ndarray]:
        """The words after the keyword of a chunk's lines (:meth:`chunks`): ``(words,
        count)``, its words (bytes array) and how many words each line holds."""
        split = text.split()
        if max(map(len, split), default=0) > 200:
            where = self.first_line(lines, lambda ln: any(len(w) > 200 for w in ln.split()))
            raise _Problem(f"cannot parse a word over 200 characters long{where}")
        arr = np.array(split, dtype=bytes)
        at = np.flatnonzero(arr == keyword)
        if len(at) != len(lines):  # the keyword again inside a line
            where = self.first_line(lines, lambda ln: ln.split().count(keyword) != 1)
            raise _Problem(f"cannot parse a {keyword.decode()} line{where}")
        count = np.diff(np.append(at, len(arr))) - 1
        return np.delete(arr, at), count

    def _line(self, line: int) -> bytes:
        return self.data[self.starts[line] : self.ends[line]]

    def first_line(self, lines: np.ndarray, bad: Callable[[bytes], bool]) -> str:
        """`` (line N: '<text>')`` of the first of ``lines`` whose bytes are ``bad``, or ``""``
        when none is (a problem the line-by-line look does not see)."""
        for i in lines.tolist():
            if bad(self._line(i)):
                return f" ({self.text(i)})"
        return ""


def _obj_numbers(obj: _ObjLines, keyword: bytes, least: int, width: int) -> np.ndarray:
    """(N, W) the numbers of the ``keyword`` lines: the first ``width`` of each, or the fewest
    a line holds when fewer (``least`` at least). A line with fewer than ``least`` numbers or a
    word that is no number is a problem naming its line."""
    what = _OBJ_KINDS[keyword]
    blocks = []
    for lines, text in obj.chunks(keyword):
        fast = _fast_numbers(text, len(keyword), np.float64)
        if fast is not None and (fast[1] >= least).all():
            values, count = fast
        else:  # the word by word reading, which names what is wrong
            words, count = obj.words(keyword, lines, text)
            values = None
        if (count < least).any():
            i = lines[int((count < least).argmax())]
            raise _Problem(
                f"cannot parse a {what} line ({keyword.decode()}): fewer than {least} numbers "
                f"({obj.text(i)})"
            )
        if values is None:
            try:
                values = words.astype(np.float64)
            except ValueError:
                where = obj.first_line(
                    lines, lambda line: not _all_numbers(line.split()[1:], float)
                )
                raise _Problem(f"a {what} line holds a word that is no number{where}") from None
        w = min(width, int(count.min()))
        if (count == count[0]).all():
            blocks.append(values.reshape(len(lines), -1)[:, :w])
        else:  # lines of several lengths: each one's first numbers
            first = np.cumsum(count) - count
            blocks.append(values[first[:, None] + np.arange(w)])
    if not blocks:
        return np.zeros((0, width))
    w = min(b.shape[1] for b in blocks)
    return np.concatenate([b[:, :w] for b in blocks])


def _fast_numbers(
    text: bytes, keyword_length: int, dtype: type
) -> tuple[np.ndarray, np.ndarray] | None:
    """The numbers of a chunk of keyword lines read in one pass (:func:`numpy.fromstring`):
    ``(values, count)``, all of them in order and how many each line holds; None when the
    chunk holds anything else (a word that is no number, a control byte), which the word by
    word reading then names."""
    blanked = _keywords_blanked(text, keyword_length)
    if blanked is None:
        return None
    buf, breaks = blanked
    starts, count = _word_starts(buf, breaks)
    values = _read_numbers(buf, dtype, len(starts))
    return None if values is None else (values, count)


def _keywords_blanked(text: bytes, keyword_length: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The bytes of a chunk of keyword lines (uint8, a copy) with each line's keyword turned
    to spaces, and where its line breaks are; None for an empty chunk or one holding a control
    byte or whitespace that :meth:`bytes.split` alone takes as such."""
    if not text or len(text.translate(None, _OBJ_ODD_BYTES)) != len(text):
        return None
    buf = np.frombuffer(text, dtype=np.uint8).copy()
    breaks = np.flatnonzero(buf == 10)
    first = np.concatenate([[0], breaks + 1])
    for k in range(keyword_length):  # each line starts with its keyword
        buf[first + k] = 32
    return buf, breaks


def _word_starts(buf: np.ndarray, breaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each word of the text ``buf`` (uint8) starts, and how many words each line holds
    (``breaks``: where its line breaks are)."""
    space = (buf == 32) | (buf == 10) | (buf == 13)
    starts = np.flatnonzero(~space & np.concatenate([[True], space[:-1]]))
    before = np.searchsorted(starts, breaks)  # words before each break
    return starts, np.diff(np.concatenate([[0], before, [len(starts)]]))


def _read_numbers(buf: np.ndarray, dtype: type, n: int) -> np.ndarray | None:
    """The ``n`` numbers of the text ``buf`` (uint8), or None unless it holds exactly ``n``
    numbers of ``dtype`` (an integer too large for 64 bits: None)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a word not read to its end: not all numbers
        try:
            values = np.fromstring(buf.tobytes(), dtype=dtype, sep=" ")  # noqa: NPY201
        except (ValueError, DeprecationWarning):
            return None
    if len(values) != n:
        return None
    if dtype is not np.float64 and (np.abs(values) >= np.iinfo(np.int64).max).any():
        return None  # saturated: a number too large for 64 bits
    return values


def _fast_face_corners(text: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """The face lines of a chunk read in one pass when every corner has the same form (``v``,
    ``v/vt``, ``v//vn`` or ``v/vt/vn``): ``(count, v, vt)`` as :func:`_obj_faces` gives them;
    None otherwise (mixed forms, a word that is no number, an index 0), for the word by word
    reading."""
    blanked = _keywords_blanked(text, 1)
    if blanked is None:
        return None
    buf, breaks = blanked
    starts, count = _word_starts(buf, breaks)  # the corners, and how many each face has
    corners = len(starts)
    if corners == 0 or (count < 3).any():
        return None
    slashes, doubles = text.count(b"/"), text.count(b"//")
    if slashes == 0:
        width = 1
    elif doubles == 0 and slashes in (corners, 2 * corners):
        width = 1 + slashes // corners  # v/vt or v/vt/vn
    elif doubles == corners and slashes == 2 * corners:
        width = 2  # v//vn: the vertex and the normal
    else:
        return None
    if slashes:
        # each corner holds its share of the slashes (none of the forms mixed): the slashes in
        # file order, k to a corner, each corner's between its start and the next corner's
        at = np.flatnonzero(buf == ord("/"))
        share = at.reshape(corners, slashes // corners)
        if (share[:, 0] < starts).any() or (share[:, -1] >= np.append(starts[1:], len(buf))).any():
            return None
        buf[at] = 32
    # with its slashes each corner holds `width` numbers at most: all of them there
    values = _read_numbers(buf, np.int64, width * corners)
    if values is None:
        return None
    table = values.reshape(-1, width)
    v = table[:, 0]
    t = table[:, 1] if width >= 2 and doubles == 0 else None
    if (v == 0).any() or (t is not None and (t == 0).any()):
        return None
    return count, v, t


def _all_numbers(words: list[bytes], kind: type) -> bool:
    """Whether every word reads as a ``kind`` (``int``: one that fits in 63 bits)."""
    try:
        for w in words:
            if abs(kind(w)) >= 2**63:
                return False
    except ValueError:
        return False
    return True


def _obj_faces(obj: _ObjLines) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The file's faces, in file order: ``(line, corners, v, vt)``, each face's line number and
    number of corners, and each corner's vertex and texture coordinate number as written (from
    1, or negative), ``vt`` None unless every corner has one (all empty without faces). A
    face of fewer than 3 corners, an entry that is not ``v``, ``v/vt``, ``v//vn`` or
    ``v/vt/vn`` numbers, or a number 0 is a problem naming its line."""
    face_lines, counts, vs, vts = [], [], [], []
    for lines, text in obj.chunks(b"f"):
        fast = _fast_face_corners(text)
        if fast is not None:
            count, v, t = fast
            face_lines.append(lines)
            counts.append(count)
            vs.append(v)
            vts.append(t)
            continue
        words, count = obj.words(b"f", lines, text)  # word by word, naming what is wrong
        if (count < 3).any():
            i = lines[int((count < 3).argmax())]
            raise _Problem(f"a face with fewer than 3 vertices ({obj.text(i)}; a cut file?)")
        length = np.strings.str_len(words)
        slash = np.strings.find(words, b"/")
        v_end = np.where(slash < 0, length, slash)
        rest = np.strings.slice(words, np.minimum(v_end + 1, length), length)
        slash2 = np.strings.find(rest, b"/")
        vt = np.strings.slice(rest, 0, np.where(slash2 < 0, np.strings.str_len(rest), slash2))
        has_vt = np.strings.str_len(vt) > 0
        try:
            v = np.strings.slice(words, 0, v_end).astype(np.int64)
            t = np.where(has_vt, vt, b"0").astype(np.int64)
            rest_length = np.strings.str_len(rest)
            n = np.strings.slice(rest, np.where(slash2 < 0, rest_length, slash2 + 1), rest_length)
            np.where(n == b"", b"1", n).astype(np.int64)  # normals are not read, but checked
            if (np.strings.find(rest, b"/", np.maximum(slash2 + 1, 0)) > slash2).any():
                raise ValueError("more than 2 slashes")
        except (ValueError, OverflowError):
            where = obj.first_line(lines, lambda line: not _obj_face_line_ok(line))
            raise _Problem(f"cannot parse a face line{where}") from None
        zero = (v == 0) | (has_vt & (t == 0))
        if zero.any():
            i = lines[np.repeat(np.arange(len(lines)), count)[int(zero.argmax())]]
            raise _Problem(f"a face index 0 ({obj.text(i)}): OBJ counts vertices from 1")
        face_lines.append(lines)
        counts.append(count)
        vs.append(v)
        vts.append(t if has_vt.all() else None)
    if not counts:
        none = np.zeros(0, dtype=np.int64)
        return none, none, none, None
    vt_all = None if any(t is None for t in vts) else np.concatenate(vts)
    return np.concatenate(face_lines), np.concatenate(counts), np.concatenate(vs), vt_all


def _obj_face_line_ok(line: bytes) -> bool:
    """Whether every entry of a face line is ``v``, ``v/vt``, ``v//vn`` or ``v/vt/vn``."""
    for entry in line.split()[1:]:
        parts = entry.split(b"/")
        if len(parts) > 3 or not _all_numbers([parts[0], *(p for p in parts[1:] if p)], int):
            return False
    return True


def _obj_absolute(
    obj: _ObjLines, keyword: bytes, face_lines: np.ndarray, counts: np.ndarray, index: np.ndarray
) -> np.ndarray:
    """0-based indices of the ``keyword`` elements the face corners' numbers ``index`` name: a
    positive number counts from the file's first (1), a negative one back from the latest
    before its face line (-1). A number naming none is a problem naming its line."""
    kind = obj.lines[keyword]
    if index.min() > 0:  # the usual file: no relative numbers
        out = index - 1
        bad = out >= len(kind)
        before = np.zeros(0, dtype=np.int64)
    else:
        before = np.repeat(np.searchsorted(kind, face_lines), counts)
        out = np.where(index > 0, index - 1, before + index)
        bad = (out < 0) | (out >= len(kind))
    if bad.any():
        k = int(bad.argmax())
        i = face_lines[np.repeat(np.arange(len(face_lines)), counts)[k]]
        n, where = (len(kind), "in the file") if index[k] > 0 else (before[k], "before the line")
        raise _Problem(
            f"face indices out of range: {obj.text(i)} refers to {_OBJ_KINDS[keyword]} "
            f"{int(index[k])}, of {n} {where}"
        )
    return out


def _read_obj_text(data: bytes, split_seams: bool) -> tuple:
    """An OBJ's vertices (every ``v`` line, in file order), triangles (each face line's polygon
    split into a fan, in file order), per-vertex UVs and colours (see the module docstring)."""
    from facehd.vrml import fan_triangles

    obj = _ObjLines(data)
    if len(obj.lines[b"v"]) == 0:
        raise _Problem("no vertices")
    face_lines, counts, fv, ft = _obj_faces(obj)
    numbers = _obj_numbers(obj, b"v", 3, 6)
    vertices = numbers[:, :3]
    if said := _FACEHD_OBJ_HEADER.search(obj.data, 0, 4096):  # a file facehd wrote: whole?
        if (len(vertices), len(face_lines)) != (int(said[1]), int(said[2])):
            raise _Problem(
                f"cut short or edited: its header says {int(said[1])} vertices and "
                f"{int(said[2])} faces, it holds {len(vertices)} and {len(face_lines)}"
            )
    if len(face_lines) == 0:
        raise _Problem("no faces (a point cloud, not a mesh)")
    colors = _colors01(numbers[:, 3:6], len(vertices)) if numbers.shape[1] >= 6 else None
    fv = _obj_absolute(obj, b"v", face_lines, counts, fv)
    fan = fan_triangles(counts)
    faces = fv[fan]
    if ft is None:
        return vertices, faces, None, colors
    try:
        ft = _obj_absolute(obj, b"vt", face_lines, counts, ft)
        table = _obj_numbers(obj, b"vt", 1, 2)
    except _Problem as exc:
        raise _UVProblem(str(exc), (vertices, faces, None, colors)) from None
    if table.shape[1] == 1:  # u alone: v is 0
        table = np.concatenate([table, np.zeros_like(table)], axis=1)
    if len(table) == len(vertices) and np.array_equal(fv, ft):
        # every corner pairs vertex i with texture coordinate i (as facehd writes them): the
        # vertices no face uses take theirs too
        return vertices, faces, table, colors
    pick = np.zeros(len(vertices), dtype=np.int64)
    pick[fv] = ft
    if np.array_equal(table[pick[fv]], table[ft]):  # one UV per vertex: no seams
        uvs = np.zeros((len(vertices), 2))
        used = vertices_in_faces(fv, len(vertices))
        uvs[used] = table[pick[used]]
        return vertices, faces, uvs, colors
    if not split_seams:
        log.info("OBJ UVs have seams; vertices kept as in the file, UVs dropped")
        return vertices, faces, None, colors
    # one vertex per distinct (vertex, UV) pair that the faces use, ordered by vertex
    keep, uv_id = merge_equal_rows(table)
    pair = fv * len(keep) + uv_id[ft]
    distinct, corner = np.unique(pair, return_inverse=True)
    source = distinct // len(keep)
    return (
        vertices[source],
        corner[fan],
        table[keep][distinct % len(keep)],
        None if colors is None else colors[source],
    )


def _read_ply(data: bytes, split_seams: bool) -> tuple:
    from trimesh.exchange.ply import load_ply

    from facehd.ply import PlyError, checked_ply

    try:  # a file cut short, named as such; mixed polygons of a binary file as triangles
        data = checked_ply(data)
    except PlyError as exc:
        raise _Problem(str(exc)) from None
    kw = load_ply(io.BytesIO(data), fix_texture=False, skip_materials=True)
    vertices = kw.get("vertices")
    if vertices is None or len(vertices) == 0:
        raise _Problem("no vertices")
    raw = kw.get("metadata", {}).get("_ply_raw", {})
    if kw.get("faces") is None and "tristrips" in raw:
        raise _Problem(
            "its faces are triangle strips (element tristrips), which facehd does not read: "
            "save the mesh with triangles (element face)"
        )
    faces = _triangles(kw.get("faces"))
    colors = _ply_colors(kw, len(vertices))
    uvs = _uv_of(kw)
    own = None if uvs is None else _ply_vertex_uvs(raw, len(vertices))
    if own is not None:  # the vertices' own UVs (no per-corner texcoord): no seams possible
        uvs = own
    elif uvs is not None:
        # unmerge by (vertex, UV): if nothing splits, the UVs are per-vertex already
        split = load_ply(io.BytesIO(data), fix_texture=True, skip_materials=True)
        n_split = len(split["vertices"])
        if n_split != len(np.unique(faces)):
            if split_seams:
                split_faces = _triangles(split["faces"])
                if colors is not None and split_faces.shape == faces.shape:
                    # each split vertex takes the colour of the file's vertex at its corners
                    source = np.zeros(n_split, dtype=np.int64)
                    source[split_faces.ravel()] = faces.ravel()
                    colors = colors[source]
                else:
                    colors = None
                return split["vertices"], split_faces, _uv_of(split), colors
            log.info("PLY UVs have seams; vertices kept as in the file, UVs dropped")
            uvs = None
    return vertices, faces, uvs, colors


#: The vertex properties PLY writers name texture coordinates by (as trimesh looks for them).
_PLY_UV_NAMES = (("texture_u", "texture_v"), ("u", "v"), ("s", "t"))


def _ply_vertex_uvs(raw: dict, n: int) -> np.ndarray | None:
    """The (n, 2) UVs of a PLY whose vertices hold them (``s t`` and the like, no per-face
    ``texcoord``): every vertex's own, also those no face uses (trimesh's, from the faces'
    corners, are (0, 0) there); otherwise None."""
    face = raw.get("face", {})
    vertex = raw.get("vertex", {})
    props, data = vertex.get("properties", {}), vertex.get("data")
    if "texcoord" in face.get("properties", {}) or data is None:
        return None
    names = next((k for k in _PLY_UV_NAMES if all(c in props for c in k)), None)
    if names is None:
        return None
    own = np.column_stack([np.asarray(data[c], dtype=np.float64).reshape(-1) for c in names])
    return own if own.shape == (n, 2) else None


def _read_stl(data: bytes, split_seams: bool) -> tuple:
    """STL (binary or ASCII) stores every triangle's three corners on their own: corners at the
    same position (bit for bit, -0.0 = 0.0) are merged into one vertex, in first-use order, so
    that the surface is connected and has smooth vertex normals."""
    from trimesh.exchange.stl import load_stl

    # binary: an 80-byte header, the triangle count (uint32), 50 bytes per triangle. A binary
    # file whose length does not match is read as ASCII by trimesh (its header may begin with
    # "solid" as ASCII files do), which fails with a message about something else
    text = data.removeprefix(_UTF8_BOM)  # an ASCII file saved by an editor that marks UTF-8
    if b"\x00" in data[: 1 << 16] or not text.lstrip()[:5].lower().startswith(b"solid"):
        if len(data) < 84:
            raise _Problem(f"a truncated binary STL: {len(data)} bytes, its header alone has 84")
        count = int.from_bytes(data[80:84], "little")
        if (size := 84 + 50 * count) != len(data):
            what = "a truncated binary STL" if size > len(data) else "a binary STL too long"
            raise _Problem(
                f"{what}: its header says {count} triangles ({size} bytes), the file has "
                f"{len(data)} bytes"
            )
        kw = load_stl(io.BytesIO(data))
    else:
        try:
            kw = load_stl(io.BytesIO(text))
        except ValueError as exc:
            raise _Problem(f"cannot parse as ASCII STL (cut short?): {exc}") from None
    if kw.get("vertices") is None or kw.get("faces") is None:
        raise _Problem("no triangles")
    corners = np.asarray(kw.get("vertices"), dtype=np.float64).reshape(-1, 3) + 0.0  # no -0.0
    tri = np.asarray(kw.get("faces"), dtype=np.int64).reshape(-1, 3)
    if len(tri) == 0:
        raise _Problem("no triangles")
    keep, new_index = merge_equal_rows(corners)
    return corners[keep], new_index[tri], None, None


def merge_equal_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal rows of ``rows`` (N, D) merged into one, in first-use order: ``(keep, new_index)``,
    ``keep`` the index of each distinct row's first occurrence, increasing, and ``new_index``
    (N,) the position in ``keep`` of each row's group (``rows[keep][new_index]`` equals
    ``rows``). Rows compare as numbers (-0.0 equals 0.0)."""
    # equal rows are adjacent after a lexicographic sort (stable: each run starts with the
    # row that comes first)
    order = np.lexsort(rows.T[::-1])
    srt = rows[order]
    starts = np.concatenate([[True], np.any(srt[1:] != srt[:-1], axis=1)])
    group = np.empty(len(rows), dtype=np.int64)
    group[order] = np.cumsum(starts) - 1
    first = order[starts]  # the first row of each group, groups in sorted order
    by_use = np.argsort(first)
    rank = np.empty(len(first), dtype=np.int64)
    rank[by_use] = np.arange(len(first))
    return first[by_use], rank[group]


_OFF_HEADER = re.compile(r"\A\s*(C?OFF)\b")


def _read_off(data: bytes, split_seams: bool) -> tuple:
    """OFF and COFF (vertex colours, 0-255 or 0-1); polygons are split into fans."""
    from facehd.vrml import fan_triangles

    text = re.sub(r"#[^\n]*", "", data.decode("latin-1"))
    m = _OFF_HEADER.match(text)
    if m is None:
        word = text.split(None, 1)[0][:20] if text.split() else ""
        raise _Problem(f"not an OFF file (header {word!r}; OFF and COFF are read)")
    lines = [ln for ln in text[m.end() :].splitlines() if ln.strip()]
    counts = lines[0].split() if lines else []
    if len(counts) < 2:
        raise _Problem("no vertex and face counts after the OFF header")
    nv, nf = int(counts[0]), int(counts[1])
    if len(lines) < 1 + nv + nf:
        raise _Problem(f"{nv} vertices and {nf} faces announced, {len(lines) - 1} lines found")
    width = len(lines[1].split()) if nv else 3
    vtok = " ".join(lines[1 : 1 + nv]).split()
    if width < 3 or len(vtok) != nv * width:
        raise _Problem("vertex lines of different lengths (or fewer than 3 numbers)")
    vals = np.array(vtok, dtype=np.float64).reshape(nv, width)
    colors = _colors01(vals[:, 3:6], nv) if m.group(1) == "COFF" and width >= 6 else None
    flines = lines[1 + nv : 1 + nv + nf]
    k0 = int(flines[0].split(None, 1)[0]) if nf else 3
    ftok = " ".join(flines).split()
    table = None
    if k0 > 0 and len(ftok) == nf * (k0 + 1):  # the usual file: every face has k0 corners
        table = np.array(ftok, dtype=np.int64).reshape(nf, k0 + 1)
        if not np.all(table[:, 0] == k0):
            table = None
    if table is not None:
        lengths, flat = np.full(nf, k0, dtype=np.int64), table[:, 1:].ravel()
    else:  # mixed polygons, or face colours after the indices
        rows = [ln.split() for ln in flines]
        lengths = np.array([int(r[0]) for r in rows], dtype=np.int64)
        if np.any(lengths < 0) or any(len(r) < 1 + k for r, k in zip(rows, lengths, strict=True)):
            raise _Problem("a face line lists fewer vertex indices than its count")
        flat = np.array([v for r, k in zip(rows, lengths, strict=True) for v in r[1 : 1 + k]])
        flat = flat.astype(np.int64)
    return vals[:, :3], flat[fan_triangles(lengths)], None, colors


def _read_wrl(data: bytes, split_seams: bool) -> tuple:
    """VRML 2.0 IndexedFaceSet geometry (:mod:`facehd.vrml`)."""
    from facehd.vrml import VrmlError, read_wrl

    try:
        return read_wrl(data.decode("utf-8", "replace"), split_seams)
    except VrmlError as exc:
        raise _Problem(str(exc)) from None


def _validated(path: Path, vertices: Any, faces: Any, uvs: Any, colors: Any) -> Mesh:
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise InputFileError(path, f"no usable vertices (shape {v.shape})")
    f = np.asarray(faces, dtype=np.int64)
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise InputFileError(path, "no faces (a point cloud, not a mesh)")
    if f.min() < 0 or f.max() >= len(v):
        raise InputFileError(
            path, f"face indices out of range: [{f.min()}, {f.max()}] for {len(v)} vertices"
        )
    bad = ~np.isfinite(v).all(axis=1)
    if bad.any():
        used = vertices_in_faces(f, len(v))
        if (bad & used).any():
            i = int((bad & used).argmax())
            raise InputFileError(
                path,
                f"{int((bad & used).sum())} vertices of faces have NaN or inf coordinates (the "
                f"first: number {i} counting from 0, at {' '.join(repr(float(c)) for c in v[i])})",
            )
        # vertices no face uses are no part of the surface; they keep their place (vertex
        # numbers stay those of the file: keypoints given by index, as REALY's, still hold) and
        # take a used vertex's position, which changes no size, centre or surface
        first = int(bad.argmax())
        warnings.warn(
            f"{path}: {int(bad.sum())} vertices with NaN or inf coordinates that no face uses "
            f"(the first: number {first} counting from 0) are set to vertex {int(f[0, 0])}'s "
            "position",
            MeshFileWarning,
            stacklevel=3,
        )
        v = v.copy()
        v[bad] = v[f[0, 0]]
    if uvs is not None and not np.isfinite(uvs).all():
        raise InputFileError(path, "texture coordinates contain NaN or inf")
    if colors is not None and not np.isfinite(colors).all():
        raise InputFileError(path, "vertex colours contain NaN or inf")
    return Mesh(v, f, uvs, colors)


# ------------------------------------------------------------------------------------------
# writing


def _fmt_rows(prefix: str, rows: np.ndarray) -> str:
    # repr gives the shortest string that reads back to the same float64
    return "".join(prefix + " ".join(map(repr, r)) + "\n" for r in rows.tolist())


def _obj_bytes(mesh: Mesh) -> bytes:
    out = io.StringIO()
    out.write(f"# facehd mesh: {mesh.n_vertices} vertices, {mesh.n_faces} faces\n")
    if mesh.colors is not None:
        out.write(_fmt_rows("v ", np.concatenate([mesh.vertices, mesh.colors], axis=1)))
    else:
        out.write(_fmt_rows("v ", mesh.vertices))
    f1 = (mesh.faces + 1).tolist()
    if mesh.uvs is not None:
        out.write(_fmt_rows("vt ", mesh.uvs))
        out.write("".join(f"f {a}/{a} {b}/{b} {c}/{c}\n" for a, b, c in f1))
    else:
        out.write("".join(f"f {a} {b} {c}\n" for a, b, c in f1))
    return out.getvalue().encode()


def _ply_bytes(mesh: Mesh) -> bytes:
    fields = [("x", "<f8"), ("y", "<f8"), ("z", "<f8")]
    header = [
        "ply",
        "format binary_little_endian 1.0",
        "comment facehd mesh",
        f"element vertex {mesh.n_vertices}",
        "property double x",
        "property double y",
        "property double z",
    ]
    if mesh.uvs is not None:
        fields += [("s", "<f8"), ("t", "<f8")]
        header += ["property double s", "property double t"]
    if mesh.colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header += [
        f"element face {mesh.n_faces}",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    vert = np.empty(mesh.n_vertices, dtype=fields)
    vert["x"], vert["y"], vert["z"] = mesh.vertices.T
    if mesh.uvs is not None:
        vert["s"], vert["t"] = mesh.uvs.T
    if mesh.colors is not None:
        rgb = np.clip(np.round(mesh.colors * 255.0), 0, 255).astype(np.uint8)
        vert["red"], vert["green"], vert["blue"] = rgb.T
    face = np.empty(mesh.n_faces, dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"] = 3
    face["i"] = mesh.faces
    return ("\n".join(header) + "\n").encode("ascii") + vert.tobytes() + face.tobytes()


def save_mesh(path: str | Path, mesh: Mesh) -> Path:
    """Write ``mesh`` to an ``.obj`` or ``.ply`` file, atomically.

    OBJ: text; vertices (with colours as ``v x y z r g b`` when present) in shortest round-trip
    float notation, so reading back gives the same float64 values; ``vt`` per vertex with
    ``f a/a b/b c/c``. PLY: binary little-endian; double positions and UVs (``s``, ``t``); colours
    as ``uchar red green blue`` (quantised to 1/255).

    Returns
    -------
    The path written.
    """
    path = Path(path)
    if not isinstance(mesh, Mesh):
        raise ValueError(f"save_mesh: expected a Mesh, got {type(mesh).__name__}")
    suffix = path.suffix.lower()
    if suffix == ".obj":
        data = _obj_bytes(mesh)
    elif suffix == ".ply":
        data = _ply_bytes(mesh)
    else:
        raise ValueError(f"save_mesh: unsupported format {suffix!r} (expected .obj or .ply)")
    return atomic_write_bytes(path, data)
