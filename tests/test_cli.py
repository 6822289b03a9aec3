"""The CLI: every command has --help; the cheap commands run."""

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facehd.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    return sorted(group.commands)


def test_core_commands_registered() -> None:
    assert {"models", "datasets", "synth", "perf", "quickstart"} <= set(_commands())


@pytest.mark.parametrize("name", _commands())
def test_every_command_has_help_with_example(name: str) -> None:
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output


@pytest.mark.parametrize("name", _commands())
def test_help_paragraphs_wrap_at_the_terminal_width(name: str) -> None:
    """The docstring's paragraphs are reflowed to the console's width: at 80 columns every line
    of a paragraph but its last is nearly full (the source's 100-column line breaks, kept, left
    lines of a few words between wrapped ones)."""
    result = runner.invoke(app, [name, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    prose = lines[next(i for i, x in enumerate(lines) if "Usage:" in x) + 1 :]
    prose = prose[: next(i for i, x in enumerate(prose) if x.startswith("╭"))]
    paragraphs: list[list[str]] = [[]]
    for line in prose:
        if line.strip():
            paragraphs[-1].append(line.strip())
        elif paragraphs[-1]:
            paragraphs.append([])
    for paragraph in paragraphs:
        for line, after in zip(paragraph, paragraph[1:], strict=False):
            # a line is left short only where the next word would not fit
            assert len(line) + 1 + len(after.split()[0]) > 76, (line, after)


def test_datasets_lists_every_entry() -> None:
    result = runner.invoke(app, ["datasets", "--registry", str(REPO / "datasets.yaml")])
    assert result.exit_code == 0, result.output
    for name in ("facescape", "realy", "now", "esrc", "facehd-100", "ffhq", "synthetic"):
        assert name in result.output


def test_datasets_bad_registry_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "datasets.yaml"
    bad.write_text("version: 1\nwhatever: 2\n")
    result = runner.invoke(app, ["datasets", "--registry", str(bad)])
    assert result.exit_code == 2
    assert "unknown keys" in result.output


def test_models_lists_the_builtin_model(tmp_path, monkeypatch) -> None:
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "facehd-synth" in result.output and "bfm" in result.output
    # a model that cannot be used says why: here a BFM file cut short
    root = tmp_path / "BFM"
    root.mkdir()
    (root / "BFM_model_front.mat").write_bytes(b"MATLAB 5.0 MAT-file, cut")
    np.save(root / "bfm_uvs.npy", np.zeros((10, 2)))
    monkeypatch.setenv("FACEHD_BFM_ROOT", str(root))
    result = runner.invoke(app, ["models"])
    said = " ".join(result.output.split())
    assert result.exit_code == 0 and "bfm: " in said and "BFM_model_front.mat" in said


def test_models_at_80_columns_keeps_headers_and_paths_whole(tmp_path, monkeypatch) -> None:
    """The counts and the files are two tables: at 80 columns each header word and each model
    file's path is on one line (beside the counts the paths were cut to 8 letters a line)."""
    from facehd import cli

    monkeypatch.setattr(cli.console, "_width", 80)
    root = tmp_path / "a-folder-for-the-basel-face-model"
    root.mkdir()
    monkeypatch.setenv("FACEHD_BFM_ROOT", str(root))
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines if line.startswith(("┃", "│", "┏", "└"))) <= 80
    header = next(line for line in lines if "model" in line and "┃" in line)
    assert header.split("┃")[1:-1] and all(
        word in header for word in ("available", "vertices", "identity", "expression", "albedo")
    )
    # the source column's cells, read down the column: the paths whole, the column wide
    start = next(i for i, line in enumerate(lines) if "source" in line and "┃" in line)
    cells = [line.split("│")[2] for line in lines[start:] if line.startswith("│")]
    assert min(len(c) for c in cells) >= 50
    column = "".join(c.strip() for c in cells)
    for name in ("BFM_model_front.mat", "bfm_uvs.npy"):
        assert str(root / name) in column, result.output


def test_perf_lists_entries() -> None:
    result = runner.invoke(app, ["perf", "--list"])
    assert result.exit_code == 0, result.output
    assert "distance" in result.output


def test_perf_unknown_entry_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["perf", "no-such-entry", "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 2
    assert "unknown perf entries" in result.output


def test_prepare_images_refuses_an_unknown_template_before_reading_photos(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    out = tmp_path / "p.h5"
    args = ["prepare-images", "--images", str(photos), "--out", str(out), "--template", "bogus"]
    result = runner.invoke(app, args, terminal_width=400)
    assert result.exit_code == 2
    assert "unknown 5-point template 'bogus'" in result.output and "deep3d" in result.output
    assert not out.exists()


def test_prepare_images_hd_size_bounds_are_the_pipelines(tmp_path: Path) -> None:
    """The CLI keeps numpy out of its import, so its --hd-size bounds are literals: they must stay
    the pipeline's own limits (a wider CLI range would pass sizes the pipeline then refuses); so
    is its --max-landmark-spread default, the detector's."""
    import typer.main

    from facehd.align import CROP_SIZE, HD_CROP_MAX, HD_CROP_SIZE
    from facehd.detect import MAX_LANDMARK_SPREAD
    from pipelines.prepare_images import PrepareImagesConfig

    missing = str(tmp_path / "none")
    for size, accepted in [
        (CROP_SIZE - 1, False),
        (CROP_SIZE, True),
        (HD_CROP_MAX, True),
        (HD_CROP_MAX + 1, False),
    ]:
        r = runner.invoke(app, ["prepare-images", "--images", missing, "--hd-size", str(size)])
        # accepted sizes get as far as the missing folder; refused ones stop at the option
        reached_folder = "none: does not exist" in " ".join(r.output.split())
        assert r.exit_code == 2 and reached_folder == accepted, (size, r.output)
    command = typer.main.get_command(app).commands["prepare-images"]
    (option,) = [p for p in command.params if p.name == "hd_size"]
    assert option.default == HD_CROP_SIZE
    (option,) = [p for p in command.params if p.name == "max_landmark_spread"]
    assert option.default == MAX_LANDMARK_SPREAD == PrepareImagesConfig().max_landmark_spread


@pytest.mark.parametrize("name", ["landmarks", "prepare-images", "reconstruct"])
def test_help_keeps_the_install_extra_in_brackets(name: str) -> None:
    # square brackets are console markup: the extra's name must be escaped to show
    result = runner.invoke(app, [name, "--help"], terminal_width=200)
    assert "facehd[photo]" in result.output, result.output


def test_messages_keep_brackets_of_paths(tmp_path: Path) -> None:
    folder = tmp_path / "[run][red]"
    folder.mkdir()
    missing = folder / "priors.h5"
    result = runner.invoke(app, ["verify", str(missing)], terminal_width=400)
    assert result.exit_code != 0
    assert "[run][red]" in result.output, result.output


def _shown(table: object, width: int) -> str:
    """The text a console ``width`` columns wide prints for ``table``."""
    from rich.console import Console

    console = Console(width=width, record=True)
    console.print(table)
    return console.export_text()


def test_table_cells_keep_brackets() -> None:
    from rich.table import Table

    from facehd.cli import PlainTable

    cells = ("[run]", "ok", "/data/[bold]/scan.obj")
    plain, rich_table = PlainTable("a", "b", "c"), Table("a", "b", "c")
    plain.add_row(*cells)
    rich_table.add_row(*cells)
    assert all(c in _shown(plain, 200) for c in cells)
    assert "[run]" not in _shown(rich_table, 200)  # the markup a plain table would eat


def test_table_cells_too_wide_are_folded_not_cut() -> None:
    import re

    from rich.table import Table

    from facehd.cli import PlainTable

    name = "subject_0042_neutral_cropped_0123456789"
    plain, rich_table = PlainTable("name", "note"), Table("name", "note")
    for table in (plain, rich_table):
        table.add_row(name, "ok")
    assert "…" in _shown(rich_table, 30)  # a plain rich table cuts it at 30 columns
    text = _shown(plain, 30)
    # the first column's pieces, line after line, spell the whole name
    pieces = [m.group(1) for m in re.finditer(r"^│ (\S+)\s+│", text, re.MULTILINE)]
    assert "…" not in text and "".join(pieces) == name, text


def test_narrow_table_keeps_whole_words_and_gives_way_at_its_widest_columns() -> None:
    import re

    from rich.table import Column, Table

    from facehd.cli import PlainTable

    heads = (
        "scan",
        "status",
        "confidence",
        "NoW-7 spread mm",
        "units",
        "rendered",
        "points",
        "note",
    )
    rows = [
        ("s000_e01", "ok", "0.49", "2.0", "mm", "shaded", "model (facehd-synth)", ""),
        ("s001_e00", "failed", "", "", "", "", "", "no face in 24 views of /data/s001_e00.ply"),
    ]
    # a rich table that folds what it cannot fit, as PlainTable did before it kept words whole
    plain, rich_table = PlainTable(*heads), Table(*(Column(h, overflow="fold") for h in heads))
    for table in (plain, rich_table):
        for row in rows:
            table.add_row(*row)

    def whole_words(text: str) -> set[str]:
        return {w for line in text.splitlines() for w in re.split(r"[│┃\s]+", line) if w}

    words = {w for head in heads for w in head.split()} | {"s000_e01", "s001_e00", "shaded"}
    # 80 columns, the console's width off a terminal: a folding rich table breaks short words
    assert not words <= whole_words(_shown(rich_table, 80))
    text = _shown(plain, 80)
    assert words <= whole_words(text), text
    assert max(map(len, text.splitlines())) <= 80
    # the long last column gave way, and still spells its cells whole, line after line
    last = "".join(m.group(1) for m in re.finditer(r"│ ([^│]*?)\s*│$", text, re.MULTILINE))
    assert last.replace(" ", "") == "".join(r[-1] for r in rows).replace(" ", ""), text
    # a table that fits is drawn as rich draws it; the widths set to draw it are not kept
    assert _shown(plain, 200) == _shown(rich_table, 200)
    assert all(column.width is None for column in plain.columns)


def _rich_version() -> tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(x) for x in version("rich").split(".")[:2])


def test_table_room_for_text_without_rich_s_private_helpers(monkeypatch) -> None:
    """The columns a PlainTable leaves for text come from rich's own helpers; a rich without
    them gets the same count from the table's settings (borders shown or not, padding, edge
    padding)."""
    from rich import box
    from rich.table import Table

    from facehd.cli import PlainTable

    settings = [
        dict(box=kind, show_edge=edge, padding=pad, pad_edge=pad_edge)
        for kind in (box.HEAVY_HEAD, box.SIMPLE, None)
        for edge in (True, False)
        for pad in ((0, 1), (0, 2), (1, 3, 0, 1))
        for pad_edge in (True, False)
        if pad_edge or _rich_version() >= (14,)  # rich 13 pads the edges regardless
    ]
    tables = [PlainTable(*[f"h{i}" for i in range(n)], **s) for s in settings for n in (1, 3)]
    rich_count = [t._text_room(80) for t in tables]
    monkeypatch.delattr(Table, "_get_padding_width")  # rich itself draws no table now
    assert [t._text_room(80) for t in tables] == rich_count


def test_a_table_that_would_break_paths_is_shown_row_by_row() -> None:
    """``records_when_narrow``: where no column widths keep every cell's words whole (here two
    paths and an address, 80 columns), each row is shown a cell to a line beside its header,
    the empty cells left out; where they do, it stays a table, drawn as before."""
    from rich.table import Table

    from facehd.cli import PlainTable

    heads = ("dataset", "found", "root", "override", "homepage")
    rows = [
        ("facescape", "no: not found", "/data/benchmarks/facescape/benchmark-data",
         "FACEHD_FACESCAPE_ROOT", "https://facescape.nju.edu.cn/"),
        ("synthetic", "yes", "/home/someone/projects/facehd-out/synth", "FACEHD_SYNTH_ROOT", ""),
    ]  # fmt: skip
    records, plain, rich_table = (
        PlainTable(*heads, records_when_narrow=True),
        PlainTable(*heads),
        Table(*heads),
    )
    for table in (records, plain, rich_table):
        for row in rows:
            table.add_row(*row)
    text = _shown(records, 80)
    lines = [line.rstrip() for line in text.splitlines()]
    expected = [f"{h:<8}  {c}" for h, c in zip(heads, rows[0], strict=True)] + [""]
    expected += [f"{h:<8}  {c}" for h, c in zip(heads[:4], rows[1][:4], strict=True)]
    assert lines == expected, text
    # without it, the same table at 80 columns breaks the paths
    assert not any(rows[0][2] in line for line in _shown(plain, 80).splitlines())
    # wide enough, or with nothing longer than its column, it is a table
    assert _shown(records, 250) == _shown(rich_table, 250)
    short = PlainTable("name", "status", records_when_narrow=True)
    short.add_row("s000_e00", "ok: a short note in words that fold at any space")
    assert _shown(short, 40).startswith("┏") and "s000_e00" in _shown(short, 40)


def test_error_keeps_a_long_path_on_one_line(tmp_path: Path) -> None:
    # the console is 80 columns wide off a terminal; a path in an error must not be broken
    missing = tmp_path / ("deep-folder-name-" * 6) / "priors.h5"
    result = runner.invoke(app, ["verify", str(missing)])
    assert result.exit_code != 0
    line = next(x for x in result.output.splitlines() if "priors.h5" in x)
    assert len(line) > 80 and str(missing) in line, result.output


def _readme_commands() -> list[tuple[int, list[str]]]:
    """``(line, arguments)`` of every ``facehd`` command in the README's shell blocks (continued
    lines joined, comments dropped, each side of ``&&`` apart)."""
    import re
    import shlex

    from test_readme import markdown_lines

    found: list[tuple[int, list[str]]] = []
    pending, start = "", 0
    for number, line, fence in markdown_lines((REPO / "README.md").read_text()):
        if fence is None or fence[1] not in ("bash", "sh", ""):
            continue
        if not pending:
            start = number
        line = pending + " " + line.strip() if pending else line
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1]
            continue
        pending = ""
        code = shlex.split(line, comments=True)
        parts: list[list[str]] = [[]]
        for word in code:
            parts.append([]) if word == "&&" else parts[-1].append(word)
        for words in parts:
            at = next((i for i, w in enumerate(words) if re.fullmatch(r"(.*/)?facehd", w)), None)
            if at is not None:
                found.append((start, words[at + 1 :]))
    return found


def test_every_readme_command_parses() -> None:
    """Each command the README shows names a command and options the CLI has, with values of
    their types (input files need not exist here)."""
    import typer.main
    from typer._click import exceptions

    group = typer.main.get_command(app)
    commands = _readme_commands()
    assert len(commands) > 40
    wrong = []
    for line, args in commands:
        command = group.get_command(None, args[0]) if args else None
        if command is None:
            wrong.append(f"README line {line}: no command {args[:1]}")
            continue
        try:
            command.make_context(args[0], args[1:])
        except exceptions.BadParameter as exc:
            if "does not exist" not in str(exc):
                wrong.append(f"README line {line}: facehd {' '.join(args)}: {exc}")
        except exceptions.ClickException as exc:
            wrong.append(f"README line {line}: facehd {' '.join(args)}: {exc}")
    assert not wrong, "\n".join(wrong)
