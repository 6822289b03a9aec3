"""VRML 2.0 (VRML97) scans: the triangle geometry of a ``.wrl`` file.

Several classic 3D face collections and scanner exports store scans as VRML 2.0: one or more
``Shape`` nodes whose ``IndexedFaceSet`` holds the points (``coord Coordinate { point [...] }``),
the polygons (``coordIndex``, each closed by ``-1``), optionally texture coordinates
(``texCoord`` / ``texCoordIndex``) with an ``ImageTexture`` and vertex colours (``color``).
This reader takes exactly that part of the language:

- every ``IndexedFaceSet`` of the file, in file order; polygons are split into fans of
  triangles; ``ccw FALSE`` reverses their winding (facehd meshes wind counter-clockwise seen
  from outside). One face set keeps its points as they are, in file order; of several (a scan
  exported in patches, or sets sharing a coordinate list), each keeps the points it uses, and
  points at the same position are merged into one vertex, so that the surface is connected;
- ``DEF`` / ``USE`` of the ``Coordinate``, ``TextureCoordinate`` and ``Color`` nodes (a ``USE``
  that places an ``IndexedFaceSet``, or a node holding one, a second time is refused);
- ``Transform`` nodes (``translation``, ``rotation``, ``scale``, ``scaleOrientation``,
  ``center``, nested) around the geometry, applied to the points;
- texture coordinates: per vertex when every point is always used with the same texture
  coordinate; otherwise (seams) dropped, or, with ``split_seams``, one vertex per distinct
  (point, texture coordinate) pair, as :func:`facehd.mesh.load_mesh` does for OBJ and PLY;
- colours per vertex (``colorPerVertex TRUE``, indexed by ``colorIndex`` or the points); colours
  per face are spread to the vertices as the mean of the faces around each.

VRML 1.0 files, ``Inline`` references to other files and the other geometry nodes (``Box``,
``Sphere``, ``ElevationGrid``, ``IndexedLineSet``, ``PointSet``...) are not scan surfaces; a file
with no ``IndexedFaceSet`` is refused, naming the problem.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

__all__ = ["VrmlError", "fan_triangles", "read_wrl", "texture_urls"]

log = logging.getLogger(__name__)


class VrmlError(ValueError):
    """A VRML file this reader cannot turn into a triangle mesh (the message says why)."""


_STRING_OR_COMMENT = re.compile(r'("(?:[^"\\]|\\.)*")|#[^\n]*')
_NODE_FIELD = re.compile(
    r"\b(coord|texCoord|color)\s+(?:DEF\s+([^\s{}\[\]]+)\s+)?"
    r"(Coordinate|TextureCoordinate|Color)\s*\{"
)
_USE_FIELD = re.compile(r"\b(coord|texCoord|color)\s+USE\s+([^\s{}\[\]]+)")
_DEF_NODE = re.compile(r"\bDEF\s+([^\s{}\[\]]+)\s+(Coordinate|TextureCoordinate|Color)\s*\{")
_ARRAY_OF = {"Coordinate": "point", "TextureCoordinate": "point", "Color": "color"}
_WIDTH_OF = {"Coordinate": 3, "TextureCoordinate": 2, "Color": 3}


def _strip_comments(text: str) -> str:
    """``text`` after its header line, without its ``#`` comments (kept inside strings)."""
    first = text.find("\n")
    if first < 0:
        return ""
    rest = text[first + 1 :]
    if "#" not in rest:
        return rest
    return _STRING_OR_COMMENT.sub(lambda m: m.group(1) or "", rest)


