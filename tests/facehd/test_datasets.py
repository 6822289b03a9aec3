import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from facehd.datasets import default_registry_path, load_registry
from facehd.errors import InputFileError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_registry_has_every_entry() -> None:
    reg = load_registry(REPO / "datasets.yaml")
    expected = {"facescape", "realy", "now", "esrc", "facehd-100", "ffhq", "synthetic"}
    assert expected <= set(reg.datasets)
    assert {s.name for s in reg.dataset("facescape").splits} == {"wild", "lab"}
    assert {s.name for s in reg.dataset("realy").splits} == {"frontal", "side"}
    assert reg.dataset("facescape").split("wild").items == 400
    assert reg.dataset("facescape").split("lab").items == 660
    for entry in reg.datasets.values():
        assert entry.homepage is not None and entry.licence and entry.layout and entry.env
    assert set(reg.models["bfm"].files) == {"model", "uv"}


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "datasets.yaml"
    p.write_text(text)
    return p


BASE = """
version: 1
datasets:
  mine:
    description: d
    root: rel/folder
    env: FACEHD_TEST_MINE_ROOT
    layout: l
    splits:
      a: {path: x, items: 3}
    homepage: h
    licence: c
"""


def test_relative_root_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _write(tmp_path, BASE)
    monkeypatch.delenv("FACEHD_TEST_MINE_ROOT", raising=False)
    entry = load_registry(p).dataset("mine")
    assert entry.root == tmp_path.resolve() / "rel" / "folder"
    assert not entry.found
    (tmp_path / "rel" / "folder").mkdir(parents=True)
    (tmp_path / "rel" / "folder" / "x").mkdir()
    assert load_registry(p).dataset("mine").found
    monkeypatch.setenv("FACEHD_TEST_MINE_ROOT", str(tmp_path / "elsewhere"))
    assert load_registry(p).dataset("mine").root == tmp_path / "elsewhere"


def test_registry_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _write(tmp_path, BASE)
    monkeypatch.setenv("FACEHD_DATASETS", str(p))
    assert set(load_registry().datasets) == {"mine"}


@pytest.mark.parametrize(
    "text, message",
    [
        (BASE.replace("licence: c", "licence: c\n    colour: red"), "unknown keys ['colour']"),
        (BASE.replace("items: 3", "items: 3, size: 2"), "unknown keys ['size']"),
        (BASE + "extra: 1\n", "unknown keys ['extra']"),
        (BASE.replace("version: 1", "version: 7"), "unsupported registry version"),
        (BASE.replace("items: 3", "items: three"), "must be an integer"),
        ("version: 1\ndatasets: [1, 2", "not valid YAML"),
        ("version: 1\ndatasets: [1, 2]\n", "datasets must be a mapping of names"),
        (
            BASE.replace("a: {path: x, items: 3}", "[a, b]").replace("splits:\n      ", "splits: "),
            "datasets.mine.splits must be a mapping",
        ),
        ("version: 1\nmodels: 3\n", "models must be a mapping"),
        (BASE + "version: 1\n", "key 'version' is given twice"),
    ],
)
def test_bad_registry_names_file_and_problem(tmp_path: Path, text: str, message: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(InputFileError) as err:
        load_registry(p)
    assert str(p) in str(err.value) and message in str(err.value)


def test_missing_registry(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not found"):
        load_registry(tmp_path / "nope.yaml")


def test_unknown_dataset_and_split() -> None:
    reg = load_registry(REPO / "datasets.yaml")
    with pytest.raises(ValueError, match="unknown dataset"):
        reg.dataset("imagenet")
    with pytest.raises(ValueError, match="no split"):
        reg.dataset("realy").split("profile")


def test_default_registry_is_the_repo_file_through_the_package_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no FACEHD_DATASETS and none in the working directory, the package's registry is read:
    in a source tree its link resolves to the root's file, so relative roots stay root-relative."""
    monkeypatch.delenv("FACEHD_DATASETS", raising=False)
    monkeypatch.chdir(tmp_path)
    path = default_registry_path()
    assert (REPO / "facehd" / "datasets.yaml").is_symlink()
    assert path == (REPO / "datasets.yaml").resolve()  # the file to edit is named
    assert (
        load_registry(path).dataset("now").root
        == load_registry(REPO / "datasets.yaml").dataset("now").root
    )


def test_built_wheel_ships_the_registry_and_every_package(tmp_path: Path) -> None:
    """A wheel (what `pip install .` installs) holds the registry's bytes as a file, so `facehd
    datasets` and `--model bfm` work outside a source tree, and the four packages."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "datasets.yaml"):
        shutil.copy(REPO / name, src / name)
    for pkg in ("facehd", "pipelines", "models", "benchmarks"):
        shutil.copytree(
            REPO / pkg, src / pkg, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    assert (src / "facehd" / "datasets.yaml").is_symlink()
    out = tmp_path / "dist"
    code = f"from setuptools import build_meta as b; print(b.build_wheel({str(out)!r}))"
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=src, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    wheel = out / run.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert z.read("facehd/datasets.yaml") == (REPO / "datasets.yaml").read_bytes()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "hrn = models.bench:make_method" in z.read(entry_points).decode()
    for pkg in ("facehd", "pipelines", "models", "benchmarks"):
        for module in (REPO / pkg).rglob("*.py"):
            assert module.relative_to(REPO).as_posix() in names
