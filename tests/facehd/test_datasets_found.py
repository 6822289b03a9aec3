"""``facehd datasets``: a root that is a file or an empty folder is not found, and a registry
that is a folder or not UTF-8 is an error naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from facehd.datasets import load_registry
from facehd.errors import InputFileError

REGISTRY = """
version: 1
datasets:
  mine:
    description: d
    root: data
    env: FACEHD_TEST_MINE_ROOT
    layout: l
    homepage: h
    licence: c
models:
  m:
    description: d
    root: model
    files: {model: m.bin}
"""


def test_a_root_that_is_a_file_or_an_empty_folder_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facehd import cli
    from facehd.cli import app

    monkeypatch.setattr(cli.console, "_width", 300)  # the table's cells unwrapped
    reg = tmp_path / "datasets.yaml"
    reg.write_text(REGISTRY)
    monkeypatch.delenv("FACEHD_TEST_MINE_ROOT", raising=False)
    (tmp_path / "data").mkdir()
    (tmp_path / "model" / "m.bin").mkdir(parents=True)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for root, problem in (
        (None, "an empty folder"),
        (a_file, "a file, not a folder"),
        (tmp_path / "nowhere", "not found"),
    ):
        if root is not None:
            monkeypatch.setenv("FACEHD_TEST_MINE_ROOT", str(root))
        entry = load_registry(reg).dataset("mine")
        assert not entry.found and entry.problem == problem
        r = CliRunner().invoke(app, ["datasets", "--registry", str(reg)])
        assert r.exit_code == 0 and f"no: {problem}" in " ".join(r.output.split()), r.output
    assert load_registry(reg).models["m"].problem == "model file m.bin is a folder"
    monkeypatch.delenv("FACEHD_TEST_MINE_ROOT")
    (tmp_path / "data" / "scan.obj").write_text("v 0 0 0")
    assert load_registry(reg).dataset("mine").found


def test_a_registry_that_is_a_folder_or_not_utf8_is_named(tmp_path: Path) -> None:
    from facehd.cli import app

    with pytest.raises(InputFileError, match=rf"{tmp_path}: is a folder"):
        load_registry(tmp_path)
    reg = tmp_path / "datasets.yaml"
    reg.write_bytes(REGISTRY.encode().replace(b"homepage: h", b"homepage: \xff"))
    with pytest.raises(InputFileError, match=rf"{reg}: not UTF-8 text \(byte 0xff at offset"):
        load_registry(reg)
    r = CliRunner().invoke(app, ["datasets", "--registry", str(tmp_path)])
    assert r.exit_code == 2 and "is a folder" in r.output and "Traceback" not in r.output


def test_a_registered_folder_must_hold_the_benchmark_as_bench_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``facehd datasets`` says "yes" for a benchmark root only when its ground truth lies as
    ``facehd bench`` reads it (any non-empty folder said "yes"), names the splits whose list or
    folder is not there, and registers ESRC under the split ``bench --dataset multiview:esrc``
    reads, which then finds its root through the registry."""
    from benchmarks.readers import layout_problem
    from benchmarks.synthetic import make_synthetic_benchmark
    from facehd import cli
    from facehd.cli import app

    monkeypatch.setattr(cli.console, "_width", 400)  # the table's cells unwrapped
    made = {n: make_synthetic_benchmark(n, tmp_path / n, n_subjects=1) for n in ("now", "realy")}
    esrc = make_synthetic_benchmark("multiview", tmp_path / "esrc", n_subjects=1)
    (esrc / "multiview_synth.txt").rename(esrc / "multiview_esrc.txt")
    only_scans = tmp_path / "only_scans"
    (only_scans / "scans").mkdir(parents=True)
    assert layout_problem("now", made["now"]) is None
    assert layout_problem("esrc", esrc) is None
    assert layout_problem("realy", made["realy"]) is None
    assert layout_problem("now", only_scans) == "no scans_lmks_onlypp/ folder: not the NoW layout"
    assert "not the REALY benchmark data" in layout_problem("realy", made["now"])
    assert "not a FaceScape benchmark root" in layout_problem("facescape", made["realy"])
    assert layout_problem("ffhq", only_scans) is None  # no benchmark reader: the folder will do

    shipped = Path(__file__).resolve().parents[2] / "datasets.yaml"
    reg = load_registry(shipped)
    assert reg.dataset("esrc").split("esrc").path == "multiview_esrc.txt"
    monkeypatch.setenv("FACEHD_NOW_ROOT", str(made["now"]))
    monkeypatch.setenv("FACEHD_ESRC_ROOT", str(esrc))
    monkeypatch.setenv("FACEHD_REALY_ROOT", str(only_scans))
    assert load_registry(shipped).dataset("now").missing_splits == ["test"]
    r = CliRunner().invoke(app, ["datasets", "--registry", str(shipped)])
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in r.output.splitlines()]
    rows = {c[0]: c for c in cells if c and c[0]}
    assert r.exit_code == 0 and rows["now"][4] == "validation, test (not here: test)", r.output
    assert rows["now"][1] == "yes" and rows["esrc"][1] == "yes" and rows["esrc"][4] == "esrc"
    assert rows["realy"][1].startswith("no: no REALY_HIFI3D_keypoints/")

    out = tmp_path / "bench"
    pred = esrc / "predictions" / "synth-fit"
    args = ["bench", "--dataset", "multiview:esrc", "--method", "synth-fit", "--predictions"]
    r = CliRunner().invoke(app, [*args, str(pred), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "multiview-esrc" / "synth-fit" / "summary.csv").is_file()