@dataclass
class _Doc:
    """A comment-free VRML text with the contents of its innermost ``[ ... ]`` lists (the bulk of
    a scan: point and index arrays) moved out and replaced by ``@k`` (``arrays[k]``), so that
    the node structure is searched in a few kilobytes; and its matching brace and bracket
    positions."""

    text: str
    arrays: list[str]
    close_of: dict[int, int]
    parsed: dict[int, np.ndarray] = field(default_factory=dict)
    _opens: np.ndarray | None = None
    _closes: np.ndarray | None = None

    @classmethod
    def of(cls, body: str) -> _Doc:
        pieces: list[str] = []
        arrays: list[str] = []
        stack: list[tuple[str, int]] = []
        last_open = -1  # position of the last "[" with nothing structural after it
        copied = 0
        for m in re.finditer(r'[{}\[\]]|"(?:[^"\\]|\\.)*"', body):
            ch = m.group(0)
            if ch[0] == '"':
                continue
            if ch in "{[":
                stack.append((ch, m.start()))
                last_open = m.start() if ch == "[" else -1
                continue
            if not stack or stack[-1][0] != {"}": "{", "]": "["}[ch]:
                raise VrmlError(f"unbalanced {ch!r} at character {m.start()}")
            open_at = stack.pop()[1]
            if ch == "]" and open_at == last_open:
                pieces += [body[copied : open_at + 1], f" @{len(arrays)} "]
                arrays.append(body[open_at + 1 : m.start()])
                copied = m.start()
            last_open = -1
        if stack:
            raise VrmlError(f"unclosed {stack[-1][0]!r} at character {stack[-1][1]}")
        text = "".join([*pieces, body[copied:]])
        close_of: dict[int, int] = {}
        for m in re.finditer(r'[{}\[\]]|"(?:[^"\\]|\\.)*"', text):
            ch = m.group(0)
            if ch in "{[":
                stack.append((ch, m.start()))
            elif ch in "}]":
                close_of[stack.pop()[1]] = m.start()
        return cls(text, arrays, close_of)

    def block(self, open_at: int) -> tuple[int, int]:
        """(open, close) positions of the brace or bracket opened at ``open_at``."""
        return open_at, self.close_of[open_at]

    def depth(self, at: int) -> int:
        """Blocks open just before position ``at``."""
        if self._opens is None:
            self._opens = np.sort(np.fromiter(self.close_of.keys(), dtype=np.int64))
            self._closes = np.sort(np.fromiter(self.close_of.values(), dtype=np.int64))
        opened = int(np.searchsorted(self._opens, at))
        return opened - int(np.searchsorted(self._closes, at))

    def numbers(self, inner: str, dtype: type, what: str) -> np.ndarray:
        """The numbers of a list's inside (``@k`` for a moved-out list)."""
        m = re.fullmatch(r"\s*@(\d+)\s*", inner)
        raw = self.arrays[int(m.group(1))] if m else inner
        try:
            return np.array(raw.replace(",", " ").split(), dtype=dtype)
        except ValueError as exc:
            raise VrmlError(f"{what}: not a list of numbers ({exc})") from None


def _top_level(
    pattern: re.Pattern[str], text: str, braces: _Doc, lo: int, hi: int
) -> Iterator[re.Match[str]]:
    """Matches of ``pattern`` in ``text[lo:hi]`` that no block opened after ``lo`` encloses:
    the fields of the node whose block opens at (or holds) ``lo``, not of its children."""
    for m in pattern.finditer(text, lo, hi):
        if _depth_between(braces, lo, m.start()) == 0:
            yield m


_VALUE_END = re.compile(r"[\s,}\]]")


def _array_field(text: str, name: str, braces: _Doc, lo: int, hi: int) -> str | None:
    """The inside of ``name [ ... ]`` (or ``name value`` for one value) within ``text[lo:hi]``
    at the top nesting level of that span, or None."""
    pattern = re.compile(rf"\b{name}\s*(\[|[-+\d.])")
    m = next(_top_level(pattern, text, braces, lo, hi), None)
    if m is None:
        return None
    if m.group(1) == "[":
        o, c = braces.block(m.end() - 1)
        return text[o + 1 : c]
    end = _VALUE_END.search(text, m.start(1), hi)
    return text[m.start(1) : end.start() if end else hi]


def _depth_between(braces: _Doc, lo: int, at: int) -> int:
    """How many blocks opened after ``lo`` enclose position ``at`` (``lo`` an open brace or
    bracket, or a position inside the block that holds ``at``)."""
    base = braces.depth(lo + 1) if lo in braces.close_of else braces.depth(lo)
    return braces.depth(at) - base


def _node_array(text: str, braces: _Doc, open_at: int, kind: str) -> np.ndarray:
    if open_at not in braces.parsed:  # a DEF'd node is met again as its field's value
        braces.parsed[open_at] = _parse_node_array(text, braces, open_at, kind)
    return braces.parsed[open_at]


