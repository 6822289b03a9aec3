"""The FaceScape evaluator's per-method loaders: each method's own output files, placed in the
evaluation camera.

The official evaluator (``facescape/benchmark/code/pred_loader.py``, picked by
``load_dispatcher[method]`` in ``evaluator.py``) reads every published method's native files
and moves them into the frame of the generic loader (:func:`benchmarks.facescape.
place_image_prediction`): wild images, the normalised orthographic frame (the 256-px image
spans ``[-1, 1]``, ``z`` shifted to mean -2); lab images, the approximate perspective
placement with a face height of 3 (pupil-distance units). The runner then multiplies by the
image's pupil scale (wild) or the standard pupil distance (lab) as for the generic loader.

Each loader here (:meth:`FaceScapeLoader.load`: ``load(folder, name, focal) -> Mesh``, ``focal``
None for wild, the lab image's focal length in pixels otherwise) reads the image's mesh by its
file patterns and places it with its method's ``place_*`` function, which reads the method's
other files and reproduces its official counterpart's arithmetic, quirks included: the face
winding flips of SADRNet, DF2Net and LAP, the integer truncations of Deep3DFaceRec's crop, the
weak-perspective approximations of the perspective methods (extreme3dface, MGCNet, RingNet,
LAP: scaled by focal length over mean depth). Meshes are read as the official
``load_ori_mesh`` reads them (file order, nothing merged). Where the official loaders return
None on any failure (scored as missing), a missing or malformed file here raises
:class:`facehd.errors.InputFileError` naming the file and the problem.

``.npy`` files holding pickled objects (DECA's and facescape_deep's ``_tform.npy``: a
scikit-image ``SimilarityTransform``; RingNet's ``<name>.npy``: a dict) are read by
:func:`read_npy`, whose unpickler builds numpy arrays and a stand-in for scikit-image's
transforms (its pickled state: ``params``), and refuses every other class.

:data:`LOADERS` maps the official names (their spelling) and ``generic`` to
:class:`FaceScapeLoader`.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.facescape import (
    RENDER_SIZE,
    place_image_prediction,
    place_orthographic,
    unit_face_width,
    with_render_bias,
)
from facehd.errors import DegenerateInputError, InputFileError
from facehd.mesh import Mesh, load_mesh

__all__ = [
    "FaceScapeLoader",
    "LOADERS",
    "DEFAULT_LOADER",
    "get_loader",
    "read_npy",
    "PickledTransform",
]

#: The loader of ``facehd bench`` without ``--loader``: today's image-aligned format.
DEFAULT_LOADER = "generic"

_HALF = RENDER_SIZE / 2  # 128: pixels to the normalised frame
#: The official ``R_pers2ortho``: the OpenCV camera (``y`` down, looking down ``+z``) to the
#: orthographic one (``y`` up, looking down ``-z``), and back (it is its own inverse).
_FLIP_YZ = np.array([1.0, -1.0, -1.0])
_FLIP_X = np.array([-1.0, 1.0, 1.0])  # the official R_gl2ortho


# ------------------------------------------------------------------------------------------
# files


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise InputFileError(path, "file does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputFileError(path, f"unreadable JSON ({exc})") from exc


def _json_entry(path: Path, name: str) -> Any:
    """The entry of image ``name`` in a JSON dict shared by all images."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise InputFileError(path, "expected a JSON object keyed by image name")
    if name not in data:
        raise InputFileError(path, f"has no entry for image {name!r}")
    return data[name]


