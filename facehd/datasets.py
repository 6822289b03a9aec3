"""The dataset registry, ``datasets.yaml``, loaded into typed configuration.

The registry is found, in order: the path given to :func:`load_registry`, the environment variable
``FACEHD_DATASETS``, ``./datasets.yaml`` in the working directory, and the registry installed with
the package, ``facehd/datasets.yaml`` (in a source tree a link to the ``datasets.yaml`` at its root;
a built wheel holds a copy). Relative roots are relative to the registry file (the link's target),
or, for a wheel's copy inside site-packages, to the working directory; each entry's ``env``
variable, when set, overrides its root. Unknown keys are errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from facehd.errors import InputFileError
from facehd.yamlio import safe_load_unique

ENV_REGISTRY = "FACEHD_DATASETS"


@dataclass(frozen=True)
class Split:
    """One split of a dataset."""

    name: str
    """Split name (``wild``, ``lab``, ``validation`` ...)."""
    path: str
    """Path of the split relative to the dataset root (a folder or a list file)."""
    items: int | None = None
    """Number of items in the split, where the dataset defines it."""
    note: str = ""
    """Free-text remark (binning, composition)."""


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset registered in ``datasets.yaml``."""

    name: str
    """Registry key (``facescape``, ``realy`` ...)."""
    description: str
    """What the dataset is."""
    root: Path
    """Resolved root folder (after the environment override)."""
    env: str
    """Environment variable that overrides ``root``."""
    layout: str
    """The on-disk layout, in words."""
    splits: tuple[Split, ...]
    """The dataset's splits."""
    homepage: str
    """Where to obtain the data."""
    licence: str
    """Licence note."""

    @property
    def problem(self) -> str | None:
        """Why the root is not the dataset's folder (``not found``, ``a file, not a folder``,
        ``an empty folder``), or None when it is a folder holding something."""
        return _folder_problem(self.root)

    @property
    def found(self) -> bool:
        """Whether the root is a folder on disk holding something."""
        return self.problem is None

    @property
    def missing_splits(self) -> list[str]:
        """The splits whose ``path`` (a folder or list file under the root) is not there."""
        return [s.name for s in self.splits if not (self.root / s.path).exists()]

    def split(self, name: str) -> Split:
        """Return the split called ``name`` (``ValueError`` naming the known splits otherwise)."""
        for s in self.splits:
            if s.name == name:
                return s
        raise ValueError(
            f"dataset {self.name!r} has no split {name!r}; known: {[s.name for s in self.splits]}"
        )


@dataclass(frozen=True)
class ModelEntry:
    """A morphable model's files registered in ``datasets.yaml``."""

    name: str
    """Model name (``bfm``)."""
    description: str
    """What the model is."""
    root: Path
    """Resolved folder holding the files (after the environment override)."""
    env: str
    """Environment variable that overrides ``root``."""
    files: dict[str, Path] = field(default_factory=dict)
    """Role → resolved file path (``model``, ``uv``)."""
    homepage: str = ""
    """Where to obtain the files."""
    licence: str = ""
    """Licence note."""

    @property
    def problem(self) -> str | None:
        """Why the files cannot be used (none listed, the first one missing or a folder, or, for
        the ``bfm`` entry, what :func:`facehd.morphable.registry.model_info` finds wrong in its
        ``model`` and ``uv`` files, as ``facehd models`` says it), or None when they can."""
        if not self.files:
            return "no files listed"
        for role, p in self.files.items():
            if not p.exists():
                return f"{role} file not found"
            if not p.is_file():
                return f"{role} file {p.name} is a folder"
        if self.name == "bfm":  # files that are there but unreadable are no model either
            from facehd.morphable.registry import model_info

            info = model_info("bfm", bfm_path=self.files.get("model"), uv_path=self.files.get("uv"))
            return None if info.available else info.note
        return None

    @property
    def found(self) -> bool:
        """Whether the files are there and usable (:attr:`problem` is None)."""
        return self.problem is None


@dataclass(frozen=True)
class Registry:
    """The whole registry."""

    path: Path
    """The ``datasets.yaml`` it was read from."""
    datasets: dict[str, DatasetEntry]
    """Datasets by name."""
    models: dict[str, ModelEntry]
    """Morphable-model file sets by name."""

    def dataset(self, name: str) -> DatasetEntry:
        """Return dataset ``name`` (``ValueError`` naming the known ones otherwise)."""
        if name not in self.datasets:
            raise ValueError(f"unknown dataset {name!r}; known: {sorted(self.datasets)}")
        return self.datasets[name]


_DATASET_KEYS = {"description", "root", "env", "layout", "splits", "homepage", "licence"}
_SPLIT_KEYS = {"path", "items", "note"}
_MODEL_KEYS = {"description", "root", "env", "files", "homepage", "licence"}
_TOP_KEYS = {"version", "models", "datasets"}


#: The registry's file name.
REGISTRY_NAME = "datasets.yaml"
#: The package's registry (a link in a source tree, a copy in a wheel), unresolved.
_PACKAGED = Path(__file__).resolve().parent / REGISTRY_NAME


def default_registry_path() -> Path:
    """Where the registry is looked for when no path is given (see the module docstring)."""
    env = os.environ.get(ENV_REGISTRY)
    if env:
        return Path(env)
    cwd = Path.cwd() / REGISTRY_NAME
    if cwd.exists():
        return cwd
    return installed_registry_path()