def _parse_node_array(text: str, braces: _Doc, open_at: int, kind: str) -> np.ndarray:
    o, c = braces.block(open_at)
    inner = _array_field(text, _ARRAY_OF[kind], braces, o + 1, c)
    if inner is None:
        return np.zeros((0, _WIDTH_OF[kind]))
    vals = braces.numbers(inner, np.float64, f"{kind} {_ARRAY_OF[kind]}")
    w = _WIDTH_OF[kind]
    if vals.size % w:
        raise VrmlError(f"{kind}: {vals.size} numbers is not a whole number of {w}-tuples")
    return vals.reshape(-1, w)


def _bool_field(text: str, name: str, braces: _Doc, lo: int, hi: int, default: bool) -> bool:
    pattern = re.compile(rf"\b{name}\s+(TRUE|FALSE)\b")
    m = next(_top_level(pattern, text, braces, lo, hi), None)
    return default if m is None else m.group(1) == "TRUE"


def _polygons(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(corner indices without the separators, corners per polygon) of an index list whose
    polygons end at negative entries (``-1``; the last one may lack it); empty polygons dropped."""
    idx = np.asarray(index, dtype=np.int64)
    if len(idx) == 0 or idx[-1] >= 0:
        idx = np.append(idx, -1)
    sep = np.flatnonzero(idx < 0)
    lengths = sep - np.concatenate([[0], sep[:-1] + 1])
    return idx[idx >= 0], lengths[lengths > 0]


def fan_triangles(lengths: np.ndarray) -> np.ndarray:
    """(T, 3) corner positions (into the concatenated polygons) of their fan triangulation."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    n_tri = np.maximum(lengths - 2, 0)
    first = np.repeat(starts, n_tri)
    k = np.arange(int(n_tri.sum())) - np.repeat(np.cumsum(n_tri) - n_tri, n_tri)
    return np.stack([first, first + k + 1, first + k + 2], axis=1)


def _first_use(flat: np.ndarray, other: np.ndarray, n: int) -> np.ndarray:
    """(n,) the ``other`` index each point is first used with in ``flat`` (-1: unused)."""
    out = np.full(n, -1, dtype=np.int64)
    pts, at = np.unique(flat, return_index=True)
    out[pts] = other[at]
    return out


def _rotation(axis_angle: np.ndarray) -> np.ndarray:
    axis = axis_angle[:3]
    norm = float(np.linalg.norm(axis))
    if norm == 0.0:
        return np.eye(3)
    x, y, z = axis / norm
    a = float(axis_angle[3])
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(a) * k + (1.0 - np.cos(a)) * (k @ k)


def _transform_matrix(text: str, braces: _Doc, open_at: int) -> np.ndarray:
    """4 x 4 matrix of the ``Transform`` node whose brace opens at ``open_at``:
    ``T C R SR S SR^-1 C^-1`` (VRML 2.0)."""
    o, c = braces.block(open_at)

    def value(name: str, default: list[float]) -> np.ndarray:
        raw = _inline_values(text, name, braces, o + 1, c, len(default))
        return np.array(default if raw is None else raw, dtype=np.float64)

    t = value("translation", [0, 0, 0])
    r = _rotation(value("rotation", [0, 0, 1, 0]))
    s = value("scale", [1, 1, 1])
    so = _rotation(value("scaleOrientation", [0, 0, 1, 0]))
    ctr = value("center", [0, 0, 0])
    lin = r @ so @ np.diag(s) @ so.T
    m = np.eye(4)
    m[:3, :3] = lin
    m[:3, 3] = t + ctr - lin @ ctr
    return m


def _inline_values(
    text: str, name: str, braces: _Doc, lo: int, hi: int, count: int
) -> list[float] | None:
    """The ``count`` numbers after field ``name`` at the top level of ``text[lo:hi]``, or None
    when the field is not there."""
    m = next(_top_level(re.compile(rf"\b{name}\b"), text, braces, lo, hi), None)
    if m is None:
        return None
    tokens = text[m.end() : min(hi, m.end() + 64 * count)].replace(",", " ").split()
    try:
        if len(tokens) < count:
            raise ValueError
        return [float(v) for v in tokens[:count]]
    except ValueError:
        got = " ".join(tokens[:count])
        raise VrmlError(f"Transform {name}: expected {count} numbers, got {got!r}") from None


@dataclass
class _FaceSet:
    points: np.ndarray  # (P, 3)
    triangles: np.ndarray  # (T, 3) into points
    uvs: np.ndarray | None  # (P, 2) per point, or None
    corner_uv: tuple[np.ndarray, np.ndarray] | None  # (UV table, (T, 3) UV index) when seams
    colors: np.ndarray | None  # (P, 3)


def read_wrl(
    text: str, split_seams: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(vertices, triangles, per-vertex UVs or None, per-vertex colours in [0, 1] or None) of the
    ``IndexedFaceSet`` geometry of a VRML 2.0 file's text (see the module docstring).

    Raises
    ------
    VrmlError
        Not VRML 2.0, no ``IndexedFaceSet``, ``Inline`` content, malformed arrays or indices.
    """
    head = text.lstrip()[:32]
    if head.startswith("#VRML V1.0"):
        raise VrmlError("VRML 1.0 is not supported (convert the scan to VRML 2.0, OBJ or PLY)")
    if not head.startswith("#VRML V2.0"):
        raise VrmlError("not a VRML 2.0 file (its first line is not '#VRML V2.0 ...')")
    body = _strip_comments(text)
    braces = _Doc.of(body)
    uses = re.findall(r"\bUSE\s+([^\s{}\[\]]+)", body)  # also those inside moved-out lists
    body = braces.text
    if re.search(r"\bInline\s*\{", body):
        raise VrmlError(
            "Inline nodes (geometry in other files) are not supported; export the scan as one file"
        )
    _refuse_instanced_geometry(body, braces, uses)
    defs: dict[str, np.ndarray] = {}
    for m in _DEF_NODE.finditer(body):
        defs[m.group(1)] = _node_array(body, braces, m.end() - 1, m.group(2))
    t_open = np.array([m.end() - 1 for m in re.finditer(r"\bTransform\s*\{", body)], np.int64)
    t_close = np.array([braces.close_of[o] for o in t_open.tolist()], np.int64)
    sets = []
    for m in re.finditer(r"\bIndexedFaceSet\s*\{", body):
        lo, hi = braces.block(m.end() - 1)
        fs = _face_set(body, braces, lo, hi, defs, len(sets))
        outer = np.sort(t_open[(t_open < lo) & (t_close > hi)])[::-1].tolist()
        if outer:
            mat = np.eye(4)
            for o in outer:  # innermost first
                mat = _transform_matrix(body, braces, o) @ mat
            fs.points = fs.points @ mat[:3, :3].T + mat[:3, 3]
            if np.linalg.det(mat[:3, :3]) < 0:  # a mirroring transform turns the winding
                fs.triangles = fs.triangles[:, ::-1]
                if fs.corner_uv is not None:  # each corner keeps its texture coordinate
                    fs.corner_uv = (fs.corner_uv[0], fs.corner_uv[1][:, ::-1])
        sets.append(fs)
    if not sets:
        raise VrmlError("no IndexedFaceSet geometry (not a surface scan)")
    return _concatenate(sets, split_seams)


def _refuse_instanced_geometry(body: str, braces: _Doc, uses: list[str]) -> None:
    """A ``USE`` of a DEF'd node that holds an ``IndexedFaceSet`` (the face set, or a ``Shape``
    or grouping node around it) places its geometry a second time, which this reader (finding
    each face set once, where it is written) would silently leave out: refuse it."""
    holding: dict[str, str] = {}
    for m in re.finditer(r"\bDEF\s+([^\s{}\[\]]+)\s+([A-Za-z_]\w*)\s*\{", body):
        o, c = braces.block(m.end() - 1)
        if m.group(2) == "IndexedFaceSet" or re.search(r"\bIndexedFaceSet\s*\{", body[o:c]):
            holding[m.group(1)] = m.group(2)
    for name in uses:
        if name in holding:
            raise VrmlError(
                f"USE {name} places the geometry of the {holding[name]} DEF'd as {name} a second "
                "time, which is not supported (export the scan with each IndexedFaceSet written "
                "out)"
            )


def _face_set(
    body: str, braces: _Doc, lo: int, hi: int, defs: dict[str, np.ndarray], number: int
) -> _FaceSet:
    where = f"IndexedFaceSet {number + 1}"
    nodes: dict[str, np.ndarray] = {}
    for m in _top_level(_NODE_FIELD, body, braces, lo, hi):
        nodes[m.group(1)] = _node_array(body, braces, m.end() - 1, m.group(3))
    for m in _top_level(_USE_FIELD, body, braces, lo, hi):
        if m.group(2) not in defs:
            raise VrmlError(f"{where}: USE {m.group(2)} names no DEF'd node")
        nodes[m.group(1)] = defs[m.group(2)]
    points = nodes.get("coord")
    if points is None or len(points) == 0:
        raise VrmlError(f"{where}: no coord points")
    raw = _array_field(body, "coordIndex", braces, lo + 1, hi)
    if raw is None:
        raise VrmlError(f"{where}: no coordIndex")
    cidx = braces.numbers(raw, np.int64, f"{where} coordIndex")
    flat, lengths = _polygons(cidx)
    if len(lengths) == 0:
        raise VrmlError(f"{where}: coordIndex holds no polygon")
    if flat.max() >= len(points):
        raise VrmlError(
            f"{where}: coordIndex {int(flat.max())} out of range for {len(points)} points"
        )
    fan = fan_triangles(lengths)
    if len(fan) == 0:
        raise VrmlError(f"{where}: no polygon has three corners")
    tri = flat[fan]
    if not _bool_field(body, "ccw", braces, lo + 1, hi, True):
        tri = tri[:, ::-1]
        fan = fan[:, ::-1]

    uvs, corner_uv = None, None
    tex = nodes.get("texCoord")
    if tex is not None and len(tex):
        raw_t = _array_field(body, "texCoordIndex", braces, lo + 1, hi)
        if raw_t is None:
            tflat = flat  # per the standard: the coordIndex indexes the texture coordinates
        else:
            tflat, tlengths = _polygons(braces.numbers(raw_t, np.int64, f"{where} texCoordIndex"))
            if not np.array_equal(tlengths, lengths):
                raise VrmlError(f"{where}: texCoordIndex and coordIndex have different polygons")
        if tflat.max() >= len(tex):
            raise VrmlError(
                f"{where}: texCoordIndex {int(tflat.max())} out of range for {len(tex)} "
                "texture coordinates"
            )
        first = _first_use(flat, tflat, len(points))
        if np.array_equal(tex[first[flat]], tex[tflat]):  # one texture coordinate per point
            uvs = np.zeros((len(points), 2))
            used = first >= 0
            uvs[used] = tex[first[used]]
        else:
            corner_uv = (tex, tflat[fan])

    colors = _colours(body, braces, lo, hi, nodes.get("color"), len(points), lengths, flat, where)
    return _FaceSet(points, tri, uvs, corner_uv, colors)


def _colours(
    body: str,
    braces: _Doc,
    lo: int,
    hi: int,
    col: np.ndarray | None,
    n_points: int,
    lengths: np.ndarray,
    flat: np.ndarray,
    where: str,
) -> np.ndarray | None:
    if col is None or len(col) == 0:
        return None
    raw = _array_field(body, "colorIndex", braces, lo + 1, hi)
    per_vertex = _bool_field(body, "colorPerVertex", braces, lo + 1, hi, True)
    if per_vertex:
        if raw is None:
            cflat = flat
        else:
            cflat, clengths = _polygons(braces.numbers(raw, np.int64, f"{where} colorIndex"))
            if not np.array_equal(clengths, lengths):
                raise VrmlError(f"{where}: colorIndex and coordIndex have different polygons")
        if cflat.max() >= len(col):
            raise VrmlError(f"{where}: colour index out of range for {len(col)} colours")
        first = _first_use(flat, cflat, n_points)
        out = np.zeros((n_points, 3))
        out[first >= 0] = col[first[first >= 0]]
        return np.clip(out, 0.0, 1.0)
    n_polys = len(lengths)
    face_col = np.arange(n_polys) if raw is None else braces.numbers(raw, np.int64, where)
    face_col = face_col[face_col >= 0]
    if len(face_col) < n_polys or face_col[:n_polys].max() >= len(col):
        raise VrmlError(f"{where}: per-face colours do not cover the {n_polys} polygons")
    corner_face = np.repeat(np.arange(n_polys), lengths)
    acc = np.zeros((n_points, 3))
    cnt = np.zeros(n_points)
    np.add.at(acc, flat, col[face_col[corner_face]])
    np.add.at(cnt, flat, 1.0)
    return np.clip(acc / np.maximum(cnt, 1.0)[:, None], 0.0, 1.0)


def _concatenate(
    sets: list[_FaceSet], split_seams: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    seams = any(fs.corner_uv is not None for fs in sets)
    textured = all(fs.uvs is not None or fs.corner_uv is not None for fs in sets)
    if seams and textured and split_seams:
        for fs in sets:
            _split(fs)
    elif seams:
        if textured:
            log.info("VRML texture coordinates have seams; vertices kept, UVs dropped")
        for fs in sets:
            fs.uvs = None
    if len(sets) > 1:
        for fs in sets:
            _compact(fs)
    verts, faces, offset = [], [], 0
    for fs in sets:
        verts.append(fs.points)
        faces.append(fs.triangles + offset)
        offset += len(fs.points)
    has_uv = all(fs.uvs is not None for fs in sets)
    uvs = np.concatenate([fs.uvs for fs in sets]) if has_uv else None
    has_col = all(fs.colors is not None for fs in sets)
    cols = np.concatenate([fs.colors for fs in sets]) if has_col else None
    points, tri = np.concatenate(verts), np.concatenate(faces)
    if len(sets) > 1:
        points, tri, uvs, cols = _merge_coincident(points, tri, uvs, cols, split_seams)
    return points, tri, uvs, cols


def _compact(fs: _FaceSet) -> None:
    """Keep only the points ``fs``'s triangles use (several face sets may share one coordinate
    list, each using a part of it)."""
    used, inverse = np.unique(fs.triangles, return_inverse=True)
    fs.triangles = inverse.reshape(-1, 3)
    fs.points = fs.points[used]
    fs.uvs = None if fs.uvs is None else fs.uvs[used]
    fs.colors = None if fs.colors is None else fs.colors[used]


def _merge_coincident(
    points: np.ndarray,
    tri: np.ndarray,
    uvs: np.ndarray | None,
    cols: np.ndarray | None,
    split_seams: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """One vertex for the points of several face sets at the same position (where the patches of
    a scan meet, or sets sharing a coordinate list), in first-use order; with ``split_seams``,
    those with different texture coordinates stay apart. Texture coordinates that differ at a
    merged vertex (seams) are otherwise dropped."""
    from facehd.mesh import merge_equal_rows

    key = points + 0.0  # -0.0 as 0.0
    if uvs is not None and split_seams:
        key = np.concatenate([key, uvs], axis=1)
    keep, new_of = merge_equal_rows(key)
    if uvs is not None and not np.array_equal(uvs, uvs[keep][new_of]):
        log.info("VRML texture coordinates have seams between face sets; UVs dropped")
        uvs = None
    return (
        points[keep],
        new_of[tri],
        None if uvs is None else uvs[keep],
        None if cols is None else cols[keep],
    )


def _split(fs: _FaceSet) -> None:
    """Replace ``fs``'s points by one per distinct (point, texture coordinate) pair."""
    if fs.corner_uv is None:
        return
    tex, tri_uv = fs.corner_uv
    pairs = np.stack([fs.triangles.ravel(), tri_uv.ravel()], axis=1)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    fs.triangles = inverse.reshape(-1, 3)
    fs.points = fs.points[uniq[:, 0]]
    fs.colors = None if fs.colors is None else fs.colors[uniq[:, 0]]
    fs.uvs = tex[uniq[:, 1]]
    fs.corner_uv = None


def texture_urls(text: str) -> list[str]:
    """The image file names of the ``ImageTexture`` nodes of a VRML 2.0 text (the first of each
    node's ``url`` list), in file order, each once."""
    body = _strip_comments(text)
    names: list[str] = []
    for m in re.finditer(r"\bImageTexture\s*\{[^{}]*?\burl\s*\[?\s*\"((?:[^\"\\]|\\.)*)\"", body):
        if m.group(1) not in names:
            names.append(m.group(1))
    return names
