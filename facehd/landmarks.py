"""Landmark conventions and landmark-file readers.

NoW's 7 landmarks, in order: outer and inner corner of the first eye, inner and outer corner of the
second eye, nose bottom, left and right mouth corner. They are picked from the iBUG-68 layout
(0-based) by :data:`NOW7_FROM_68`, or from the 51-point layout without the jaw by
:data:`NOW7_FROM_51`.

Readable files:

- ``.txt`` (including ``.lm7.txt``): one landmark per line, ``x y z`` separated by spaces, tabs or
  commas; blank lines and ``#`` comments are ignored;
- ``.npy``: an array of shape (K, 3) or (1, K, 3);
- ``.pp``: MeshLab picked points, XML with ``<point x="..." y="..." z="..." name="..."/>``
  elements, in the order of their names when these are the numbers 0..K-1 or 1..K (MeshLab's
  own names, NoW's), in file order otherwise (names such as ``left eye``).

K must be 7, 51 or 68 (exactly 7 for ``.lm7.txt``).

Photo landmarks (2D, pixels) are read from and written to iBUG's ``.pts`` files, the format of
the 300-W, Helen, LFPW, AFW and iBUG annotations: ``version: 1``, ``n_points: 68``, then the points
as ``x y`` lines between ``{`` and ``}``. Those files count pixels from 1 (the centre of the
top-left pixel is ``(1, 1)``, as in MATLAB); facehd's photo coordinates count from 0, so
:func:`load_photo_landmarks` subtracts 1 and :func:`save_photo_landmarks` adds it back.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from facehd.errors import InputFileError
from facehd.mesh import atomic_write_bytes
from facehd.transforms import as_points

__all__ = [
    "NOW7_FROM_68",
    "NOW7_FROM_51",
    "LANDMARK_COUNTS",
    "load_landmarks",
    "to_now7",
    "landmarks_text",
    "save_landmarks_txt",
    "save_landmarks_pp",
    "written_by_facehd",
    "PICKED_POINTS_SUFFIX",
    "PP_WRITER",
    "PHOTO_LANDMARKS_SUFFIX",
    "photo_landmarks_path",
    "load_photo_landmarks",
    "save_photo_landmarks",
]

NOW7_FROM_68: tuple[int, ...] = (36, 39, 42, 45, 33, 48, 54)
"""Indices of NoW's 7 landmarks in the iBUG-68 layout (0-based)."""
NOW7_FROM_51: tuple[int, ...] = (19, 22, 25, 28, 16, 31, 37)
"""Indices of NoW's 7 landmarks in the 51-point layout (iBUG-68 without the 17 jaw points)."""
LANDMARK_COUNTS: tuple[int, ...] = (7, 51, 68)
"""Landmark counts facehd reads."""