def _floats(path: Path, value: Any, what: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``value`` as finite float64 (of ``shape`` when given), else an error naming ``path``."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputFileError(path, f"{what}: expected numbers, got {value!r:.80}") from exc
    if shape is not None and arr.shape != shape:
        raise InputFileError(path, f"{what}: expected shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputFileError(path, f"{what}: NaN or infinite values")
    return arr


def _scalar(path: Path, value: Any, what: str) -> float:
    """A number, also written as a one-element list (as numpy's ``float()`` accepts)."""
    arr = _floats(path, value, what)
    if arr.size != 1:
        raise InputFileError(path, f"{what}: expected one number, got shape {arr.shape}")
    return float(arr.reshape(()))


class PickledTransform:
    """What a pickled scikit-image geometric transform is read as: its pickled state (the
    3 x 3 ``params`` matrix and whatever else it held), without scikit-image."""

    params: Any

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (__dict__, __slots__ state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(
                f"a scikit-image transform's state: expected a dict, got {type(state).__name__}"
            )
        self.__dict__.update(state)


def _numpy_classes() -> dict[tuple[str, str], Any]:
    reconstruct = np.empty(0).__reduce__()[0]  # the installed numpy's _reconstruct
    scalar = np.float64(0).__reduce__()[0]  # ... and its scalar constructor
    allowed: dict[tuple[str, str], Any] = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x, 2.x
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds numpy arrays, scalars and dtypes, and :class:`PickledTransform` for
    scikit-image's ``*Transform`` classes; refuses every other class (a pickle can run any
    callable it names)."""

    _allowed = _numpy_classes()

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is not None:
            return found
        if (module == "skimage" or module.startswith("skimage.")) and name.endswith("Transform"):
            return PickledTransform
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name} (only numpy arrays and scikit-image "
            "transforms are read)"
        )


def read_npy(path: str | Path) -> np.ndarray:
    """An ``.npy`` file, also one of pickled objects, read safely.

    Object arrays (``np.save`` of a dict, of a scikit-image transform) are unpickled with
    Python 2 strings read as latin-1 (as ``np.load(..., encoding="latin1")``), building numpy
    arrays and :class:`PickledTransform` only: any other class is refused.

    Raises
    ------
    InputFileError
        The file is missing, no ``.npy`` file, or pickles a class that is not read.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "file does not exist")
    fmt = np.lib.format
    try:
        with path.open("rb") as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                _, _, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                _, _, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            if dtype.hasobject:
                arr = _RestrictedUnpickler(f, encoding="latin1").load()
                if not isinstance(arr, np.ndarray):
                    raise ValueError(f"the pickle holds a {type(arr).__name__}, not an array")
                return arr
            f.seek(0)
            return fmt.read_array(f, allow_pickle=False)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise InputFileError(path, f"unreadable .npy file ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - a malformed pickle raises anything
        raise InputFileError(path, f"unreadable .npy file ({type(exc).__name__}: {exc})") from exc


def _item(path: Path, what: str) -> Any:
    """The object of a one-element object array (the official ``np.load(...).item()``)."""
    arr = read_npy(path)
    if arr.size != 1 or not arr.dtype.hasobject:
        raise InputFileError(
            path, f"expected {what}, got an array of {arr.dtype}, shape {arr.shape}"
        )
    return arr.reshape(()).item()


_TFORM = "a pickled scikit-image transform (with its 3x3 params matrix)"


def _tform_params(path: Path) -> np.ndarray:
    """The 3 x 3 ``params`` of a pickled scikit-image transform (DECA, facescape_deep)."""
    tform = _item(path, _TFORM)
    if not isinstance(tform, PickledTransform) or "params" not in vars(tform):
        raise InputFileError(path, f"expected {_TFORM}, got a {type(tform).__name__}")
    params = _floats(path, tform.params, "params", (3, 3))
    if abs(np.linalg.det(params)) < 1e-12:
        raise InputFileError(path, "params is singular (no inverse warp)")
    return params


# ------------------------------------------------------------------------------------------
# shared steps


def _ortho_tail(vertices: np.ndarray, faces: np.ndarray, focal: float | None) -> Mesh:
    """From the normalised orthographic frame to the evaluation camera (wild render bias, or
    lab "orthogonal to perspective" and face width)."""
    return Mesh(place_orthographic(vertices, focal), faces)


def _refocus(v: np.ndarray, ratio: float) -> np.ndarray:
    """The official "scale to fit focal length": ``v`` scaled by ``ratio`` about its mean depth
    (``z``'s mean kept)."""
    mean_z = v[:, 2].mean()
    v = v.copy()
    v[:, 2] -= mean_z
    v *= ratio
    v[:, 2] += mean_z
    return v


def _perspective_lab(v: np.ndarray, method_focal: float, focal: float) -> np.ndarray:
    """Lab tail of the perspective methods (OpenCV camera): re-focused from the method's focal
    length to the image's, then face width."""
    return unit_face_width(_refocus(v, method_focal / focal))


def _perspective_wild(v: np.ndarray, method_focal: float, *, opencv: bool) -> np.ndarray:
    """Wild tail of the perspective methods ("perspective to orthogonal"): times
    ``method_focal / 128`` over the mean depth, then (OpenCV camera) ``y``, ``z`` negated, and
    the render bias. An OpenGL camera (``opencv`` False, looking down ``-z``) divides by the
    absolute mean depth and keeps its axes."""
    mean_z = v[:, 2].mean()
    if mean_z == 0:
        raise DegenerateInputError("the prediction's mean depth is 0 (at the camera)")
    if opencv:
        v = v * ((method_focal / _HALF) / mean_z) * _FLIP_YZ
    else:
        v = v * (method_focal / abs(mean_z)) / _HALF
    return with_render_bias(v)


def _warp_xy(xy: np.ndarray, m_inv: np.ndarray, unit: float) -> np.ndarray:
    """What ``cv2.warpAffine`` does to points: ``M_inv`` of image pixels, on points in units of
    ``unit`` pixels (``y`` down)."""
    return xy @ m_inv[:2, :2].T + m_inv[:2, 2] / unit


def _rx(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _flip_winding(faces: np.ndarray) -> np.ndarray:
    return faces[:, [1, 0, 2]]


# ------------------------------------------------------------------------------------------
# the loaders (in the official dispatcher's order)


def place_image_aligned(mesh: Mesh, folder: Path, name: str, focal: float | None) -> Mesh:
    """generic, PRNet and 3DDFA_V2: the image-aligned format (``x``, ``y`` pixels of the 256-px
    image with ``y`` up, ``z`` towards the viewer), placed by
    :func:`benchmarks.facescape.place_image_prediction`."""
    return Mesh(place_image_prediction(mesh.vertices, focal), mesh.faces)


def place_facescape_opti(mesh: Mesh, folder: Path, name: str, focal: float | None) -> Mesh:
    """facescape_opti: ``<name>.obj``, ``x``, ``y`` in pixels about the image centre (128)
    after the shift, all divided by 128: the image-aligned format again."""
    v = mesh.vertices.copy()
    v[:, :2] -= _HALF
    v /= _HALF
    return _ortho_tail(v, mesh.faces, focal)


def place_facescape_deep(mesh: Mesh, folder: Path, name: str, focal: float | None) -> Mesh:
    """facescape_deep: ``<name>.obj`` in the warped (aligned) 256-px image's pixels, and
    ``<name>_tform.npy``, the scikit-image transform of that warp; its inverse moves ``x``,
    ``y`` back to the photo, ``z`` scaled by the inverse's scale."""
    m_inv = np.linalg.inv(_tform_params(folder / f"{name}_tform.npy"))
    scale = float(np.hypot(m_inv[0, 0], m_inv[0, 1]))
    v = mesh.vertices / _HALF - 1.0  # all three: z's offset is dropped later
    v = v * _FLIP_YZ  # to image coordinates (y down) ...
    v[:, :2] += 1.0
    v[:, :2] = _warp_xy(v[:, :2], m_inv, _HALF)
    v[:, :2] -= 1.0
    v = v * _FLIP_YZ  # ... and back
    v[:, 2] *= scale
    return _ortho_tail(v, mesh.faces, focal)


def place_deca(mesh: Mesh, folder: Path, name: str, focal: float | None) -> Mesh:
    """DECA: ``<name>_detail.obj`` in the 224-px crop's normalised frame before the camera,
    ``<name>_cam.npy`` (``[[s, tx, ty]]``, the orthographic camera) and ``<name>_tform.npy``
    (the crop's scikit-image transform)."""
    cam_path = folder / f"{name}_cam.npy"
    cam = read_npy(cam_path)
    if cam.ndim != 2 or cam.shape[1] != 3 or len(cam) < 1:
        raise InputFileError(cam_path, f"expected the camera [[s, tx, ty]], got shape {cam.shape}")
    cam = _floats(cam_path, cam[0], "camera")
    m_inv = np.linalg.inv(_tform_params(folder / f"{name}_tform.npy"))
    scale = float(np.hypot(m_inv[0, 0], m_inv[0, 1]))
    v = mesh.vertices.copy()
    v[:, :2] += cam[1:]
    v *= cam[0]
    v = v * _FLIP_YZ
    v[:, :2] += 1.0
    v[:, :2] = _warp_xy(v[:, :2], m_inv, 112.0)
    v[:, :2] -= RENDER_SIZE / 224.0
    v = v * _FLIP_YZ
    v *= 224.0 / RENDER_SIZE
    v[:, 2] *= scale
    return _ortho_tail(v, mesh.faces, focal)


def place_extreme3dface(mesh: Mesh, folder: Path, name: str, focal: float | None) -> Mesh:
    """extreme3dface: ``<name>_withBump_aligned.ply`` (OpenGL camera, 500 px focal length, in
    the crop's pixels) and ``extreme3d_dict.json`` (``name: [left, top, width, height]`` of the
    crop)."""
    dict_path = folder / "extreme3d_dict.json"
    entry = _json_entry(dict_path, name)
    if not isinstance(entry, list) or len(entry) < 4:
        raise InputFileError(dict_path, f"{name}: expected [left, top, width, height]")
    bl, bt, nw, nh = (_scalar(dict_path, x, f"{name}[{i}]") for i, x in enumerate(entry[:4]))
    v = mesh.vertices * ((nw + nh) / 2.0 / 500.0)
    comp = (nw + nh) / 4.0 - 127.5
    v[:, 0] += bl + comp
    v[:, 1] -= bt + comp
    if focal is not None:
        return Mesh(_perspective_lab(v * _FLIP_YZ, 500.0, focal), mesh.faces)
    return Mesh(_perspective_wild(v, 500.0, opencv=False), mesh.faces)


def _read_mgcnet_camera(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(Euler angles, translation, focal length) of MGCNet's ``_cam.txt``: line 3 the 3 x 3
    intrinsics, line 5 the rotation (3 angles) and translation, comma-separated."""
    if not path.is_file():
        raise InputFileError(path, "file does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"unreadable ({exc})") from exc
    if len(lines) < 5:
        raise InputFileError(path, f"expected 5 lines or more, found {len(lines)}")

    def numbers(line: int, count: int, what: str) -> np.ndarray:
        try:
            values = [float(x) for x in lines[line].split(",")]
        except ValueError as exc:
            raise InputFileError(path, f"line {line + 1} ({what}): {exc}") from exc
        return _floats(path, values, f"line {line + 1} ({what})", (count,))

    intrinsics = numbers(2, 9, "intrinsics").reshape(3, 3)
    extrinsics = numbers(4, 6, "rotation and translation")
    f = float(intrinsics[0, 0])
    if not f > 0:
        raise InputFileError(path, f"line 3: focal length {f:g} is not positive")
    return extrinsics[:3], extrinsics[3:], f


def place_mgcnet(mesh: Mesh, folder: Path, name: str, focal: float | None) -> Mesh:
    """MGCNet: ``<name>.ply`` (the model's frame), ``<name>_cam.txt`` (intrinsics on line 3,
    Euler angles and translation on line 5) and ``<name>_Minv.npy`` (the inverse of the
    crop's affine warp), in an OpenCV camera."""
    minv_path = folder / f"{name}_Minv.npy"
    m_inv = read_npy(minv_path)
    if m_inv.ndim != 2 or m_inv.shape[0] < 2 or m_inv.shape[1] != 3:
        raise InputFileError(minv_path, f"expected a 2x3 or 3x3 affine matrix, got {m_inv.shape}")
    m_inv = _floats(minv_path, m_inv, "Minv")
    scale = float(np.hypot(m_inv[0, 0], m_inv[1, 0]))
    if not scale > 0:
        raise InputFileError(minv_path, "the warp has no scale")
    angles, trans, f = _read_mgcnet_camera(folder / f"{name}_cam.txt")
    rot = _rx(angles[2]) @ _ry(angles[1]) @ _rz(angles[0])  # the official rotMtx_eular(flip)
    v = mesh.vertices @ rot.T + trans
    # to the photo (an affine warp of the 224-px crop, at the mean depth)
    depth = v[:, 2].mean()
    v[:, :2] += 114.0 / f * depth
    v[:, :2] = v[:, :2] @ m_inv[:2, :2].T + m_inv[:2, 2] / f * depth
    v[:, :2] -= 114.0 / f * depth
    v[:, :2] /= scale
    v[:, 2] -= depth * (1.0 - 1.0 / scale)  # the warp's scale as a change of depth
    v[:, :2] -= (_HALF - 112.0) / f * v[:, 2].mean()  # principal point 112 -> 128
    if focal is not None:
        return Mesh(_perspective_lab(v, f, focal), mesh.faces)
    return Mesh(_perspective_wild(v, f, opencv=True), mesh.faces)


def place_ringnet(mesh: Mesh, folder: Path, name: str, focal: float | None) -> Mesh:
    """RingNet: ``<name>.obj`` (FLAME, model frame) and ``<name>.npy``, a pickled dict whose
    ``cam`` is ``[f_norm, cx, cy]`` (weak perspective in the 224-px crop)."""
    npy = folder / f"{name}.npy"
    what = "a pickled dict with 'cam' ([f_norm, cx, cy])"
    params = _item(npy, what)
    if not isinstance(params, dict) or "cam" not in params:
        raise InputFileError(npy, f"expected {what}, got a {type(params).__name__}")
    cam = _floats(npy, params["cam"], "cam").reshape(-1)
    if cam.size != 3:
        raise InputFileError(npy, f"cam: expected 3 numbers [f_norm, cx, cy], got {cam.size}")
    f_norm, cx, cy = cam
    v = mesh.vertices + np.array([cx, cy, RENDER_SIZE / 224.0])
    if focal is not None:
        return Mesh(_perspective_lab(v, f_norm * _HALF, focal), mesh.faces)
    return Mesh(_perspective_wild(v, f_norm * _HALF, opencv=True), mesh.faces)


def place_sadrnet(mesh: Mesh, folder: Path, name: str, focal: float | None) -> Mesh:
    """SADRNet: ``<name>.obj`` in the image's ``[0, 2]`` frame with ``y`` down (so ``y``
    negated and the face winding flipped)."""
    v = mesh.vertices.copy()
    v[:, :2] -= 1.0
    v[:, 1] *= -1.0
    return _ortho_tail(v, _flip_winding(mesh.faces), focal)


def _udl_rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """The official ``calc_trans_matrix``'s rotation: x, y, z rotations by minus the angles."""
    return _rx(-pitch) @ _ry(-yaw) @ _rz(-roll)


def place_udl(mesh: Mesh, folder: Path, name: str, focal: float | None) -> Mesh:
    """UDL: ``<name>_fine.ply`` (model frame), ``<name>_pose.npy`` (first row: pitch, yaw,
    roll, tx, ty, log-scale) and ``<name>_crop.npy`` (start x, end x, start y, end y and two
    paddings of the 300-px crop)."""
    pose_path, crop_path = folder / f"{name}_pose.npy", folder / f"{name}_crop.npy"
    pose = read_npy(pose_path)
    if pose.ndim < 1 or len(pose) < 1:
        raise InputFileError(pose_path, f"expected the pose as its first row, got {pose.shape}")
    pose = _floats(pose_path, pose[0], "pose", (6,))
    crop = read_npy(crop_path)
    if crop.ndim != 1 or len(crop) != 6:
        raise InputFileError(crop_path, f"expected 6 numbers, got shape {crop.shape}")
    st_x, en_x, st_y, en_y, _, _ = _floats(crop_path, crop, "crop")
    pitch, yaw, roll, tx, ty, log_scale = pose
    rot = _udl_rotation(pitch, yaw, roll) * (np.exp(log_scale) * 1.5)
    v = mesh.vertices @ rot.T + np.array([tx, ty, -200.0])
    v *= (en_x - st_x) / 300.0
    v[:, 0] += (st_x + en_x) / 2.0 - _HALF
    v[:, 1] -= (st_y + en_y) / 2.0 - _HALF
    return _ortho_tail(v / _HALF, mesh.faces, focal)


def place_df2net(mesh: Mesh, folder: Path, name: str, focal: float | None) -> Mesh:
    """DF2Net: ``<name>.obj`` in the 512-px crop's pixels (rows first) and ``DF2Net_coors.json``
    (``name: [photo shape, left, top]``); the face winding is flipped."""
    json_path = folder / "DF2Net_coors.json"
    entry = _json_entry(json_path, name)
    if not isinstance(entry, list) or len(entry) < 3:
        raise InputFileError(json_path, f"{name}: expected [shape, x_r, y_r]")
    shape = _floats(json_path, entry[0], f"{name} shape")
    if shape.ndim != 1 or len(shape) < 2:
        raise InputFileError(json_path, f"{name} shape: expected [height, width, ...]")
    x_r = _scalar(json_path, entry[1], f"{name} x_r")
    h, w = shape[0], shape[1]
    v = mesh.vertices / 512.0
    v = np.stack([v[:, 1], -v[:, 0], v[:, 2]], axis=1)  # rows, columns -> x, y
    v[:, 1] += 1.0
    v[:, 0] = v[:, 0] * w + x_r
    v[:, 1] = v[:, 1] * h
    v[:, 2] = v[:, 2] * (h + w) / 2.0
    v /= _HALF
    v[:, :2] -= 1.0
    return _ortho_tail(v, _flip_winding(mesh.faces), focal)


def place_deep3dfacerec(mesh: Mesh, folder: Path, name: str, focal: float | None) -> Mesh:
    """Deep3DFaceRec: ``<name>.obj`` (camera at ``z = 10``, 1015 px focal length in the 224-px
    crop) and ``Deep3D_cons_dict.json`` (``name: [w0, h0, scale, t0, t1]``, the crop's
    alignment parameters)."""
    json_path = folder / "Deep3D_cons_dict.json"
    entry = _json_entry(json_path, name)
    if not isinstance(entry, list) or len(entry) < 5:
        raise InputFileError(json_path, f"{name}: expected [w0, h0, scale, t0, t1]")
    w0, h0, scale, t0, t1 = (_scalar(json_path, x, f"{name}[{i}]") for i, x in enumerate(entry[:5]))
    if not scale > 0:
        raise InputFileError(json_path, f"{name}: scale {scale:g} is not positive")
    target = 224.0
    w = np.trunc(w0 * scale)  # the official int32 casts truncate
    h = np.trunc(h0 * scale)
    left = np.trunc(w / 2 - target / 2 + (t0 - w0 / 2) * scale)
    up = np.trunc(h / 2 - target / 2 + (h0 / 2 - t1) * scale)
    depth = abs(mesh.vertices[:, 2].mean() - 10.0)
    if not depth > 0:
        raise InputFileError(folder / f"{name}.obj", "its mean depth is the camera's (z = 10)")
    v = mesh.vertices * (1015.0 / 112.0 / depth)
    v[:, :2] += 1.0
    v *= target / 2
    v[:, 0] += left
    v[:, 1] -= up
    v /= scale
    v[:, 1] = RENDER_SIZE - 1 - (np.round(target / scale) - 1 - v[:, 1])
    v /= _HALF
    v[:, :2] -= 1.0
    return _ortho_tail(v, mesh.faces, focal)


def _loadtxt(path: Path, what: str, min_shape: tuple[int, int]) -> np.ndarray:
    if not path.is_file():
        raise InputFileError(path, "file does not exist")
    try:
        arr = np.loadtxt(path, ndmin=2)
    except (OSError, ValueError) as exc:
        raise InputFileError(path, f"unreadable {what} ({exc})") from exc
    if arr.shape[0] < min_shape[0] or arr.shape[1] < min_shape[1]:
        raise InputFileError(
            path, f"expected a {what} of {min_shape[0]}x{min_shape[1]} or more, got {arr.shape}"
        )
    return _floats(path, arr, what)


def place_dfdn(mesh: Mesh, folder: Path, name: str, focal: float | None) -> Mesh:
    """DFDN: ``<name>.obj`` (model frame), ``<name>.affine_from_ortho.txt`` (scale in its first
    row's norm, translation in the last column) and ``<name>.modelview.txt`` (rotation)."""
    affine = _loadtxt(folder / f"{name}.affine_from_ortho.txt", "affine matrix", (2, 4))
    view = _loadtxt(folder / f"{name}.modelview.txt", "modelview matrix", (3, 3))
    scale = float(np.linalg.norm(affine[0, :3]))
    v = mesh.vertices @ view[:3, :3].T * scale
    v[:, 1] *= -1.0
    v[:, :2] += affine[:2, 3]
    v[:, :2] -= _HALF
    v /= _HALF
    v[:, 1] *= -1.0
    return _ortho_tail(v, mesh.faces, focal)


def place_lap(mesh: Mesh, folder: Path, name: str, focal: float | None) -> Mesh:
    """LAP: ``<name>.obj`` (OpenGL camera of the 128-px crop) and ``<name>_cam.json`` (``[K,
    Rt, [crop centre row, column, crop scale]]``); ``x`` is mirrored and the face winding
    flipped."""
    cam_path = folder / f"{name}_cam.json"
    cam = _read_json(cam_path)
    if not isinstance(cam, list) or len(cam) < 3:
        raise InputFileError(cam_path, "expected [K, Rt, [centre row, centre column, scale]]")
    k = _floats(cam_path, cam[0], "K", (3, 3))
    rt = _floats(cam_path, cam[1], "Rt", (3, 4))
    crop = _floats(cam_path, cam[2], "crop")
    if crop.ndim != 1 or len(crop) < 3:
        raise InputFileError(cam_path, "crop: expected [centre row, centre column, scale]")
    f = float(k[0, 0])
    centre, crop_scale = crop[:2], float(crop[2])
    if not crop_scale > 0:
        raise InputFileError(cam_path, f"crop scale {crop_scale:g} is not positive")
    along_z = np.array([0.0, 0.0, 1.0])
    v = (mesh.vertices - along_z) @ rt[:, :3].T + along_z  # rotated about (0, 0, 1)
    v += (-along_z - rt[:, 3]) * 100.0
    v[:, 0] *= -1.0
    faces = _flip_winding(mesh.faces)
    v[:, 2] -= v[:, 2].mean() * (1.0 - 1.0 / crop_scale)  # the crop's scale as depth
    f_new = f / 128.0 * RENDER_SIZE
    shift = 128 // 2 * (2 - (crop_scale * RENDER_SIZE) / 128) / f_new * v[:, 2].mean()
    v[:, 0] += shift
    v[:, 1] -= shift
    delta = (1.0 - crop_scale) * RENDER_SIZE // 2  # floor division, as the official code
    depth = abs(v[:, 2].mean())
    v[:, 0] += (delta + centre[1] - 128) / f_new * depth
    v[:, 1] -= (delta + centre[0] - 128) / f_new * depth
    if focal is not None:
        return Mesh(_perspective_lab(v * _FLIP_YZ, 2.0 * f, focal), faces)
    return Mesh(_perspective_wild(v * _FLIP_X, 2.0 * f, opencv=True), faces)


def place_rafare(mesh: Mesh, folder: Path, name: str, focal: float | None) -> Mesh:
    """RAFaRe: ``<name>.obj`` already in the normalised orthographic frame (the image spans
    ``[-1, 1]``, ``y`` up)."""
    return _ortho_tail(mesh.vertices, mesh.faces, focal)


# ------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class FaceScapeLoader:
    """One official loader: how to place a method's native files."""

    name: str
    """The official name (``load_dispatcher``'s key), or ``generic``."""
    place: Callable[[Mesh, Path, str, float | None], Mesh]
    """``place(mesh, folder, image name, focal or None) -> Mesh`` in the evaluation camera,
    reading the :attr:`extra` files it needs from ``folder``."""
    mesh: tuple[str, ...]
    """The mesh file, ``{name}`` for the image's name; the first that exists is read."""
    extra: tuple[str, ...] = ()
    """The other files read (``{name}`` for the image's name; a name without it is one file
    for all images)."""

    @property
    def files(self) -> tuple[str, ...]:
        """Every file pattern read (the mesh's alternatives first)."""
        return (*self.mesh, *self.extra)

    def mesh_path(self, folder: Path, name: str) -> Path | None:
        """The mesh of image ``name`` in ``folder``, None when it has none."""
        for pattern in self.mesh:
            path = folder / pattern.format(name=name)
            if path.is_file():
                return path
        return None

    def expected(self, folder: Path, name: str) -> list[Path]:
        """Where the mesh of image ``name`` is looked for."""
        return [folder / p.format(name=name) for p in self.mesh]

    def load(
        self, folder: Path, name: str, focal: float | None, mesh_path: Path | None = None
    ) -> Mesh:
        """Image ``name``'s prediction in ``folder`` (its :attr:`mesh` file, ``mesh_path`` when
        the caller found it already with :meth:`mesh_path`, then its :attr:`extra` files),
        placed in the evaluation camera (``focal`` None for wild, the lab image's focal length
        in pixels otherwise). A mesh not there is an InputFileError naming the first pattern's
        file."""
        path = mesh_path or self.mesh_path(folder, name) or self.expected(folder, name)[0]
        return self.place(load_mesh(path), folder, name, focal)


def _loader(
    name: str,
    place: Callable[[Mesh, Path, str, float | None], Mesh],
    mesh: str | tuple[str, ...] = "{name}.obj",
    *extra: str,
) -> FaceScapeLoader:
    return FaceScapeLoader(name, place, (mesh,) if isinstance(mesh, str) else mesh, extra)


#: Loader by name: ``generic`` (the default) and the official ``load_dispatcher``'s keys.
LOADERS: dict[str, FaceScapeLoader] = {
    loader.name: loader
    for loader in (
        _loader(DEFAULT_LOADER, place_image_aligned, ("{name}.obj", "{name}.ply")),
        _loader("facescape_opti", place_facescape_opti),
        _loader("facescape_deep", place_facescape_deep, "{name}.obj", "{name}_tform.npy"),
        _loader("3DDFA_V2", place_image_aligned),
        _loader("DECA", place_deca, "{name}_detail.obj", "{name}_tform.npy", "{name}_cam.npy"),
        _loader(
            "extreme3dface",
            place_extreme3dface,
            "{name}_withBump_aligned.ply",
            "extreme3d_dict.json",
        ),
        _loader("MGCNet", place_mgcnet, "{name}.ply", "{name}_Minv.npy", "{name}_cam.txt"),
        _loader("PRNet", place_image_aligned),
        _loader("RingNet", place_ringnet, "{name}.obj", "{name}.npy"),
        _loader("SADRNet", place_sadrnet),
        _loader("UDL", place_udl, "{name}_fine.ply", "{name}_pose.npy", "{name}_crop.npy"),
        _loader("DF2Net", place_df2net, "{name}.obj", "DF2Net_coors.json"),
        _loader("Deep3DFaceRec", place_deep3dfacerec, "{name}.obj", "Deep3D_cons_dict.json"),
        _loader(
            "DFDN",
            place_dfdn,
            "{name}.obj",
            "{name}.affine_from_ortho.txt",
            "{name}.modelview.txt",
        ),
        _loader("LAP", place_lap, "{name}.obj", "{name}_cam.json"),
        _loader("RAFaRe", place_rafare),
    )
}


def get_loader(name: str) -> FaceScapeLoader:
    """The loader of that (official) name.

    Raises
    ------
    ValueError
        No loader has that name (the message lists them).
    """
    try:
        return LOADERS[name]
    except KeyError:
        raise ValueError(
            f"unknown FaceScape loader {name!r}; known: {', '.join(LOADERS)}"
        ) from None