def installed_registry_path(package: Path | None = None) -> Path:
    """The registry installed with the package: in a source tree its link resolved (the root's
    ``datasets.yaml``, the file to edit); in a wheel the copy it holds. A checkout made without
    symbolic links (``core.symlinks=false``) holds the link as a file naming its target, which
    is followed the same way. ``package``: the folder holding the package's registry (default:
    facehd's)."""
    packaged = package / REGISTRY_NAME if package is not None else _PACKAGED
    if not packaged.is_symlink() and packaged.is_file() and packaged.stat().st_size < 256:
        target = packaged.read_text(encoding="utf-8", errors="replace").strip()
        if target == f"../{REGISTRY_NAME}":
            return (packaged.parent / target).resolve()
    return packaged.resolve()


def _installed_copy(path: Path) -> bool:
    """Whether ``path`` is the package's own copy of the registry (a wheel's; in a source tree
    the package holds a link, which resolves to the root's file)."""
    return path.resolve() == _PACKAGED


def _folder_problem(root: Path) -> str | None:
    """Why ``root`` is not a dataset's folder, or None when it is a folder holding something."""
    if not root.exists():
        return "not found"
    if not root.is_dir():
        return "a file, not a folder"
    try:
        if not any(root.iterdir()):
            return "an empty folder"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None


def _check_keys(where: str, data: Any, allowed: set[str], path: Path) -> dict:
    if not isinstance(data, dict):
        raise InputFileError(path, f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InputFileError(path, f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    return data


def _root(base: Path, raw: Any, env: str, where: str, path: Path) -> Path:
    override = os.environ.get(env) if env else None
    if override:
        return Path(override).expanduser()
    if not isinstance(raw, str) or not raw:
        raise InputFileError(path, f"{where}: 'root' must be a non-empty string")
    root = Path(raw).expanduser()
    return root if root.is_absolute() else base / root


def _mapping(where: str, value: object, path: Path) -> dict:
    """``value`` if it is a mapping (an empty one for None), else an error naming ``where``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputFileError(
            path, f"{where} must be a mapping of names to entries, not a {type(value).__name__}"
        )
    return value


def load_registry(path: str | Path | None = None) -> Registry:
    """Load ``datasets.yaml`` into a :class:`Registry`.

    Parameters
    ----------
    path : the registry file; ``None`` uses :func:`default_registry_path`.

    Raises
    ------
    InputFileError : the file is missing, a folder, not UTF-8, not YAML, or has unknown or
        malformed keys.
    """
    path = Path(path) if path is not None else default_registry_path()
    if path.is_dir():
        raise InputFileError(path, "is a folder: give the dataset registry file (datasets.yaml)")
    if not path.is_file():
        raise InputFileError(path, "dataset registry not found")
    try:
        data = safe_load_unique(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InputFileError(
            path,
            f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save "
            "the registry as UTF-8",
        ) from None
    except OSError as exc:
        raise InputFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise InputFileError(path, f"not valid YAML: {exc}") from exc
    data = _check_keys("top level", data, _TOP_KEYS, path)
    if data.get("version") != 1:
        raise InputFileError(path, f"unsupported registry version {data.get('version')!r}")
    # a wheel's copy sits in site-packages, where no data is: its relative roots are taken from
    # the working directory instead
    base = Path.cwd() if _installed_copy(path) else path.resolve().parent
    datasets: dict[str, DatasetEntry] = {}
    for name, raw in _mapping("datasets", data.get("datasets"), path).items():
        where = f"datasets.{name}"
        raw = _check_keys(where, raw, _DATASET_KEYS, path)
        splits = []
        for sname, sraw in _mapping(f"{where}.splits", raw.get("splits"), path).items():
            sraw = _check_keys(f"{where}.splits.{sname}", sraw, _SPLIT_KEYS, path)
            items = sraw.get("items")
            if items is not None and not isinstance(items, int):
                raise InputFileError(path, f"{where}.splits.{sname}.items must be an integer")
            note = str(sraw.get("note", ""))
            splits.append(Split(str(sname), str(sraw.get("path", ".")), items, note))
        env = str(raw.get("env", ""))
        datasets[str(name)] = DatasetEntry(
            name=str(name),
            description=str(raw.get("description", "")),
            root=_root(base, raw.get("root"), env, where, path),
            env=env,
            layout=str(raw.get("layout", "")),
            splits=tuple(splits),
            homepage=str(raw.get("homepage", "")),
            licence=str(raw.get("licence", "")),
        )
    models: dict[str, ModelEntry] = {}
    for name, raw in _mapping("models", data.get("models"), path).items():
        where = f"models.{name}"
        raw = _check_keys(where, raw, _MODEL_KEYS, path)
        env = str(raw.get("env", ""))
        root = _root(base, raw.get("root"), env, where, path)
        files = raw.get("files") or {}
        if not isinstance(files, dict):
            raise InputFileError(path, f"{where}.files must be a mapping role -> file name")
        models[str(name)] = ModelEntry(
            name=str(name),
            description=str(raw.get("description", "")),
            root=root,
            env=env,
            files={str(k): root / str(v) for k, v in files.items()},
            homepage=str(raw.get("homepage", "")),
            licence=str(raw.get("licence", "")),
        )
    return Registry(path=path, datasets=datasets, models=models)
