"""The Basel Face Model as distributed with Deep3DFaceRecon (``BFM_model_front.mat``).

Fields read (MATLAB file, scipy ``loadmat``; a v7.3/HDF5 file is read with h5py instead):

=============  ============  ==========================================================
field          shape         meaning
=============  ============  ==========================================================
meanshape      (1, 3V)       mean shape, x y z per vertex, 1 unit = 1 dm (100 mm)
idBase         (3V, K_id)    identity basis (already scaled by its eigenvalues)
exBase         (3V, K_exp)   expression basis
meantex        (1, 3V)       mean albedo, RGB per vertex, 0–255
texBase        (3V, K_tex)   albedo basis, 0–255 per coefficient
tri            (F, 3)        triangles, 1-based
keypoints      (1, 68)       iBUG-68 landmark vertex indices, 1-based
point_buf      (V, 8)        optional, not read: normals sum the unit normals of each
                             vertex's faces in ``tri`` (``normal_weighting`` "uniform"),
                             as Deep3DFaceRecon sums those ``point_buf`` lists
skinmask, ...  (V,)          optional, not used
=============  ============  ==========================================================

The released file has V = 35,709, K_id = 80, K_exp = 64, K_tex = 80, F = 70,789; any V and K are
accepted as long as the shapes agree. As in Deep3DFaceRecon, the mean shape is re-centred on its
mean vertex. The bases are used as they are (the BFM's bases carry some global motion; only
facehd-synth has it projected out). All stds are 1: Deep3DFaceRecon's coefficients are used
unnormalised.

UV layout: HRN's per-vertex UVs, a ``(V, 2)`` array in [0, 1] in a ``.npy`` or whitespace-separated
``.txt`` file (:func:`load_uv_layout`).

Region masks come from the landmark geometry of the re-centred mean shape
(:func:`~facehd.morphable.model.regions_from_landmarks`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from facehd.errors import InputFileError
from facehd.morphable.model import MorphableModel, regions_from_landmarks

__all__ = [
    "BFM_UNIT_TO_MM",
    "BFMSizes",
    "REQUIRED_FIELDS",
    "bfm_sizes",
    "load_bfm",
    "load_uv_layout",
    "read_mat_fields",
]

#: Millimetres per BFM unit (the Deep3DFaceRecon BFM is in decimetres).
BFM_UNIT_TO_MM = 100.0
#: Fields a BFM ``.mat`` file must hold.
REQUIRED_FIELDS = ("meanshape", "idBase", "exBase", "meantex", "texBase", "tri", "keypoints")


def read_mat_fields(path: str | Path) -> dict[str, np.ndarray]:
    """Read the numeric arrays of a MATLAB ``.mat`` file (v5 via scipy, v7.3 via h5py).

    Raises :class:`~facehd.errors.InputFileError` when the file is missing or is not a MATLAB
    file. HDF5 arrays are transposed back to MATLAB's (row, column) order.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "file not found")
    import scipy.io

    try:
        raw = scipy.io.loadmat(str(path))
    except NotImplementedError:  # MATLAB v7.3
        return _read_hdf5_mat(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
        try:
            import h5py

            if h5py.is_hdf5(str(path)):
                return _read_hdf5_mat(path)
        except ImportError:  # pragma: no cover - h5py is a dependency
            pass
        raise InputFileError(path, f"not a readable MATLAB .mat file ({exc})") from exc
    return {k: np.asarray(v) for k, v in raw.items() if not k.startswith("__")}


def _read_hdf5_mat(path: Path) -> dict[str, np.ndarray]:
    import h5py

    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(str(path), "r") as f:
            for k, v in f.items():
                if isinstance(v, h5py.Dataset):
                    a = np.asarray(v[()])
                    out[k] = a.T if a.ndim >= 2 else a
    except OSError as exc:
        raise InputFileError(path, f"not a readable MATLAB v7.3 (HDF5) file ({exc})") from exc
    return out


def load_uv_layout(
    path: str | Path, n_vertices: int | None = None, *, flip_v: bool = False
) -> np.ndarray:
    """Read per-vertex UVs from ``.npy`` or ``.txt``.

    Parameters
    ----------
    path : the UV file; ``(V, 2)`` numbers in [0, 1] (u right, v up).
    n_vertices : expected V (the model's vertex count), or None.
    flip_v : replace v by 1 - v (for a layout stored with v pointing down).

    Returns
    -------
    (V, 2) float64.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "UV file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            uv = np.load(path, allow_pickle=False)
        elif suffix == ".txt":
            uv = np.loadtxt(path, dtype=np.float64, ndmin=2)
        else:
            raise InputFileError(path, f"unsupported UV file type {suffix!r} (use .npy or .txt)")
    except InputFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
        raise InputFileError(path, f"cannot read UVs ({exc})") from exc
    uv = np.asarray(uv)
    if not np.issubdtype(uv.dtype, np.number):
        raise InputFileError(path, f"UVs must be numbers, got dtype {uv.dtype}")
    uv = uv.astype(np.float64)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise InputFileError(path, f"expected UVs of shape (V, 2), got {uv.shape}")
    if n_vertices is not None and uv.shape[0] != n_vertices:
        raise InputFileError(
            path, f"expected ({n_vertices}, 2) UVs to match the model's vertices, got {uv.shape}"
        )
    if not np.all(np.isfinite(uv)):
        raise InputFileError(path, "UVs contain NaN or inf")
    tol = 1e-6
    if uv.min() < -tol or uv.max() > 1 + tol:
        raise InputFileError(
            path, f"UVs must lie in [0, 1], got range [{uv.min():.4g}, {uv.max():.4g}]"
        )
    uv = np.clip(uv, 0.0, 1.0)
    if flip_v:
        uv[:, 1] = 1.0 - uv[:, 1]
    return uv


def _field(path: Path, fields: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in fields:
        raise InputFileError(
            path,
            f"missing field {name!r} (found: {sorted(fields)}); expected a BFM_model_front.mat",
        )
    a = np.asarray(fields[name])
    if not np.issubdtype(a.dtype, np.number):
        raise InputFileError(path, f"field {name!r} is not numeric (dtype {a.dtype})")
    return a


def _flat(path: Path, name: str, a: np.ndarray, size: int | None = None) -> np.ndarray:
    """A row/column vector field as 1-D (accepts (1, n), (n, 1) and (n,))."""
    if a.ndim > 2 or (a.ndim == 2 and 1 not in a.shape):
        raise InputFileError(path, f"field {name!r}: expected a vector (1, n), got {a.shape}")
    v = a.reshape(-1)
    if size is not None and v.size != size:
        raise InputFileError(path, f"field {name!r}: expected {size} values, got {v.size}")
    return v


def _basis(path: Path, name: str, a: np.ndarray, rows: int) -> np.ndarray:
    if a.ndim != 2 or a.shape[0] != rows or a.shape[1] < 1:
        raise InputFileError(path, f"field {name!r}: expected shape ({rows}, K), got {a.shape}")
    return a


def _indices(path: Path, name: str, a: np.ndarray, n: int) -> np.ndarray:
    """1-based MATLAB indices to 0-based int64, checked to lie in [1, n]."""
    if not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a)):
        raise InputFileError(path, f"field {name!r}: expected integer (1-based) indices")
    idx = a.astype(np.int64)
    if idx.size and (idx.min() < 1 or idx.max() > n):
        raise InputFileError(
            path,
            f"field {name!r}: 1-based indices must lie in [1, {n}], got [{idx.min()}, {idx.max()}]",
        )
    return idx - 1


def load_bfm(
    mat_path: str | Path,
    uv_path: str | Path,
    *,
    flip_v: bool = False,
    recenter: bool = True,
) -> MorphableModel:
    """Load Deep3DFaceRecon's ``BFM_model_front.mat`` and a UV layout as a :class:`MorphableModel`.

    Parameters
    ----------
    mat_path : the ``.mat`` file (fields in the module docstring).
    uv_path : ``(V, 2)`` UVs (``.npy`` or ``.txt``), V matching the model.
    flip_v : flip the file's v coordinate (v' = 1 - v).
    recenter : subtract the mean vertex from the mean shape (Deep3DFaceRecon does).

    Returns
    -------
    MorphableModel named ``bfm`` with ``unit_to_mm = 100``.

    Raises
    ------
    InputFileError : a missing file, a missing field, or shapes that do not agree.
    """
    mat_path = Path(mat_path)
    uv_path = Path(uv_path)
    fields = read_mat_fields(mat_path)
    raw = {name: _field(mat_path, fields, name) for name in REQUIRED_FIELDS}
    mean = _flat(mat_path, "meanshape", raw["meanshape"]).astype(np.float64)
    if mean.size == 0 or mean.size % 3:
        raise InputFileError(
            mat_path,
            f"field 'meanshape': expected 3V values, got {mean.size} (not a multiple of 3)",
        )
    v = mean.size // 3
    rows = 3 * v
    id_b = _basis(mat_path, "idBase", raw["idBase"], rows).astype(np.float64)
    ex_b = _basis(mat_path, "exBase", raw["exBase"], rows).astype(np.float64)
    tex_b = _basis(mat_path, "texBase", raw["texBase"], rows).astype(np.float64) / 255.0
    mean_tex = _flat(mat_path, "meantex", raw["meantex"], rows).astype(np.float64) / 255.0
    tri = raw["tri"]
    if tri.ndim != 2 or tri.shape[1] != 3 or tri.shape[0] < 1:
        raise InputFileError(mat_path, f"field 'tri': expected shape (F, 3), got {tri.shape}")
    faces = _indices(mat_path, "tri", tri, v)
    keypoints = _indices(
        mat_path, "keypoints", _flat(mat_path, "keypoints", raw["keypoints"], 68), v
    )
    for name, arr in (("meanshape", mean), ("idBase", id_b), ("exBase", ex_b), ("texBase", tex_b)):
        if not np.all(np.isfinite(arr)):
            raise InputFileError(mat_path, f"field {name!r} contains NaN or inf")
    uvs = load_uv_layout(uv_path, v, flip_v=flip_v)

    mean_shape = mean.reshape(v, 3)
    if recenter:
        mean_shape = mean_shape - mean_shape.mean(axis=0, keepdims=True)
    lm_mm = mean_shape[keypoints] * BFM_UNIT_TO_MM
    try:
        regions = regions_from_landmarks(mean_shape * BFM_UNIT_TO_MM, lm_mm)
    except ValueError as exc:
        raise InputFileError(mat_path, f"keypoints are degenerate ({exc})") from exc
    return MorphableModel(
        name="bfm",
        unit_to_mm=BFM_UNIT_TO_MM,
        mean_shape=mean_shape,
        id_basis=id_b.reshape(v, 3, -1),
        exp_basis=ex_b.reshape(v, 3, -1),
        mean_albedo=mean_tex.reshape(v, 3),
        albedo_basis=tex_b.reshape(v, 3, -1),
        faces=faces,
        uvs=uvs,
        landmarks68=keypoints,
        regions=regions,
        id_std=np.ones(id_b.shape[1]),
        exp_std=np.ones(ex_b.shape[1]),
        tex_std=np.ones(tex_b.shape[1]),
        description=f"BFM (Deep3DFaceRecon front) from {mat_path}, UVs from {uv_path}",
        normal_weighting="uniform",  # Deep3DFaceRecon's normals: unit face normals summed
    )


class BFMSizes(NamedTuple):
    """Sizes of a BFM ``.mat`` file, read from its header."""

    n_vertices: int
    n_id: int
    n_exp: int
    n_tex: int


def bfm_sizes(mat_path: str | Path) -> BFMSizes:
    """Vertex and component counts of a BFM ``.mat`` file without loading its arrays (v5 files;
    v7.3 files are read in full)."""
    path = Path(mat_path)
    if not path.is_file():
        raise InputFileError(path, "file not found")
    import scipy.io

    try:
        shapes = {name: tuple(shape) for name, shape, _ in scipy.io.whosmat(str(path))}
    except Exception:  # noqa: BLE001 - v7.3 or unreadable: the full reader reports the problem
        shapes = {k: v.shape for k, v in read_mat_fields(path).items()}
    for name in ("meanshape", "idBase", "exBase", "texBase"):
        if name not in shapes:
            raise InputFileError(path, f"missing field {name!r} (found: {sorted(shapes)})")
    if len(shapes["idBase"]) != 2 or len(shapes["exBase"]) != 2 or len(shapes["texBase"]) != 2:
        raise InputFileError(path, "idBase, exBase and texBase must be 2-D (3V, K) arrays")
    return BFMSizes(
        n_vertices=int(np.prod(shapes["meanshape"])) // 3,
        n_id=int(shapes["idBase"][1]),
        n_exp=int(shapes["exBase"][1]),
        n_tex=int(shapes["texBase"][1]),
    )