def load_landmarks(path: str | Path) -> np.ndarray:
    """Read 3D landmarks from a ``.txt`` / ``.lm7.txt`` / ``.npy`` / ``.pp`` file.

    Returns
    -------
    (K, 3) float64 with K in (7, 51, 68).

    Raises
    ------
    InputFileError
        Missing or unreadable file, unknown suffix, unparsable content, wrong shape or count,
        NaN/inf values.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "landmark file does not exist")
    if not path.is_file():
        raise InputFileError(path, "not a regular file")
    name = path.name.lower()
    if name.endswith(".npy"):
        pts = _read_npy(path)
    elif name.endswith(".pp"):
        pts = _read_pp(path)
    elif name.endswith(".txt"):
        pts = _read_txt(path)
    else:
        raise InputFileError(
            path, f"unsupported landmark format {path.suffix!r} (expected .txt, .npy or .pp)"
        )
    if not np.isfinite(pts).all():
        raise InputFileError(path, "landmarks contain NaN or inf")
    counts = (7,) if name.endswith(".lm7.txt") else LANDMARK_COUNTS
    if len(pts) not in counts:
        want = " or ".join(str(c) for c in counts)
        raise InputFileError(path, f"expected {want} landmarks, found {len(pts)}")
    return pts


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputFileError(path, f"cannot read file: {exc.strerror or exc}") from exc


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(io.BytesIO(_read_bytes(path)), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        raise InputFileError(path, f"cannot read as .npy: {type(exc).__name__}: {exc}") from None
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputFileError(
            path, f"expected an array of shape (K, 3) or (1, K, 3), got {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise InputFileError(path, f"expected numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _read_text(path: Path) -> str:
    try:  # without the byte order mark an editor that marks UTF-8 (Notepad) puts first
        return _read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputFileError(path, "not a UTF-8 text file") from None


def _numbers(path: Path, lineno: int, raw: str, line: str, names: str) -> list[float]:
    """The numbers of one point line (space, tab or comma separated), one per word of
    ``names`` (``"x y z"``); InputFileError naming the line otherwise."""
    parts = line.replace(",", " ").split()
    want = len(names.split())
    shown = raw if len(raw) <= 80 else raw[:77] + "..."  # a whole file on one line: its start
    if len(parts) != want:
        raise InputFileError(
            path, f"line {lineno}: expected {want} numbers '{names}', got {len(parts)}: {shown!r}"
        )
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise InputFileError(path, f"line {lineno}: cannot parse numbers in {shown!r}") from None


def _read_txt(path: Path) -> np.ndarray:
    rows = []
    for lineno, raw in enumerate(_read_text(path).splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            rows.append(_numbers(path, lineno, raw, line, "x y z"))
    if not rows:
        raise InputFileError(path, "no landmarks in the file")
    return np.asarray(rows, dtype=np.float64)


def _read_pp(path: Path) -> np.ndarray:
    """The points of a MeshLab ``.pp`` file, ordered by name when the names are the numbers
    0..N-1 or 1..N (MeshLab numbers new points from 0; NoW's files from 1), in file order
    otherwise. A point deleted and picked again in MeshLab moves to the end of the file, under
    the name given to it: its name, not its place, says which landmark it is."""
    try:
        root = ET.fromstring(_read_bytes(path))
    except ET.ParseError as exc:
        raise InputFileError(path, f"not valid MeshLab .pp XML: {exc}") from None
    rows = []
    names = []
    for k, point in enumerate(root.iter("point")):
        if point.attrib.get("active", "1").strip() == "0":  # unchecked in PickPoints
            name = point.attrib.get("name", str(k))
            raise InputFileError(
                path, f"point {k} ({name!r}) is not placed (active=0): place it in MeshLab"
            )
        try:
            rows.append([float(point.attrib[c]) for c in ("x", "y", "z")])
        except KeyError as exc:
            raise InputFileError(path, f"point {k}: missing attribute {exc.args[0]!r}") from None
        except ValueError:
            raise InputFileError(path, f"point {k}: cannot parse x/y/z") from None
        names.append(point.attrib.get("name", "").strip())
    if not rows:
        raise InputFileError(path, "no <point> elements in the .pp file")
    pts = np.asarray(rows, dtype=np.float64)
    order = _numbered_order(names)
    return pts if order is None else pts[order]


def _numbered_order(names: list[str]) -> list[int] | None:
    """The order of points named 0..N-1 or 1..N (each once, in any order) by their numbers;
    None for other names (labels, numbers of another layout such as the iBUG indices of NoW's
    7 points, repeats, a point without a name): those keep the file's order."""
    try:
        numbers = [int(n) for n in names]
    except ValueError:
        return None
    n = len(numbers)
    if sorted(numbers) not in (list(range(n)), list(range(1, n + 1))):
        return None
    return sorted(range(n), key=lambda k: numbers[k])


def to_now7(landmarks: np.ndarray, path: str | Path = "<landmarks>") -> np.ndarray:
    """NoW's 7 landmarks from 7, 51 or 68 landmarks.

    Parameters
    ----------
    landmarks : (K, 3) float with K in (7, 51, 68).
    path : the file they came from (named in errors).

    Returns
    -------
    (7, 3) float64.

    Raises
    ------
    InputFileError
        Another count or shape, or NaN/inf values.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim == 3 and pts.shape[0] == 1:
        pts = pts[0]
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputFileError(path, f"expected landmarks of shape (K, 3), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise InputFileError(path, "landmarks contain NaN or inf")
    if len(pts) == 7:
        return pts.copy()
    if len(pts) == 51:
        return pts[list(NOW7_FROM_51)]
    if len(pts) == 68:
        return pts[list(NOW7_FROM_68)]
    raise InputFileError(path, f"expected 7, 51 or 68 landmarks, found {len(pts)}")


def save_landmarks_txt(path: str | Path, pts: np.ndarray) -> Path:
    """Write landmarks as ``x y z`` lines (shortest exact float notation), atomically.

    Parameters
    ----------
    path : destination (``.txt`` or ``.lm7.txt``).
    pts : (K, 3) float, finite.

    Returns
    -------
    The path written.
    """
    return atomic_write_bytes(path, landmarks_text(pts).encode())


def landmarks_text(pts: np.ndarray) -> str:
    """The lines :func:`save_landmarks_txt` writes: ``x y z`` per point, shortest exact floats.

    pts : (K, 3) float, finite.
    """
    arr = as_points("save_landmarks_txt", pts, rows="K")
    return "".join(" ".join(map(repr, row)) + "\n" for row in arr.tolist())


PICKED_POINTS_SUFFIX = "_picked_points.pp"
"""What MeshLab's PickPoints tool appends to a mesh's name (without its suffix) for the file of
points it opens with the mesh and saves."""

PP_WRITER = "facehd landmarks"
"""The ``User`` name in the ``.pp`` files facehd writes; MeshLab puts the editing user's name
there when the points are saved again, so a file still carrying it was not edited by hand."""


def save_landmarks_pp(
    path: str | Path,
    pts: np.ndarray,
    mesh_name: str = "",
    *,
    first: int = 0,
    user: str = PP_WRITER,
    when: datetime | None = None,
) -> Path:
    """Write landmarks as a MeshLab picked-points file (``.pp``), atomically.

    MeshLab's PickPoints tool opens ``<mesh>_picked_points.pp`` with a mesh when it lies beside
    it; the points can then be moved and saved. The points are named by their index (``first``,
    ``first + 1``, ...), in order; :func:`load_landmarks` reads them back in the order of these
    names (a point deleted and picked again in MeshLab, which moves it to the end of the file,
    keeps its place when it is given its name again).

    The header is MeshLab's 8 lines (with its ``DateTime``), so the points start on line 8
    (0-based) as in the files MeshLab saves: the official NoW evaluation reads the 7 points of a
    scan's ``.pp`` file from lines 8-14 by position, not as XML.

    Parameters
    ----------
    path : destination.
    pts : (K, 3) float, finite.
    mesh_name : the mesh's file name, recorded in the file.
    first : name of the first point (0: iBUG indices as in facehd's 0-based tables).
    user : the ``User`` name recorded (:data:`PP_WRITER`: a file :func:`written_by_facehd`).
    when : the ``DateTime`` recorded (UTC); now when None.
    """
    from xml.sax.saxutils import quoteattr

    arr = as_points("save_landmarks_pp", pts, rows="K")
    stamp = when or datetime.now(timezone.utc)
    lines = [
        "<!DOCTYPE PickedPoints>",
        "<PickedPoints>",
        " <DocumentData>",
        f'  <DateTime time="{stamp:%H:%M:%S}" date="{stamp:%Y-%m-%d}"/>',
        f"  <User name={quoteattr(user)}/>",
        f"  <DataFileName name={quoteattr(mesh_name)}/>",
        '  <templateName name=""/>',
        " </DocumentData>",
    ]
    for k, (x, y, z) in enumerate(arr.tolist()):
        lines.append(f' <point x="{x!r}" y="{y!r}" z="{z!r}" active="1" name="{first + k}"/>')
    lines.append("</PickedPoints>")
    return atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def written_by_facehd(path: str | Path) -> bool:
    """Whether a ``.pp`` file is one facehd wrote and nobody saved again since
    (its ``User`` is :data:`PP_WRITER`)."""
    try:
        root = ET.fromstring(Path(path).read_bytes())
    except (OSError, ET.ParseError):
        return False
    user = root.find("./DocumentData/User")
    return user is not None and user.attrib.get("name") == PP_WRITER


PHOTO_LANDMARKS_SUFFIX = ".pts"
"""Suffix of the landmark file that goes with a photo: ``face.jpg`` -> ``face.pts``."""


def photo_landmarks_path(photo: str | Path) -> Path:
    """Where the landmarks of ``photo`` lie: beside it, its suffix replaced by ``.pts``."""
    return Path(photo).with_suffix(PHOTO_LANDMARKS_SUFFIX)


def load_photo_landmarks(path: str | Path) -> np.ndarray:
    """Read a photo's 68 iBUG landmarks from a ``.pts`` file (see the module docstring).

    Returns
    -------
    (68, 2) float64 pixel coordinates ``(x = column, y = row)``, counted from 0 (the file's
    1-based values minus 1).

    Raises
    ------
    InputFileError
        Missing or unreadable file, a header or point line that does not parse, no braces, a
        point count other than the header's ``n_points`` or other than 68, NaN/inf values.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "landmark file does not exist")
    text = _read_text(path)
    header: dict[str, str] = {}
    rows: list[list[float]] = []
    state = "header"
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("//"):
            continue
        if state == "header":
            if line == "{":
                state = "points"
            elif ":" in line:
                key, value = line.split(":", 1)
                header[key.strip().lower()] = value.strip()
            else:
                raise InputFileError(path, f"line {lineno}: expected 'key: value' or '{{'")
        elif state == "points":
            if line == "}":
                state = "done"
                continue
            rows.append(_numbers(path, lineno, raw, line, "x y"))
        else:
            raise InputFileError(path, f"line {lineno}: text after the closing '}}'")
    if state != "done":
        raise InputFileError(path, "not an iBUG .pts file (no '{ ... }' block of points)")
    if "n_points" in header:
        try:
            declared = int(header["n_points"])
        except ValueError:
            raise InputFileError(
                path, f"n_points is not a number: {header['n_points']!r}"
            ) from None
        if declared != len(rows):
            raise InputFileError(path, f"n_points says {declared}, the file holds {len(rows)}")
    if len(rows) != 68:
        raise InputFileError(path, f"expected 68 iBUG landmarks, found {len(rows)}")
    pts = np.asarray(rows, dtype=np.float64) - 1.0
    if not np.isfinite(pts).all():
        raise InputFileError(path, "landmarks contain NaN or inf")
    return pts


def save_photo_landmarks(path: str | Path, pts: np.ndarray) -> Path:
    """Write a photo's landmarks ``(K, 2)`` (0-based pixels) as an iBUG ``.pts`` file (1-based),
    atomically, in the shortest exact float notation. Returns the path written."""
    arr = as_points("save_photo_landmarks", pts, dim=2, rows="K") + 1.0
    lines = ["version: 1", f"n_points: {len(arr)}", "{"]
    lines += [f"{x!r} {y!r}" for x, y in arr.tolist()]
    lines.append("}")
    return atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
