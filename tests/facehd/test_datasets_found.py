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
