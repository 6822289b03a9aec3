"""Reading checkpoints and loading state dicts with a clear account of what did not fit.

A checkpoint on disk is a ``torch.save`` dictionary. facehd reads it with
``torch.load(map_location="cpu", weights_only=True)`` (tensors, numbers, strings, lists and dicts
only; no code runs), and loads each part into a module with :func:`load_state_into`, which
compares key names and tensor shapes first and reports every missing, unexpected or mismatched
entry in one :class:`LoadReport` instead of failing on the first.

A facehd checkpoint also records the morphable model it was made with
(:func:`morphable_record`); :func:`morphable_brief` shortens that record for an error message.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from facehd.csvtext import fsync_folder
from facehd.errors import FacehdError, InputFileError

if TYPE_CHECKING:
    from facehd.morphable.model import MorphableModel

__all__ = [
    "MORPHABLE_SIZES",
    "CheckpointError",
    "LoadReport",
    "check_parts",
    "compare_state",
    "load_state_into",
    "morphable_brief",
    "morphable_record",
    "read_checkpoint",
    "save_checkpoint_atomic",
    "strip_prefix",
]

#: Prefixes that wrappers (DataParallel, DistributedDataParallel) put before every key.
WRAPPER_PREFIXES: tuple[str, ...] = ("module.",)

#: The entries of a checkpoint's morphable-model record (:func:`morphable_record`) that must
#: equal the loaded model's: its name and sizes (the fingerprint is compared with a tolerance).
MORPHABLE_SIZES: tuple[str, ...] = ("name", "n_vertices", "n_id", "n_exp", "n_tex")


class CheckpointError(FacehdError):
    """A state dict does not fit the module it is loaded into (names or shapes differ)."""


@dataclass
class LoadReport:
    """What happened when a state dict was loaded into a module.

    Attributes
    ----------
    part : str
        Name of the part (``net_recon``, ``mid_net``, ...), used in messages.
    source : str
        Where the state came from (a file path or ``<state dict>``).
    missing : list of str
        Keys the module has but the state dict lacks (left at their current values).
    unexpected : list of str
        Keys of the state dict the module does not have (ignored).
    mismatched : list of (key, expected_shape, found_shape)
        Keys present in both whose shapes differ (left at their current values).
    loaded : int
        Number of tensors copied into the module.
    """

    part: str
    source: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    loaded: int = 0

    @property
    def ok(self) -> bool:
        """True when every key matched in name and shape."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 8) -> str:
        """A human-readable account, listing at most ``limit`` keys of each kind."""

        def listing(items: list[str]) -> str:
            shown = ", ".join(items[:limit])
            more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
            return shown + more

        if self.ok:
            return f"{self.source} [{self.part}]: loaded {self.loaded} tensors, every key matched"
        # refused whole (strict), or loaded in part: say which
        loaded = f"loaded {self.loaded} tensors" if self.loaded else "keys do not match"
        lines = [f"{self.source} [{self.part}]: {loaded}"]
        if self.missing:
            lines.append(f"  missing ({len(self.missing)}): {listing(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected ({len(self.unexpected)}): {listing(self.unexpected)}")
        if self.mismatched:
            shown = [f"{k} expected {tuple(e)} found {tuple(f)}" for k, e, f in self.mismatched]
            lines.append(f"  shape mismatch ({len(shown)}): {listing(shown)}")
        return "\n".join(lines)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a ``torch.save`` dictionary from ``path`` onto the CPU.

    Raises
    ------
    InputFileError
        The file is missing, is not a PyTorch checkpoint (truncated, corrupt, another format), holds
        objects that need code to load, or is not a dictionary.
    """
    path = Path(path)
    if path.is_dir():
        raise InputFileError(path, "is a folder: give the checkpoint file (a run's model.pt)")
    if not path.is_file():
        raise InputFileError(path, "checkpoint file not found")
    if path.stat().st_size == 0:
        raise InputFileError(path, "empty file (0 bytes): no PyTorch checkpoint")
    damage = _zip_damage(path)
    if damage is not None:
        raise InputFileError(path, f"not a readable PyTorch checkpoint ({damage})")
    try:
        with warnings.catch_warnings():  # the reason is given below, not as a warning
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        text = str(exc).strip()
        if "weights_only" in text or "Weights only load failed" in text:
            # PyTorch's advice here (retry with weights_only=False) would run the file's code
            why = "holds objects that need code to load, or is no PyTorch file at all"
        elif "central directory" in text or "zip archive" in text or "miniz" in text:
            why = _CUT_SHORT
        elif isinstance(exc, (KeyError, EOFError, UnicodeDecodeError)) or "magic number" in text:
            why = "neither a zip archive nor a pickle: no PyTorch file"
        else:
            first = (text.splitlines() or [""])[0]
            why = f"{type(exc).__name__}: {first if len(first) <= 200 else first[:197] + '...'}"
        raise InputFileError(path, f"not a readable PyTorch checkpoint ({why})") from exc
    if not isinstance(data, Mapping):
        raise InputFileError(path, f"checkpoint must hold a dict, found {type(data).__name__}")
    bad = _first_non_finite(data)
    if bad is not None:
        raise InputFileError(
            path, f"{bad} holds NaN or infinite values (saved from a run that diverged?)"
        )
    return dict(data)


def _first_non_finite(data: Any, where: str = "") -> str | None:
    """The key path of the first floating-point tensor in ``data`` (dicts, lists) that holds a
    NaN or infinity, or None: a network with one runs, and every photo fails far from the
    cause."""
    if isinstance(data, torch.Tensor):
        if data.is_floating_point() and not bool(torch.isfinite(data).all()):
            return where or "a tensor"
        return None
    if not isinstance(data, (Mapping, list, tuple)):
        return None
    items = data.items() if isinstance(data, Mapping) else enumerate(data)
    for key, value in items:
        found = _first_non_finite(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


_CUT_SHORT = "cut short or damaged: its zip archive is incomplete (an interrupted copy?)"


def _zip_damage(path: Path) -> str | None:
    """What is wrong with a checkpoint's zip archive (``torch.save``'s format), or None.

    - Cut short: the file begins as a zip archive but its end record or central directory is
      missing or broken (``torch.load`` says only "Invalid argument" of some such files).
    - Damaged: the first member whose bytes do not match their stored CRC-32 (a bit flipped on
      disk or in a copy, which ``torch.load`` does not check).
    - None: all members match, or the file is no zip archive, or its members cannot be read
      (``torch.load`` says what it is).
    """
    import zipfile

    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            return _CUT_SHORT if f.read(4) == b"PK\x03\x04" else None
    except (OSError, EOFError, ValueError, NotImplementedError):
        return None
    with archive:
        try:
            damaged = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
            return None
        except Exception:  # zlib errors of a damaged compressed member
            damaged = "a compressed member"
    if damaged is None:
        return None
    return f"damaged: {damaged} fails its checksum; a corrupted copy?"


def check_parts(
    path: str | Path, data: Mapping[str, Any], parts: Mapping[str, type | tuple[type, ...]]
) -> None:
    """Check that a checkpoint read from ``path`` holds each dotted part of ``parts``
    (``state.hrn``: ``data["state"]["hrn"]``) with the given type (``int`` excludes ``bool``).

    Raises
    ------
    InputFileError
        Naming the file and every part missing or of another type (a damaged or hand-edited
        checkpoint), instead of the KeyError or TypeError that reading it would raise later.
    """
    problems = []
    for dotted, kind in parts.items():
        node: Any = data
        walked: list[str] = []
        for key in dotted.split("."):
            if not isinstance(node, Mapping):
                problems.append(f"{'.'.join(walked)!r} is a {type(node).__name__}")
                break
            walked.append(key)
            if key not in node:
                problems.append(f"no {'.'.join(walked)!r}")
                break
            node = node[key]
        else:
            wrong = not isinstance(node, kind) or (kind is int and isinstance(node, bool))
            if wrong:
                problems.append(f"{dotted!r} is a {type(node).__name__}")
    if problems:
        said = ", ".join(dict.fromkeys(problems))  # a part missing is said once
        raise InputFileError(path, "damaged facehd checkpoint: " + said)


def save_checkpoint_atomic(path: str | Path, data: Mapping[str, Any]) -> Path:
    """``torch.save`` ``data`` to ``path`` through a temporary file and ``os.replace``.

    An interrupted save leaves the previous file intact. The file's bytes reach the disk before
    it takes the name (and the rename before this returns), so after a power cut or a crash of
    the machine the name holds the new checkpoint or the previous one, never a file cut short.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(dict(data), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_folder(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def morphable_record(model: MorphableModel) -> dict[str, Any]:
    """What a checkpoint records of its morphable model: name, sizes and fingerprint.

    The keys are :data:`MORPHABLE_SIZES` and ``fingerprint`` (the model's
    :attr:`~facehd.morphable.model.MorphableModel.fingerprint`).
    """
    return {
        "name": model.name,
        "n_vertices": model.n_vertices,
        "n_id": model.n_id,
        "n_exp": model.n_exp,
        "n_tex": model.n_tex,
        "fingerprint": model.fingerprint,
    }


def morphable_brief(info: Any) -> dict[str, Any]:
    """A checkpoint's morphable-model record (:func:`morphable_record`) shortened for an error
    message: the name and sizes, and the fingerprint's topology hash instead of its numbers.

    ``info`` is whatever the checkpoint holds; anything but a dict (a damaged record) gives
    ``None`` for every entry.
    """
    d = info if isinstance(info, dict) else {}
    fp = d.get("fingerprint")
    return {
        **{k: d.get(k) for k in MORPHABLE_SIZES},
        "topology": fp.get("topology") if isinstance(fp, dict) else None,
    }


def strip_prefix(state: Mapping[str, Any], prefixes: tuple[str, ...] = WRAPPER_PREFIXES) -> dict:
    """Drop a wrapper prefix (``module.``) when every key carries it."""
    state = dict(state)
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def compare_state(
    module: nn.Module, state: Mapping[str, Any], *, part: str, source: str = "<state dict>"
) -> tuple[LoadReport, dict[str, torch.Tensor]]:
    """Compare ``state`` with ``module``'s own state without loading anything.

    Returns the report and the entries that fit (name and shape match), after
    :func:`strip_prefix`.
    """
    if not isinstance(state, Mapping):
        kind = type(state).__name__
        raise CheckpointError(f"{source} [{part}]: expected a state dict, got {kind}")
    state = strip_prefix(state)
    own = module.state_dict()
    report = LoadReport(part=part, source=source)
    usable: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif not isinstance(value, torch.Tensor):
            report.mismatched.append((key, tuple(own[key].shape), ()))
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append((key, tuple(own[key].shape), tuple(value.shape)))
        else:
            usable[key] = value
    report.missing = [k for k in own if k not in state]
    return report, usable


def load_state_into(
    module: nn.Module,
    state: Mapping[str, Any],
    *,
    part: str,
    source: str = "<state dict>",
    strict: bool = True,
) -> LoadReport:
    """Copy the matching tensors of ``state`` into ``module`` and report the rest.

    Keys are compared after :func:`strip_prefix`. Entries whose name and shape match are loaded;
    missing, unexpected and shape-mismatched entries are listed in the report.

    Parameters
    ----------
    module : the module to fill.
    state : a state dict (``str`` -> tensor).
    part : name of the part, for messages.
    source : where the state came from, for messages.
    strict : raise :class:`CheckpointError` (with the full report) unless every key matched;
        nothing is loaded then. With ``strict=False`` the matching tensors are loaded and the
        report returned.
    """
    report, usable = compare_state(module, state, part=part, source=source)
    if strict and not report.ok:
        raise CheckpointError(report.summary())
    module.load_state_dict(usable, strict=False)
    report.loaded = len(usable)
    return report
