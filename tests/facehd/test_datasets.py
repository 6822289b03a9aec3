import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from facehd.datasets import default_registry_path, installed_registry_path, load_registry
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


def test_a_root_under_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACEHD_TEST_MINE_ROOT", raising=False)
    p = _write(tmp_path, BASE.replace("root: rel/folder", "root: ~/faces"))
    assert load_registry(p).dataset("mine").root == tmp_path / "home" / "faces"


def test_the_working_folders_registry_comes_before_the_installed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FACEHD_DATASETS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_registry_path() == installed_registry_path()
    p = _write(tmp_path, BASE)
    assert default_registry_path().resolve() == p.resolve()
    assert set(load_registry().datasets) == {"mine"}


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
        (
            "version: 1\nmodels:\n  m:\n    root: r\n    files: [a.mat, b.obj]\n",
            "models.m.files must be a mapping role -> file name",
        ),
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
    (src / "facehd-out").mkdir()  # a user's outputs beside the packages are not shipped
    (src / "facehd-out" / "perf.csv").write_text("entry,metric\n")
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
    assert not [n for n in names if n.startswith("facehd-out")]
    # installed (not editable), its registry's relative roots are the working directory's
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    run = subprocess.run(
        [*pip, "--target", str(site), str(wheel)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    work = tmp_path / "work"
    (work / "data" / "NoW_Dataset").mkdir(parents=True)
    (work / "data" / "NoW_Dataset" / "imagepathsvalidation.txt").write_text("")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import facehd.datasets as d; "
        "assert d.__file__.startswith(sys.argv[1]), d.__file__; r = d.load_registry(); "
        "print(r.path); print(r.dataset('now').root); print(r.dataset('now').found)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEHD_")}
    run = subprocess.run(
        [sys.executable, "-c", code, str(site)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    path, root, found = run.stdout.split()
    assert Path(path) == (site / "facehd" / "datasets.yaml").resolve()
    assert Path(root) == (work / "data" / "NoW_Dataset").resolve() and found == "True"


def test_a_link_checked_out_as_a_file_is_followed(tmp_path: Path) -> None:
    """git without symbolic links writes the package's link as a text file naming its target."""
    (tmp_path / "facehd").mkdir()
    (tmp_path / "datasets.yaml").write_text((REPO / "datasets.yaml").read_text())
    (tmp_path / "facehd" / "datasets.yaml").write_text("../datasets.yaml")
    path = installed_registry_path(tmp_path / "facehd")
    assert path == (tmp_path / "datasets.yaml").resolve()
    assert "now" in load_registry(path).datasets
    (tmp_path / "facehd" / "datasets.yaml").unlink()
    (tmp_path / "facehd" / "datasets.yaml").symlink_to("../datasets.yaml")
    assert installed_registry_path(tmp_path / "facehd") == path


def test_missing_registered_files_say_where_they_were_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registered BFM or dataset root that is not there names the registry, the entry's
    environment variable and the command-line way round, not only a path the user never gave."""
    from benchmarks.runner import BenchmarkSpec, resolve_root
    from facehd.errors import InputFileError
    from pipelines.model_landmarks import load_fit_model

    reg = tmp_path / "datasets.yaml"
    reg.write_text(
        "version: 1\nmodels:\n  bfm:\n    description: d\n    root: bfm\n"
        "    env: FACEHD_BFM_ROOT\n    files: {model: BFM_model_front.mat, uv: uv.npy}\n"
        "datasets:\n  now:\n    description: d\n    root: data/NoW\n    env: FACEHD_NOW_ROOT\n"
    )
    monkeypatch.setenv("FACEHD_DATASETS", str(reg))
    monkeypatch.delenv("FACEHD_BFM_ROOT", raising=False)
    monkeypatch.delenv("FACEHD_NOW_ROOT", raising=False)
    with pytest.raises(InputFileError) as bfm:
        load_fit_model("bfm")
    said = str(bfm.value)
    assert str(tmp_path / "bfm" / "BFM_model_front.mat") in said
    assert f"models.bfm in {reg}" in said and "FACEHD_BFM_ROOT" in said and "--bfm-path" in said
    with pytest.raises(InputFileError, match="models.bfm in"):
        load_fit_model(" BFM ")  # the name as --model takes it
    with pytest.raises(InputFileError) as now:
        resolve_root(BenchmarkSpec.parse("now:validation"), None)
    said = str(now.value)
    assert str(tmp_path / "data" / "NoW") in said and "FACEHD_NOW_ROOT" in said
    assert str(reg) in said and "--root" in said
    with pytest.raises(InputFileError, match="does not exist$"):  # --root given: that is all
        resolve_root(BenchmarkSpec.parse("now:validation"), tmp_path / "nowhere")
