"""The ``facehd`` command line.

Each command only parses its arguments and calls library code; heavy modules are imported inside
the command so that ``facehd --help`` stays fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from facehd.pools import WorkersDieAtStart

app = typer.Typer(
    help="facehd: detailed 3D face reconstruction research toolkit (HRN).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


@app.callback()
def _main() -> None:
    # `kill`, `timeout` and batch schedulers stop a job with SIGTERM: handled as Ctrl-C, so a
    # batch command flushes what it finished and writes its tables before it ends
    import signal
    import threading

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, interrupt)
    _say_file_warnings()


def _say_file_warnings() -> None:
    """Print an InputFileWarning (its message names the file) as one ``warning:`` line, not
    with the source line that raised it; other warnings as Python shows them."""
    import sys
    import warnings

    from facehd.errors import InputFileWarning

    shown = warnings.showwarning
    if getattr(shown, "facehd", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
        if issubclass(category, InputFileWarning):
            print(f"warning: {message}", file=file or sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    show.facehd = True  # type: ignore[attr-defined]
    warnings.showwarning = show


class PlainTable(Table):
    """A table that shows its text cells as written and whole: names, paths and messages may
    hold square brackets, which are console markup in a plain ``Table``, and a cell too wide for
    its column on a narrow terminal is folded onto more lines, not cut short with an ellipsis
    (a scan's name shown as ``s000_e…`` names no scan). Where the table is too wide, its widest
    columns give way first, and no header word, nor a cell word up to as long as fits, is
    broken. With ``records_when_narrow``, a table that would still break words (paths, web
    addresses) is shown row by row instead, each cell on a line of its own beside its header."""

    def __init__(self, *headers: Any, records_when_narrow: bool = False, **kwargs: Any) -> None:
        super().__init__(*headers, **kwargs)
        for column in self.columns:
            column.overflow = "fold"
        self.records_when_narrow = records_when_narrow

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        super().add_row(*(Text(c) if isinstance(c, str) else c for c in renderables), **kwargs)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # where the table is too wide, a plain Table narrows every column alike once its widest
        # are cut down, folding short words mid-way ("confide nce", "s000_e0 1"); here the
        # widest columns give way first and no column is narrowed below its longest whole word
        widths = self._whole_word_widths(options.max_width)
        if self.records_when_narrow and self._breaks_words(widths, options.max_width):
            yield self._records()
            return
        if widths is None:
            yield from super().__rich_console__(console, options)
            return
        kept = [column.width for column in self.columns]
        for column, width in zip(self.columns, widths, strict=True):
            column.width = width
        try:
            yield from super().__rich_console__(console, options)
        finally:
            for column, width in zip(self.columns, kept, strict=True):
                column.width = width

    def _text_room(self, max_width: int) -> int:
        """Columns left for the cells' text of a table ``max_width`` wide: less the borders
        (two at the edges where shown, one between columns) and each cell's padding. Counted by
        rich's own (private) helpers, whose rules vary between its versions; a rich without
        them gets the count of rich 15 for uncollapsed padding."""
        n = len(self.columns)
        try:
            frame = self._extra_width + sum(self._get_padding_width(i) for i in range(n))
        except AttributeError:
            _, right, _, left = self.padding
            frame = (2 if self.box and self.show_edge else 0) + (n - 1 if self.box else 0)
            frame += n * (left + right) - (0 if self.pad_edge or not n else left + right)
        return max_width - frame

    def _breaks_words(self, widths: list[int] | None, max_width: int) -> bool:
        """Whether the table drawn ``max_width`` wide breaks a word of a cell: it does not fit
        as it is, and a column (at ``widths``, from :meth:`_whole_word_widths`) is narrower
        than a word of its cells, or no widths keep its headers whole."""
        texts = [[t or "" for t in column] for column in self._column_texts()]
        if widths is None:
            return sum(map(_natural_width, texts)) > self._text_room(max_width)
        return any(
            max(_word_lengths(" ".join(column[1:])), default=0) > width
            for column, width in zip(texts, widths, strict=True)
        )

    def _column_texts(self) -> list[list[str | None]]:
        """Each column's header, then its cells, as plain text (None for one that is not)."""
        return [
            [_plain(column.header), *(_plain(cell) for cell in column.cells)]
            for column in self.columns
        ]

    def _records(self) -> Table:
        """The rows one after another, a line per non-empty cell: header, then the cell."""
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True, style="bold")
        grid.add_column(overflow="fold")
        heads = [Text(_plain(column.header) or "") for column in self.columns]
        cells = [list(column.cells) for column in self.columns]
        for r in range(self.row_count):
            if r:
                grid.add_row("", "")
            for head, column in zip(heads, cells, strict=True):
                if _plain(column[r]) != "":
                    grid.add_row(head, column[r])
        return grid

    def _whole_word_widths(self, max_width: int) -> list[int] | None:
        """Text widths of the columns that fit ``max_width`` with no word of a header, nor a
        word of a cell up to as long as fits, broken; None where the table fits as it is or
        cannot fit so (a plain Table's widths are then used)."""
        if any(column.width is not None for column in self.columns) or self.expand:
            return None
        texts = self._column_texts()
        if any(None in column for column in texts):
            return None  # a cell that is not text: leave its measuring to rich
        room = self._text_room(max_width)
        natural = [_natural_width(column) for column in texts]
        if sum(natural) <= room:
            return None
        header_words = [_word_lengths(column[0]) for column in texts]
        cell_words = [_word_lengths(" ".join(column[1:])) for column in texts]
        for cap in (24, 16, 12, 8, 0):
            least = [
                n if column.no_wrap else min(n, max([0, *header, *(w for w in cells if w <= cap)]))
                for column, n, header, cells in zip(
                    self.columns, natural, header_words, cell_words, strict=True
                )
            ]
            if sum(least) <= room:
                break
        else:
            return None

        # the widest columns give way first: a common level, none below its least width
        def at(level: int) -> list[int]:
            return [max(a, min(n, level)) for a, n in zip(least, natural, strict=True)]

        level = max(natural)
        while level > 0 and sum(at(level)) > room:
            level -= 1
        widths = at(level)
        spare = room - sum(widths)
        for i, n in enumerate(natural):
            if spare > 0 and widths[i] < n:
                widths[i] += 1
                spare -= 1
        return widths


def _plain(cell: object) -> str | None:
    if isinstance(cell, str):
        return cell
    return cell.plain if isinstance(cell, Text) else None


def _natural_width(texts: list[str]) -> int:
    """The width of a column's longest line of text, unwrapped."""
    return max(cell_len(line) for t in texts for line in (t.splitlines() or [""]))


def _word_lengths(text: str) -> list[int]:
    return [cell_len(word) for word in text.split()]


def esc(value: object) -> str:
    """``value`` as text for ``console.print``: square brackets in paths and messages are
    console markup and would vanish unescaped."""
    return escape(str(value))


@app.command()
def perf(
    entries: list[str] = typer.Argument(None, help="Entries to run (default: all)."),
    out: Path = typer.Option(Path("facehd-out/perf.csv"), help="CSV file to write."),
    quick: bool = typer.Option(False, help="Smaller problems (a smoke run)."),
    list_entries: bool = typer.Option(False, "--list", help="List the entries and exit."),
) -> None:
    """Run speed benchmarks, print a table and write a CSV.

    An existing CSV of this command keeps the rows of the entries not run now; any other file
    is refused.

    Example: facehd perf distance procrustes-icp --out facehd-out/perf.csv
    """
    from facehd import perf as perf_mod

    if list_entries:
        table = PlainTable("entry", "description")
        for name, entry in sorted(perf_mod.discover().items()):
            table.add_row(name, entry.description)
        console.print(table)
        return
    from facehd.errors import FacehdError, check_output_file

    rows: list = []
    with _exit_on_error(FacehdError, ValueError):
        check_output_file(out, "CSV")  # before minutes of measuring
        perf_mod.check_csv(out)
        try:
            perf_mod.run(entries or None, quick=quick, rows=rows)
        except KeyboardInterrupt:  # Ctrl-C or kill: the entries finished so far are kept
            done = sorted({r.entry for r in rows})
            if done:
                written = esc(perf_mod.write_csv(rows, out))
                said = f"the rows of {', '.join(done)} written into {written}"
            else:
                said = f"no entry finished; {esc(out)} left as it was"
            console.print(f"[yellow]interrupted:[/yellow] {said}", soft_wrap=True)
            raise typer.Exit(130) from None
    table = PlainTable(
        Column("entry", no_wrap=True), "metric", "value", "unit", "target", "ok", "note"
    )
    for r in rows:
        ok = "" if r.passed is None else ("yes" if r.passed else "NO")
        table.add_row(r.entry, r.metric, f"{r.value:.4g}", r.unit, r.target, ok, r.note)
    console.print(table)
    console.print(f"wrote {esc(perf_mod.write_csv(rows, out))}")


def _error(message: str) -> None:
    """Print ``error: <message>`` unwrapped, so a long path in it stays whole for grep and copy."""
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)


@contextmanager
def _exit_on_error(*errors: type[BaseException]) -> Iterator[None]:
    """Turn the given exceptions into ``error: <message>`` and exit status 2."""
    try:
        yield
    except errors as exc:
        _error(esc(exc))
        raise typer.Exit(2) from exc


RESUMES = "what was finished is kept; run the same command again to resume"


def _interrupt_says(message: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A command that, stopped by Ctrl-C or SIGTERM, prints ``interrupted: <message>`` before it
    exits with status 130 (without it the command line ends silently)."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except KeyboardInterrupt:
                console.print(f"[yellow]interrupted:[/yellow] {message}", soft_wrap=True)
                raise typer.Exit(130) from None

        return run

    return wrap


def _check_landmark_mode(mode: str) -> None:
    """Exit 2 with a message unless ``mode`` is one of the ``--landmarks`` choices."""
    from facehd.detect import LANDMARK_MODES

    if mode not in LANDMARK_MODES:
        bad = esc(repr(mode))
        _error(f"--landmarks must be auto, detect or given, not {bad}")
        raise typer.Exit(2)


def _progress(*, on_first_update: bool = False):
    """A rich progress display. With ``on_first_update`` it shows nothing until ``bar.start()``
    (safe to call again) or a task's first update or advance: for batch runs whose library
    code reports ``progress(0, total)`` once its checks have passed
    (:func:`facehd.h5io.process_items`), or that start it once their model has loaded, so an
    error before any work (settings that differ from the output's, a checkpoint that does not
    load) is said alone, under no empty bar."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class _FirstUpdateProgress(Progress):
        def __enter__(self) -> _FirstUpdateProgress:
            return self

        def __exit__(self, *exc: object) -> None:
            if self.live.is_started:
                self.stop()

        def update(self, task_id: Any, **kwargs: Any) -> None:
            if not self.live.is_started:
                self.start()
            super().update(task_id, **kwargs)

        def advance(self, task_id: Any, advance: float = 1) -> None:
            if not self.live.is_started:
                self.start()
            super().advance(task_id, advance)

    return (_FirstUpdateProgress if on_first_update else Progress)(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@app.command()
def models(
    registry: Path = typer.Option(None, help="datasets.yaml to read model paths from."),
) -> None:
    """List the morphable models available.

    Example: facehd models
    """
    from facehd.morphable import available_models

    bfm_path = uv_path = None
    try:
        from facehd.datasets import load_registry

        entry = load_registry(registry).models.get("bfm")
        if entry is not None:
            bfm_path, uv_path = entry.files.get("model"), entry.files.get("uv")
    except ValueError as exc:
        if registry is not None:  # the file asked for: an error, as for facehd datasets
            _error(esc(exc))
            raise typer.Exit(2) from exc
        console.print(f"[yellow]registry not read:[/yellow] {esc(exc)}")
    cols = ("available", "vertices", "identity", "expression", "albedo")
    table = PlainTable(Column("model", no_wrap=True), *cols)
    # the files in a table of their own: whole, broken across lines only when the paths are
    # longer than the terminal is wide (beside the counts they were cut to a few letters)
    sources = PlainTable(Column("model", no_wrap=True), Column("source", overflow="fold"))
    infos = available_models(bfm_path=bfm_path, uv_path=uv_path)
    for info in infos:
        table.add_row(
            info.name,
            "yes" if info.available else "no",
            str(info.n_vertices or ""),
            str(info.n_id or ""),
            str(info.n_exp or ""),
            str(info.n_tex or ""),
        )
        sources.add_row(info.name, info.source)
    console.print(table)
    console.print(sources)
    for info in infos:  # why a model cannot be used: a missing file, or what is wrong with it
        if not info.available and info.note:
            console.print(f"{esc(info.name)}: {esc(info.note)}", soft_wrap=True)


@app.command()
def datasets(
    registry: Path = typer.Option(
        None, help="datasets.yaml (default: FACEHD_DATASETS, ./, the installed one)."
    ),
) -> None:
    """List the entries of datasets.yaml and whether each is found on disk.

    Example: facehd datasets
    """
    from benchmarks.readers import layout_problem
    from facehd.datasets import load_registry

    with _exit_on_error(ValueError):
        reg = load_registry(registry)
    console.print(f"registry: {esc(reg.path)}")
    fold = {"overflow": "fold"}  # paths shown whole, broken across lines when narrow
    table = PlainTable(
        Column("dataset", no_wrap=True),
        "found",
        Column("root", **fold),
        Column("override", **fold),
        "splits",
        Column("homepage", **fold),
        records_when_narrow=True,  # the paths and addresses whole, one to a line
    )
    for d in reg.datasets.values():
        # a folder holding something is not yet the benchmark: its ground truth's folders
        # must lie as `facehd bench` reads them
        problem = d.problem or layout_problem(d.name, d.root)
        splits = ", ".join(s.name for s in d.splits)
        gone = d.missing_splits if problem is None else []
        if gone:
            splits += f" (not here: {', '.join(gone)})"
        table.add_row(
            d.name,
            Text("yes", style="green") if problem is None else f"no: {problem}",
            str(d.root),
            d.env,
            splits,
            d.homepage,
        )
    for m in reg.models.values():
        problem = m.problem  # reads the model's files: once
        table.add_row(
            f"model:{m.name}",
            Text("yes", style="green") if problem is None else f"no: {problem}",
            str(m.root),
            m.env,
            ", ".join(f"{k}={v.name}" for k, v in m.files.items()),
            m.homepage,
        )
    console.print(table)


def _synth_scans_cmd(out: Path, config: Any) -> list:
    """``facehd synth``'s scans (a :class:`pipelines.synth.SynthConfig`) into ``out``, checked,
    made and listed."""
    from facehd.errors import FacehdError
    from pipelines.synth import (
        check_scans_folder,
        check_scans_room,
        own_scans,
        record_settings,
        synth_scans,
    )

    with _exit_on_error(FacehdError, OSError):
        check_scans_room(out, config)  # a request the disk cannot hold: before the folder is made
        check_scans_folder(out)
        record_settings(out, config)
    with _progress() as bar:
        task = bar.add_task("synthetic scans", total=config.subjects * config.expressions)
        scans = synth_scans(out, config, progress=lambda _sid: bar.advance(task))
    cols = ("scan", "vertices", "faces", "units", "outer-eye mm", "deform rms mm", "disp rms mm")
    table = PlainTable(*cols)
    for s in scans:
        table.add_row(
            s.sample_id,
            str(s.n_vertices),
            str(s.n_faces),
            s.units,
            f"{s.interocular_mm:.1f}",
            f"{s.deformation_rms_mm:.2f}",
            f"{s.displacement_rms_mm:.3f}",
        )
    console.print(table)
    earlier = sum(not s.made_now for s in scans)
    added = sum(s.photos_added for s in scans)
    new = len(scans) - earlier - added
    counts = (
        (new, "{} made now"),
        (added, "photos added to {} made by an earlier run"),
        (earlier, "{} by an earlier run"),
    )
    made = "made now" if new == len(scans) else ", ".join(t.format(n) for n, t in counts if n)
    console.print(f"{len(scans)} scans in {esc(out)} ({made})")
    # this command's own scans beyond the ones asked for (files in sub-folders are not its own)
    asked = {s.sample_id for s in scans}
    more = sorted(set(own_scans(out)) - asked)
    if more:
        named = ", ".join(more[:3]) + (f" and {len(more) - 3} more" if len(more) > 3 else "")
        console.print(
            f"note: {esc(out)} holds {len(asked) + len(more)} scans, {len(more)} more than asked "
            f"({esc(named)}, made by an earlier run with more subjects or expressions); "
            "build-priors on the folder takes every one",
            soft_wrap=True,
        )
    return scans


@app.command()
@_interrupt_says(RESUMES)
def synth(
    out: Path = typer.Option(Path("facehd-out/synth"), help="Output folder."),
    subjects: int = typer.Option(
        None, min=1, help="Number of subjects (default 3; with --benchmark 2)."
    ),
    expressions: int = typer.Option(
        None, min=1, help="Scans per subject, the first neutral (default 2)."
    ),
    seed: int = typer.Option(0, min=0, help="Random seed (same seed, same bytes)."),
    units: str = typer.Option("mm", help="Units of the written scans: mm, cm or m."),
    photos: int = typer.Option(
        0, min=0, help="Also render this many photos per scan, with exact ground truth."
    ),
    colours: bool = typer.Option(
        False, "--colours", help="Give the scans vertex colours: the subject's skin albedo."
    ),
    benchmark: str = typer.Option(
        None,
        help="Instead of scans, write a small synthetic benchmark: now, realy, facescape or "
        "multiview.",
    ),
) -> None:
    """Make synthetic raw scans (or a synthetic benchmark) with exact ground truth.

    Files per scan: <id>.ply, <id>.lm7.txt, <id>.gt.npz, <id>.gt_m1.ply, <id>.gt_m2.ply; with
    --photos V also photos/<id>_vKK.png with its exact landmarks photos/<id>_vKK.pts, and
    <id>.photos.npz (cameras, landmarks, masks, textures). An interrupted run resumes.

    A --benchmark folder is marked unfinished (synth.json) until its last file is written:
    facehd bench refuses one stopped part way, and the same command run again finishes it.

    Counts are checked against the disk before anything is written: a request whose estimated
    size exceeds the free space of the --out disk is refused, with its estimated size and time
    (about 17 MB and 4 s a scan, 1.8 MB and 4 s more a photo; a benchmark's subject 3-30 MB;
    scans finished before are not counted).

    Example: facehd synth --out facehd-out/synth --subjects 3 --expressions 2 --seed 0 --units mm

    Example: facehd synth --out facehd-out/synth-colour --subjects 2 --colours

    Example: facehd synth --benchmark realy --out facehd-out/realy --subjects 3 --seed 7
    """
    if units not in ("mm", "cm", "m"):
        _error(f"--units must be mm, cm or m, not {esc(repr(units))}")
        raise typer.Exit(2)
    if benchmark is not None:
        from benchmarks.synthetic import make_synthetic_benchmark
        from facehd.errors import FacehdError

        if benchmark not in ("now", "realy", "facescape", "multiview"):
            _error("--benchmark must be now, realy, facescape or multiview")
            raise typer.Exit(2)
        ignored = [
            flag
            for flag, given in (
                ("--expressions", expressions is not None),
                ("--units", units != "mm"),
                ("--photos", photos != 0),
                ("--colours", colours),
            )
            if given
        ]
        if ignored:
            _error(
                f"{', '.join(ignored)}: not for --benchmark (a benchmark has its own layout, "
                "units and photos); --subjects and --seed apply"
            )
            raise typer.Exit(2)
        with _exit_on_error(FacehdError, ValueError, OSError):
            try:
                path = make_synthetic_benchmark(
                    benchmark, out, seed=seed, n_subjects=2 if subjects is None else subjects
                )
            except KeyboardInterrupt:
                console.print(
                    f"[yellow]interrupted:[/yellow] the benchmark in {esc(out)} is unfinished "
                    "(facehd bench refuses it); run the same command again to finish it",
                    soft_wrap=True,
                )
                raise typer.Exit(130) from None
        console.print(f"wrote synthetic {esc(benchmark)} benchmark to {esc(path)}")
        return
    subjects = 3 if subjects is None else subjects
    expressions = 2 if expressions is None else expressions
    from pipelines.synth import SynthConfig

    config = SynthConfig(
        subjects=subjects,
        expressions=expressions,
        seed=seed,
        units=units,
        photos=photos,
        colours=colours,
    )
    _synth_scans_cmd(out, config)


@app.command()
@_interrupt_says(RESUMES)
def quickstart(
    out: Path = typer.Option(Path("facehd-out"), help="Output folder."),
    subjects: int = typer.Option(
        2, min=1, help="Synthetic subjects scanned (the NoW benchmark has its own 2)."
    ),
    expressions: int = typer.Option(2, min=1, help="Scans per subject."),
    seed: int = typer.Option(0, min=0, help="Random seed (of the scans and the benchmark)."),
    workers: int = typer.Option(1, min=1, help="Processes for build-priors and bench."),
) -> None:
    """Run the main job on the built-in default model (facehd-synth), end to end.

    Synthetic scans with exact truth -> build-priors (aligned, fitted M0/M1/M2 maps, HDF5) ->
    a synthetic NoW benchmark scored -> the leaderboard. Every step is resumable.

    Example: facehd quickstart --out facehd-out
    """
    from facehd.errors import FacehdError

    try:
        _quickstart(out, subjects, expressions, seed, workers)
    except (FacehdError, ValueError, OSError) as exc:
        # the steps' own advice names their options (--overwrite ...); quickstart has --out
        _error(f"{esc(exc)}\n(quickstart: remove what the message names, or give another --out)")
        raise typer.Exit(2) from exc


def _quickstart(out: Path, subjects: int, expressions: int, seed: int, workers: int) -> None:
    from benchmarks.runner import run_benchmark
    from benchmarks.synthetic import check_benchmark_out, make_synthetic_benchmark
    from facehd.errors import FacehdError, InputFileError, check_output_folder
    from facehd.h5io import check_dataset_output, shards_dir
    from pipelines.build_priors import PriorsConfig, build_priors
    from pipelines.synth import SynthConfig, check_settings

    check_output_folder(out, "quickstart output")  # a file as --out: one line, not an OS error
    # the later steps' outputs, before the first step works: a folder in the way is said now
    priors = out / "priors.h5"
    check_dataset_output(priors)
    # a run of other settings there (another --seed): every part of it named at once, before
    # anything is written (the steps would each stop on their own, one rerun at a time)
    # the scans of step 1: checked here with the config the step then writes them with
    synth_config = SynthConfig(subjects=subjects, expressions=expressions, seed=seed, units="mm")
    other = []
    for check in (
        lambda: check_settings(out / "synth", synth_config),
        lambda: check_benchmark_out("now", out / "now", seed=seed),
    ):
        try:
            check()
        except InputFileError as exc:
            other.append(str(exc))
    if other and (priors.exists() or shards_dir(priors).exists()):
        other.append(f"{priors}: fitted from the scans of the other settings")
    if other:
        raise FacehdError(f"{out} holds what this quickstart cannot continue: " + "; ".join(other))

    console.rule("1/4 synthetic scans")
    _synth_scans_cmd(out / "synth", synth_config)
    console.rule("2/4 build-priors")
    with _progress(on_first_update=True) as bar:
        task = bar.add_task("scans", total=subjects * expressions)
        result = build_priors(
            out / "synth",
            priors,
            PriorsConfig(workers=workers),
            progress=lambda done, todo: bar.update(
                task, completed=subjects * expressions - todo + done
            ),
        )
    inspect(result.path)
    console.rule("3/4 synthetic NoW benchmark")
    root = Path(make_synthetic_benchmark("now", out / "now", seed=seed))
    scored = run_benchmark(
        "now",
        "synth-fit",
        predictions=root / "predictions" / "synth-fit",
        root=root,
        out=out / "bench",
        workers=workers,
    )
    console.print(f"{scored.n_ok} of {scored.n_items} images scored: {esc(scored.items_csv)}")
    console.rule("4/4 leaderboard")
    leaderboard(dataset="now", out=out / "bench")
    if result.n_failed or scored.n_failed:
        raise typer.Exit(1)


# --- commands of other capabilities are added below, one block each ---


# --- prepare-images (photo front end) ---
@app.command("prepare-images")
@_interrupt_says(RESUMES)
def prepare_images_cmd(
    images: Path = typer.Option(..., help="Folder of photos (searched recursively)."),
    out: Path = typer.Option(Path("facehd-out/photos.h5"), help="Output HDF5 dataset."),
    workers: int = typer.Option(1, min=1, help="Processes to run in parallel."),
    hd_size: int = typer.Option(
        512, min=224, max=4096, help="Side of the HD crop (texture), pixels."
    ),
    segmentation: bool = typer.Option(True, help="Refine face masks by person segmentation."),
    template: str = typer.Option(
        "anthropometric",
        help="5-point alignment template: anthropometric, deep3d (Deep3DFaceRecon's and HRN's, "
        "to fine-tune their official checkpoints) or facehd-synth.",
    ),
    landmarks: str = typer.Option(
        "auto",
        help="auto: a photo's landmarks from the iBUG .pts file beside it (face.jpg -> face.pts) "
        "when there is one, else detected; detect: always detected; given: always the file.",
    ),
    max_landmark_spread: float = typer.Option(
        0.12,  # facehd.detect.MAX_LANDMARK_SPREAD
        min=0.0,
        help="Refuse detected landmarks that the face mesh moves by more than this (eye "
        "distances) when fitted again in nearby crops: likely off the face; inf keeps all.",
    ),
    overwrite: bool = typer.Option(False, help="Start afresh instead of resuming."),
) -> None:
    """Detect, align (224 crop + HD crop), mask and store every photo of a folder (resumable).

    Needs the optional extra: pip install 'facehd\\[photo]'. Photos that cannot be read, show no
    face, or whose detected landmarks are unsure (--max-landmark-spread) go to failures.csv
    beside the output; the exit status is 1 when any failed.

    Example: facehd prepare-images --images photos/ --out facehd-out/photos.h5 --workers 4
    """
    from facehd.errors import FacehdError
    from pipelines.prepare_images import PrepareImagesConfig, find_photos, prepare_images

    _check_landmark_mode(landmarks)
    config = PrepareImagesConfig(
        hd_size=hd_size,
        segmentation=segmentation,
        template=template,
        landmarks=landmarks,
        max_landmark_spread=max_landmark_spread,
    )
    with _exit_on_error(FacehdError, ValueError, ImportError, WorkersDieAtStart):
        from facehd.align import named_template

        named_template(template)  # an unknown template is an error before any photo is read
        total = len(find_photos(images))
        with _progress(on_first_update=True) as bar:
            task = bar.add_task("photos", total=total)
            result = prepare_images(
                images,
                out,
                workers=workers,
                config=config,
                overwrite=overwrite,
                progress=lambda done, todo: bar.update(task, completed=total - todo + done),
            )
    console.print(
        f"{esc(result.out_path)}: {result.n_samples} faces "
        f"({result.n_written} new, {result.n_skipped} already done, {result.n_failed} failed)"
    )
    if result.n_small:
        from facehd.align import ENLARGED_CROP

        console.print(
            f"[yellow]note:[/yellow] {result.n_small} of the faces are small in their photos: "
            f"their 224 crop enlarges them more than {ENLARGED_CROP:g} times (field crop_scale), "
            "so the detail stage finds no skin detail in them",
            soft_wrap=True,
        )
    if result.n_failed:
        console.print(f"[yellow]failures:[/yellow] {esc(result.failures_path)}", soft_wrap=True)
        raise typer.Exit(1)


# --- bench and leaderboard (benchmarks) ---
@app.command()
@_interrupt_says("nothing of this run was written; run the same command again")
def bench(
    dataset: str = typer.Option(
        ..., help="now, realy, facescape or multiview, optionally :split (facescape:lab)."
    ),
    method: str = typer.Option(
        ..., help="Method name: the label of --predictions, or a registered method to run."
    ),
    predictions: Path = typer.Option(
        None, help="Folder of the method's meshes in the benchmark's layout."
    ),
    root: Path = typer.Option(None, help="Dataset root (default: its datasets.yaml entry)."),
    out: Path = typer.Option(Path("facehd-out/bench"), help="Output folder."),
    workers: int = typer.Option(1, min=1, help="Processes scoring images in parallel."),
    images: Path = typer.Option(
        None,
        help="REALY: the folder of the split's photos (<subject>_<name>.jpg): reconstructed by "
        "--method, or the names --predictions must hold (default: every subject once).",
    ),
    topology: str = typer.Option(
        None, help="REALY: topology keypoint file or template name (default: in --predictions)."
    ),
    checkpoint: Path = typer.Option(
        None, help="--method hrn without --predictions: the checkpoint to reconstruct with."
    ),
    deretouch: Path = typer.Option(
        None, help="Official HRN checkpoint only: its de-retouching checkpoint."
    ),
    bfm: Path = typer.Option(None, help="Official HRN checkpoint only: the BFM .mat file."),
    bfm_uv: Path = typer.Option(
        None, "--bfm-uv", "--uv", help="Official HRN checkpoint only: the BFM UV file."
    ),
    metrical: str = typer.Option(
        None,
        help="NoW / multiview: the metrical variant, with the predicted meshes' unit (mm, cm or "
        "m): the scale is fixed by the unit and only rotation and translation are fitted.",
    ),
    now_solver: str = typer.Option(
        "official",
        help="NoW / multiview: the rigid refinement's solver: 'official' (the official tool's "
        "dogleg, which stops once a step gains less than 0.01% of the objective) or 'minimum' "
        "(Levenberg-Marquardt run to the minimum itself).",
    ),
    precision: str = typer.Option(
        None,
        help="--method hrn without --predictions: float32 (default) or bfloat16, as in "
        "facehd reconstruct.",
    ),
    label: str = typer.Option(
        None,
        help="A registered method's run only: the name of its leaderboard row and folder "
        "(default: --method), to rank runs with other checkpoints or settings side by side.",
    ),
    refine_steps: int = typer.Option(
        None,
        min=0,
        help="--method hrn without --predictions: refine each single image's base coefficients "
        "(as facehd reconstruct --refine-steps; 0: off, the default).",
    ),
    fit_iterations: int = typer.Option(
        None,
        min=0,
        help="--method hrn without --predictions: then fit each single image alone on MV-HRN's "
        "objective (as facehd reconstruct --fit-iterations; 0: off, the default; multi-view "
        "sets keep their joint fit).",
    ),
    fit_deformation_start: str = typer.Option(
        None,
        help="--method hrn with --fit-iterations: where each image's deformation map starts, "
        "'network' (the default) or 'zero' (as facehd reconstruct --fit-deformation-start).",
    ),
    loader: str = typer.Option(
        None,
        help="FaceScape with --predictions: the official evaluator's loader reading the method's "
        "own files (PRNet, 3DDFA_V2, DECA, RingNet, SADRNet, ...; default 'generic', the "
        "image-aligned format).",
    ),
    facescape_depth: str = typer.Option(
        None,
        help="FaceScape: how the depth alignment's depth maps are made: 'rays' (exact depths, "
        "the default) or 'pyrender' (the official evaluator's OpenGL render, whose depths step "
        "with its depth buffer and the graphics driver: agrees with the official tool run on "
        "the same machine; needs pip install 'facehd[gl]' and, without a display, EGL or "
        "OSMesa).",
    ),
) -> None:
    """Score a method on a benchmark: items.csv, summary.csv and its leaderboard.csv row.

    Without --predictions a registered method (hrn) reconstructs the split's images first
    (NoW, multi-view, FaceScape, and REALY with --images; resumable, failures in
    predictions/failures.csv). What the predictions depend on (for hrn: the checkpoint's hash
    and --precision) is kept in predictions/method.json; a run with another checkpoint or
    precision into the same --out is refused rather than mixing two models' meshes: give each
    its own --label to rank them side by side in one leaderboard.

    Example: facehd bench --dataset realy:frontal --method hrn --predictions preds --root data/REALY

    Example: facehd bench --dataset now --method hrn --checkpoint runs/tiny/model.pt --root now

    Example: facehd bench --dataset now --method mine --predictions preds --metrical m

    Example: facehd bench --dataset now --method mine-minimum --predictions preds
    --now-solver minimum

    Example: facehd bench --dataset realy:frontal --method hrn --checkpoint runs/tiny/model.pt
    --root realy --images realy/images/frontal

    Example: facehd bench --dataset now --method hrn --checkpoint runs/b/model.pt --label hrn-b

    Example: facehd bench --dataset now --method hrn --checkpoint runs/tiny/model.pt --root now
    --refine-steps 300 --label hrn-refined

    Example: facehd bench --dataset now --method hrn --checkpoint runs/tiny/model.pt --root now
    --refine-steps 300 --fit-iterations 50 --label hrn-fitted

    Example: facehd bench --dataset now --method hrn --checkpoint runs/tiny/model.pt --root now
    --refine-steps 300 --fit-iterations 50 --fit-deformation-start zero --label hrn-fitted-zero

    Example: facehd bench --dataset facescape:wild --method deca --predictions deca_out
    --root facescape/benchmark --loader DECA

    Example: facehd bench --dataset facescape:lab --method mine-gl --predictions preds
    --root facescape/benchmark --facescape-depth pyrender
    """
    import os

    from benchmarks.now import NOW_SOLVERS, NowConfig
    from benchmarks.runner import run_benchmark
    from facehd.errors import FacehdError
    from models.bench import (
        ENV_BFM,
        ENV_BFM_UV,
        ENV_CHECKPOINT,
        ENV_DERETOUCH,
        ENV_FIT_DEFORMATION_START,
        ENV_FIT_ITERATIONS,
        ENV_PRECISION,
        ENV_REFINE_STEPS,
    )

    if now_solver not in NOW_SOLVERS:
        _error(f"--now-solver: expected one of {', '.join(NOW_SOLVERS)}, got {esc(now_solver)!r}")
        raise typer.Exit(2)
    if fit_deformation_start is not None:
        _check_fit_start(fit_deformation_start, bool(fit_iterations), joint=None)
    for option, value, env in (
        ("--refine-steps", refine_steps, ENV_REFINE_STEPS),
        ("--fit-iterations", fit_iterations, ENV_FIT_ITERATIONS),
        ("--fit-deformation-start", fit_deformation_start, ENV_FIT_DEFORMATION_START),
    ):
        if value is not None:
            if predictions is not None:
                _error(f"{option} applies to a registered method's run, not to --predictions")
                raise typer.Exit(2)
            os.environ[env] = str(value)
    if precision is not None:
        _check_precision(precision)
        os.environ[ENV_PRECISION] = precision
    for env, value, role in (
        (ENV_CHECKPOINT, checkpoint, "checkpoint (--checkpoint)"),
        (ENV_DERETOUCH, deretouch, "de-retouching checkpoint (--deretouch)"),
        (ENV_BFM, bfm, "BFM model file (--bfm)"),
        (ENV_BFM_UV, bfm_uv, "BFM UV file (--bfm-uv)"),
    ):
        if value is not None:
            if not value.exists():
                _error(f"{esc(value)}: {role} not found")
                raise typer.Exit(2)
            os.environ[env] = str(value.resolve())
    with _exit_on_error(FacehdError, ValueError, ImportError, WorkersDieAtStart):
        now_config = None
        if metrical is not None or now_solver != "official":
            kw: dict[str, Any] = {} if metrical is None else {"metrical": True, "unit": metrical}
            now_config = NowConfig(solver=now_solver, **kw)  # type: ignore[arg-type]
        with _progress(on_first_update=True) as bar:
            tasks: dict[str, Any] = {}

            def step(what: str) -> Any:  # each phase's bar starts with its first image
                def update(done: int, total: int) -> None:
                    if what not in tasks:
                        tasks[what] = bar.add_task(f"{dataset} {method}: {what}", total=total)
                    bar.update(tasks[what], completed=done, total=total)

                return update

            result = run_benchmark(
                dataset,
                method,
                predictions=predictions,
                root=root,
                out=out,
                workers=workers,
                topology=topology,
                now_config=now_config,
                progress=step("scored"),
                images=images,
                label=label,
                loader=loader,
                predict_progress=step("reconstructed"),
                facescape_depth=facescape_depth,
                notice=lambda said: bar.console.print(
                    f"[yellow]warning:[/yellow] {esc(said)}", soft_wrap=True
                ),
            )
    row = result.leaderboard_row
    table = PlainTable("dataset", "split", "method", "metric", "value")
    for name in ("cd_mm", "mne_rad", "cr", "nmse_mm", "median_mm", "mean_mm", "std_mm"):
        value = getattr(row, name)
        if value is not None:
            table.add_row(row.dataset, row.split, row.method, name, f"{value:.4f}")
    console.print(table)
    console.print(
        f"{result.n_items} images: {result.n_ok} scored, {result.n_missing} missing, "
        f"{result.n_failed} failed (see {esc(result.items_csv)})"
    )
    if result.n_warned:
        console.print(
            f"[yellow]warning:[/yellow] {result.n_warned} scored with a warning: predictions "
            f"that look like no face reconstruction, or misplaced (the warning column of "
            f"{esc(result.items_csv)})",
            soft_wrap=True,
        )
    if result.n_ok:
        console.print(
            f"wrote {esc(result.items_csv)}, {esc(result.summary_csv)}, "
            f"{esc(result.leaderboard_csv)}"
            + ("" if row.complete else " (listed after the complete runs: images unscored)")
        )
    else:
        console.print(
            f"wrote {esc(result.items_csv)}, {esc(result.summary_csv)}; nothing scored, so no "
            "leaderboard row and an earlier run's results are kept (is --predictions the "
            "method's folder in the benchmark's layout?)"
        )
    earlier = result.replaced
    if earlier is not None and earlier.data != row.data:
        console.print(
            f"note: this replaced the leaderboard's earlier {esc(repr(row.method))} row, scored "
            f"on other data ({esc(earlier.data or 'the benchmark')} -> "
            f"{esc(row.data or 'the benchmark')}); give each benchmark its own --out to keep "
            "both",
            soft_wrap=True,
        )
    elif earlier is not None and earlier.config_hash != row.config_hash:
        console.print(
            f"note: this replaced the leaderboard's earlier {esc(repr(row.method))} row of "
            f"another configuration (cfg {earlier.config_hash or '?'} -> {row.config_hash}, "
            f"{earlier.date[:10] or 'undated'}); give runs to compare their own "
            + ("--method name" if predictions is not None else "--label"),
            soft_wrap=True,
        )
    if result.n_missing or result.n_failed:
        raise typer.Exit(1)


@app.command()
def leaderboard(
    dataset: str = typer.Option(None, help="Only this dataset (now, realy, ...) or dataset:split."),
    out: Path = typer.Option(Path("facehd-out/bench"), help="Folder holding leaderboard.csv."),
    cumulative: bool = typer.Option(
        False,
        help="NoW and multi-view runs: also write their cumulative error curves, the NoW "
        "challenge's plot (OUT/<dataset>-<split>/cumulative.csv, and cumulative.png where "
        "Matplotlib is installed).",
    ),
) -> None:
    """Print the leaderboards, best first, with the numbers published in the HRN paper.

    Example: facehd leaderboard --dataset facescape:wild --out facehd-out/bench

    Example: facehd leaderboard --dataset now --out facehd-out/bench --cumulative
    """
    from benchmarks.leaderboard import PRIMARY_METRIC, PUBLISHED, load_leaderboard, ranked
    from facehd.errors import FacehdError

    columns = {
        "facescape": (("CD mm", "cd_mm"), ("MNE rad", "mne_rad"), ("CR", "cr")),
        "realy": (("mean mm", "nmse_mm"),),
        "now": (("median mm", "median_mm"), ("mean mm", "mean_mm"), ("std mm", "std_mm")),
        "multiview": (("median mm", "median_mm"), ("mean mm", "mean_mm"), ("std mm", "std_mm")),
    }
    known = {*PRIMARY_METRIC, *(r.dataset for r in PUBLISHED)}
    if dataset and dataset.strip().lower().partition(":")[0] not in known:
        _error(f"unknown dataset {esc(repr(dataset))} (one of {', '.join(sorted(known))})")
        raise typer.Exit(2)
    if dataset and ":" in dataset:  # a mistyped split must not look like "no runs"
        from benchmarks.runner import BenchmarkSpec

        try:
            BenchmarkSpec.parse(dataset)
        except ValueError as exc:
            _error(esc(str(exc)))
            raise typer.Exit(2) from None
    if out.exists() and not out.is_dir():
        _error(f"{esc(out)} is a file: --out is the folder holding leaderboard.csv")
        raise typer.Exit(2)
    board = out / "leaderboard.csv"
    if not board.exists():  # a mistyped --out must not look like "no runs"
        console.print(
            f"[yellow]note:[/yellow] {esc(board)} does not exist (facehd bench writes it): "
            "the published numbers only",
            soft_wrap=True,
        )
    elif board.is_file() and board.stat().st_size == 0:
        console.print(
            f"[yellow]note:[/yellow] {esc(board)} is empty: the published numbers only",
            soft_wrap=True,
        )
    with _exit_on_error(FacehdError):
        groups = ranked(load_leaderboard(board), dataset)
    if not groups:
        why = "" if board.is_file() else f": {esc(board)} does not exist (facehd bench writes it)"
        console.print(f"no leaderboard rows for {esc(repr(dataset))}{why}")
        raise typer.Exit(1)
    for (ds, split, data), rows in groups.items():
        cols = columns.get(ds, columns["now"])
        heads = ["#", "method", *[c for c, _ in cols], "images", "source"]
        title = f"{ds}:{split}"
        if data.startswith("synthetic"):  # apart: the published numbers are on the real data
            made = data[len("synthetic") :].strip(", ")
            title += (
                f" on synthetic data ({made + '; ' if made else ''}facehd synth --benchmark; "
                "not comparable to the paper's)"
            )
        table = PlainTable(*heads, title=title)
        for rank, r in enumerate(rows, start=1):
            images = "" if r.n_items is None else str(r.n_items)
            if not r.complete:  # unranked: a metric over fewer images
                images = f"{r.n_scored} of {r.n_items} scored"
            vals = [getattr(r, a) for _, a in cols]
            if r.source == "reported":
                source = f"reported: {r.reference.rsplit(', ', 1)[-1]} (HRN, CVPR 2023)"
            else:
                source = f"facehd {r.facehd_version} {r.date[:10]} cfg {r.config_hash}"
            table.add_row(
                str(rank) if r.complete else "-",
                r.method,
                *["" if v is None else f"{v:.4g}" for v in vals],
                images,
                source,
            )
        console.print(table)
    if cumulative:
        _print_cumulative(out, dataset)


def _print_cumulative(out: Path, dataset: str | None) -> None:
    """``leaderboard --cumulative``: write the NoW-protocol runs' curves and say where."""
    from benchmarks.cumulative import write_cumulative
    from facehd.errors import FacehdError

    with _exit_on_error(FacehdError):
        written = write_cumulative(out, dataset)
    if not written:
        console.print(
            "no cumulative error curves: no NoW or multi-view run with its distances.npz",
            soft_wrap=True,
        )
    for c in written:
        drawn = f" and {esc(c.plot)}" if c.plot else " (install matplotlib for the plot)"
        console.print(f"cumulative errors, {esc(c.title)}: {esc(c.csv)}{drawn}", soft_wrap=True)
        if c.skipped:
            console.print(
                f"[yellow]note:[/yellow] no distances.npz for {esc(', '.join(c.skipped))} "
                "(their folders were moved or deleted): not drawn",
                soft_wrap=True,
            )


# --- build-priors, inspect, verify (scan priors) ---
@app.command("build-priors")
@_interrupt_says(RESUMES)
def build_priors_cmd(
    scans: Path = typer.Option(
        ..., help="Folder of raw scans (.obj/.ply/.stl/.off/.wrl) with landmark files."
    ),
    out: Path = typer.Option(Path("facehd-out/priors.h5"), help="HDF5 dataset to write."),
    model: str = typer.Option("facehd-synth", help="Morphable model: facehd-synth or bfm."),
    bfm_path: Path = typer.Option(
        None, "--bfm-path", "--bfm", help="BFM_model_front.mat (--model bfm; default: registry)."
    ),
    uv_path: Path = typer.Option(
        None, "--uv-path", "--uv", help="The BFM's UV layout file (--model bfm)."
    ),
    units: str = typer.Option("auto", help="Scan units: auto (from the landmarks), mm, cm or m."),
    workers: int = typer.Option(1, min=1, help="Processes on this machine."),
    executor: str = typer.Option("local", help="local (process pool) or ray (facehd\\[ray])."),
    ray_address: str = typer.Option(None, help="Ray cluster address (auto: the running one)."),
    export_meshes: Path = typer.Option(None, help="Write <id>.m0/.m1/.m2.ply here (model space)."),
    previews: Path = typer.Option(None, help="Write one preview PNG per scan here."),
    smoothness: float = typer.Option(3.0, min=0.0, help="Deformation map smoothness weight."),
    m0_fold_angle: float = typer.Option(
        60.0,
        min=0.0,
        max=180.0,
        help="Fold angle (degrees) of the pose + M0 fit: sharper model folds take no scan "
        "points. 30 resumes a dataset built before this option existed.",
    ),
    shard_size: int = typer.Option(16, min=1, help="Samples per shard (most a crash can lose)."),
    overwrite: bool = typer.Option(False, help="Start afresh instead of resuming."),
    auto_landmarks: bool = typer.Option(
        True, help="Find landmarks automatically for scans without a landmark file (photo extra)."
    ),
    landmarks: Path = typer.Option(
        None,
        help="Also look for the scans' landmark files here, as facehd landmarks --out wrote them "
        "(<id>.lm7.txt, <id>_picked_points.pp); files beside a scan are tried first.",
    ),
) -> None:
    """Fit raw scans with the hierarchical representation and store the maps in one HDF5 file.

    Per scan: landmarks and units, alignment to the model (Procrustes, ICP), M0 coefficients, the
    64x64x3 deformation map and the 256x256 displacement map (schema facehd.priors/1). Rerun the
    same command after an interruption to resume. Failed scans go to failures.csv beside the
    output; the exit status is 1 when any failed.

    Example: facehd build-priors --scans facehd-out/synth --out facehd-out/priors.h5 --workers 2
    """
    from facehd.errors import FacehdError
    from pipelines.build_priors import PriorsConfig, build_priors, discover_scans
    from pipelines.fitting import FitConfig
    from pipelines.model_landmarks import load_fit_model

    if units not in ("auto", "mm", "cm", "m"):
        _error(f"--units must be auto, mm, cm or m, not {esc(repr(units))}")
        raise typer.Exit(2)
    if executor not in ("local", "ray"):
        _error(f"--executor must be local or ray, not {esc(repr(executor))}")
        raise typer.Exit(2)
    config = PriorsConfig(
        model=model,
        bfm_path=None if bfm_path is None else str(bfm_path),
        uv_path=None if uv_path is None else str(uv_path),
        units=units,
        fit=FitConfig(deformation_smoothness=smoothness, m0_fold_angle_deg=m0_fold_angle),
        workers=workers,
        executor=executor,
        ray_address=ray_address,
        export_meshes=None if export_meshes is None else str(export_meshes),
        previews=None if previews is None else str(previews),
        shard_size=shard_size,
        overwrite=overwrite,
        auto_landmarks=auto_landmarks,
    )
    with _exit_on_error(FacehdError, ValueError, ImportError, WorkersDieAtStart):
        if executor == "ray":  # not installed: said before any folder is made
            from pipelines.executor import import_ray

            import_ray()
        found = discover_scans(scans, landmarks)
        load_fit_model(model, config.bfm_path, config.uv_path)  # missing files: before the bar
        n_auto = sum(s.landmarks_path is None for s in found)
        if n_auto and auto_landmarks:
            console.print(
                f"{n_auto} scans have no landmark file: their landmarks are found automatically "
                "(for those not fitted before)",
                soft_wrap=True,
            )
        with _progress(on_first_update=True) as bar:
            task = bar.add_task("scans", total=len(found))
            result = build_priors(
                found,
                out,
                config,
                progress=lambda done, todo: bar.update(task, completed=len(found) - todo + done),
            )
    console.print(
        f"{esc(result.path)}: {result.n_samples} samples ({result.n_written} new, "
        f"{result.n_skipped} already done, {result.n_failed} failed)"
    )
    if n_auto and result.n_samples:
        console.print(_landmark_sources(result.path), soft_wrap=True)
    if (previews is not None or export_meshes is not None) and result.n_skipped:
        console.print(
            f"previews and meshes are written for the scans this run fitted; the "
            f"{result.n_skipped} done before have those their own run wrote (--overwrite refits "
            "every scan)",
            soft_wrap=True,
        )
    if result.n_failed:
        console.print(f"[yellow]failures:[/yellow] {esc(result.failures_path)}", soft_wrap=True)
        raise typer.Exit(1)


_FIT_ITERATIONS_HELP = (
    "Then fit each photo alone on MV-HRN's objective (its coefficients, deformation and "
    "displacement maps; photometric on R1 and R2, landmarks, contour, regularisers; the "
    "deformation's total variation weighted 5e3, as HRN weighs it for one image): Adam "
    "iterations (0: off). Single photos; --multiview fits with --iterations."
)


_FIT_START_HELP = (
    "With --fit-iterations or --multiview: where the fitted deformation map starts, 'network' "
    "(the mid-frequency network's map, or the views' mean; the default) or 'zero' (M1 starts "
    "as M0 and the fit draws the map from the photos alone)."
)


def _check_fit_start(start: str, fitting: bool, joint: str | None = "--multiview") -> None:
    """Refuse a ``--fit-deformation-start`` that names no start, or that asks for another start
    than the default while nothing is fitted (``fitting``: ``--fit-iterations`` or the joint fit,
    the option ``joint``, where the command has one, was given)."""
    from models.multiview import DEFORMATION_STARTS

    if start not in DEFORMATION_STARTS:
        _error(f"--fit-deformation-start must be one of {', '.join(DEFORMATION_STARTS)}")
        raise typer.Exit(2)
    if start != "network" and not fitting:
        either = f" (single photos) or {joint}" if joint else ""
        _error(f"--fit-deformation-start applies to the fits: give --fit-iterations{either}")
        raise typer.Exit(2)


def _single_view_fit(iterations: int, multiview: bool, start: str = "network") -> Any:
    """The per-photo fit of ``--fit-iterations`` (None when 0), its deformation map starting as
    ``--fit-deformation-start`` says; refused with ``--multiview``, whose joint fit takes
    ``--iterations``."""
    from models.multiview import single_view_config

    _check_fit_start(start, bool(iterations) or multiview)
    if not iterations:
        return None
    if multiview:
        _error("--fit-iterations fits single photos; --multiview fits the views with --iterations")
        raise typer.Exit(2)
    return single_view_config(iterations, start)


def _landmark_sources(path: Path) -> str:
    """One line on where a priors dataset's landmarks came from (given, detected, the model's)."""
    from facehd.h5io import open_dataset
    from pipelines.build_priors import DETECTED, found_by

    with open_dataset(path) as ds:
        sources = [str(s) for s in ds.read_field("landmarks_source")]
    found = [by for by in map(found_by, sources) if by is not None]
    checked = [by for by in found if by != DETECTED]
    line = f"landmarks: {len(sources) - len(found)} given, {len(found)} found automatically"
    if found:
        models = sorted(set(checked))
        line += (
            f" ({len(checked)} the model's points{': ' + ', '.join(models) if models else ''}; "
            f"{len(found) - len(checked)} the detection's)"
        )
    return line + " (the landmarks_source field of each sample)"


@app.command()
def inspect(
    path: Path = typer.Argument(..., help="A facehd HDF5 dataset."),
    samples: bool = typer.Option(
        False,
        "--samples",
        help="Also a line per sample with its small fields (scalars, strings, up to 3 values): "
        "which landmarks were detected or given, residuals, turns, sources.",
    ),
) -> None:
    """Summarise a dataset: schema, samples, fields; for scan priors residuals and coverage.

    Example: facehd inspect facehd-out/priors.h5 --samples
    """
    import numpy as np

    from facehd.errors import FacehdError
    from facehd.h5io import open_dataset
    from pipelines.build_priors import SCHEMA, inspect_priors

    rows: list[list[str]] = []
    small: list[str] = []
    with _exit_on_error(FacehdError, OSError):
        with open_dataset(path) as ds:
            schema, n, fields, attrs = ds.schema, len(ds), ds.fields, ds.attrs
            if samples:
                small = [k for k, spec in fields.items() if int(np.prod(spec.shape)) <= 3]
                columns = [ds.sample_ids] + [list(ds.read_field(k)) for k in small]
                rows = [[_cell(v) for v in row] for row in zip(*columns, strict=True)]
        summary = inspect_priors(path) if schema == SCHEMA else None
    console.print(f"{esc(path)}: schema {esc(schema)}, {n} samples")
    table = PlainTable("field", "shape per sample", "dtype")
    for name, spec in fields.items():
        table.add_row(name, str(spec.shape), spec.dtype)
    console.print(table)
    plain = {k: v for k, v in attrs.items() if not isinstance(v, (dict, list))}
    console.print("attributes: " + ", ".join(f"{k}={v}" for k, v in sorted(plain.items())))
    if n == 0:  # no residuals or coverage to summarise
        failed = f"; {summary.n_failed} failed scans" if summary is not None else ""
        console.print(f"it holds no samples{failed}")
    elif summary is not None:
        levels = PlainTable("level", "median of per-scan median mm", "worst per-scan median mm")
        for k, name in enumerate(("M0", "M1", "M2")):
            levels.add_row(
                name, f"{summary.residual_median[k]:.4f}", f"{summary.residual_max[k]:.4f}"
            )
        console.print(levels)
        # subjects are named by the scans' layout (<subject>_eNN, <subject>/...), or not at all
        subjects = f"{summary.subjects} subjects" if summary.subjects else "subjects not named"
        console.print(
            f"model {esc(summary.model)}, units {summary.units}, {subjects}; "
            f"valid texels: deformation {100 * summary.deformation_coverage:.1f}%, "
            f"displacement {100 * summary.displacement_coverage:.1f}% "
            f"(rms {summary.displacement_rms:.3f} mm); {summary.n_failed} failed scans"
        )
    if samples:  # one line per sample: tables of a dozen columns do not fit a terminal
        for sample_id, *values in rows:
            pairs = "  ".join(f"{k}={v}" for k, v in zip(small, values, strict=True))
            console.print(f"{sample_id}: {pairs}", soft_wrap=True, markup=False, highlight=False)


def _cell(value: Any) -> str:
    """A small field's value as text (numbers to 4 significant digits; a dataset's string
    fields are read as ``str``)."""
    import numpy as np

    if isinstance(value, str):
        return value
    arr = np.asarray(value)
    if arr.dtype.kind == "f":
        return " ".join(f"{x:.4g}" for x in arr.reshape(-1))
    return " ".join(str(x) for x in arr.reshape(-1))


@app.command()
def verify(
    path: Path = typer.Argument(..., help="A facehd HDF5 dataset."),
) -> None:
    """Check a dataset (layout, checksums, NaNs; for scan priors transforms, masks, residuals).

    The exit status is 1 when a problem is found.

    Example: facehd verify facehd-out/priors.h5
    """
    from facehd.h5io import verify as verify_file
    from pipelines import build_priors, prepare_images
    from pipelines.fitting import FitConfig

    report = verify_file(path)
    problems = list(report.problems)
    # the fields each schema facehd writes must have (a photos file may have more: pairs)
    required = {
        build_priors.SCHEMA: set(build_priors.fields_for(1, 1, FitConfig())),
        prepare_images.SCHEMA: set(prepare_images.fields_spec(prepare_images.CROP_SIZE))
        - set(prepare_images.FIELDS_ADDED_LATER),
    }
    if not problems and report.schema not in required:
        problems.append(
            f"schema {report.schema!r} is none facehd writes ({', '.join(sorted(required))})"
        )
    elif not problems:
        missing = sorted(required[report.schema] - set(report.fields))
        if missing:
            problems.append(f"fields {missing} of schema {report.schema} missing")
    if not problems and report.schema == build_priors.SCHEMA:
        problems = build_priors.verify_priors(path)
    if problems:
        console.print(f"[red]{esc(path)}: {len(problems)} problem(s)[/red]", soft_wrap=True)
        for p in problems:
            console.print(f"  {esc(p)}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"{esc(path)}: schema {esc(report.schema)}, {report.n_samples} samples, OK")


# --- landmarks (automatic 3D landmarks for raw scans) ---
@app.command("landmarks")
@_interrupt_says(RESUMES)
def landmarks_cmd(
    scans: Path = typer.Option(
        ..., help="Folder of raw scans, .obj/.ply/.stl/.off/.wrl (searched recursively)."
    ),
    out: Path = typer.Option(
        None, help="Folder for the landmark files and landmarks.csv (default: beside each scan)."
    ),
    overlays: Path = typer.Option(None, help="Folder for one overlay PNG per scan."),
    units: str = typer.Option("auto", help="Units of the scans: auto (from size), mm, cm, m."),
    workers: int = typer.Option(1, min=1, help="Processes to run in parallel."),
    overwrite: bool = typer.Option(False, help="Redo scans that already have landmark files."),
    meshlab: bool = typer.Option(
        False,
        help="Also write <id>_picked_points.pp, to check and move the points in MeshLab's "
        "PickPoints tool; build-priors takes that file first.",
    ),
    model_check: str = typer.Option(
        "facehd-synth",
        help="Morphable model fitted to each scan from the detected points: where it describes "
        "the face (median residual <= 0.25 mm), its landmark vertices are written instead "
        "(facehd-synth, bfm as registered in datasets.yaml, or none).",
    ),
) -> None:
    """Find 68 iBUG and NoW's 7 landmarks on raw scans in any orientation; one CSV row per scan.

    Writes <id>.lm68.txt and <id>.lm7.txt (scan frame and units), an overlay PNG per scan and
    landmarks.csv with each scan's confidence, or why it failed (no face, unsure, wrong units,
    unreadable). Needs the optional extra: pip install 'facehd\\[photo]'. The exit status is 1 when
    any scan failed.

    Example: facehd landmarks --scans facehd-out/raw --out facehd-out/lm --overlays facehd-out/lm
    """
    from facehd.errors import FacehdError
    from facehd.scan_landmarks import ScanLandmarkConfig
    from pipelines.landmarks import CSV_NAME, LandmarksConfig, find_scans, landmark_scans
    from pipelines.model_landmarks import ModelCheckConfig, load_fit_model

    with _exit_on_error(FacehdError, ImportError, ValueError, WorkersDieAtStart):
        check = None
        if model_check.strip().lower() != "none":
            load_fit_model(model_check)  # an unknown model or missing files: an error now
            check = ModelCheckConfig(model=model_check)
        config = LandmarksConfig(
            out=None if out is None else str(out),
            overlays=None if overlays is None else str(overlays),
            overwrite=overwrite,
            workers=workers,
            meshlab=meshlab,
            detector=ScanLandmarkConfig(units=units),
            model_check=check,
        )
        total = len(find_scans(scans))
        with _progress(on_first_update=True) as bar:
            task = bar.add_task("scans", total=total)
            result = landmark_scans(
                scans,
                config,
                progress=lambda done, todo: bar.update(task, completed=total - todo + done),
            )
    # a scan's name whole on one line, unless so long that the other columns would vanish
    short = max((len(r.scan_id) for r in result.rows), default=0) <= 22
    table = PlainTable(
        Column("scan", no_wrap=short),
        "status",
        "confidence",
        "NoW-7 spread mm",
        "units",
        "rendered",
        "points",
        "reason or note",
    )
    given = 0
    for r in result.rows:
        conf = "" if r.confidence is None else f"{r.confidence:.2f}"
        spread = "" if r.now7_spread_max_mm is None else f"{r.now7_spread_max_mm:.1f}"
        note = r.detail or r.reason
        if r.status == "skipped" and r.reason == "given":  # one explanation below the table
            given += 1
            note = "given landmarks kept"
        table.add_row(r.scan_id, r.status, conf, spread, r.units, r.appearance, r.source, note)
    console.print(table)
    if given:
        console.print(
            f"{given} scan{'s' if given > 1 else ''} skipped for landmarks given beside "
            f"{'them' if given > 1 else 'it'} (made by hand, by facehd synth or another tool; "
            "build-priors reads them before detected points): kept and not detected, even with "
            f"--overwrite; {CSV_NAME} names each file. Move them aside to detect."
        )
    found = f"{result.n_ok} found"
    if result.n_earlier:
        found += f" ({result.n_ok - result.n_earlier} now, {result.n_earlier} by an earlier run)"
    console.print(
        f"{found}, {result.n_failed} failed, {result.n_skipped} skipped; "
        f"table: {esc(result.csv_path)}"
    )
    if result.n_failed:
        raise typer.Exit(1)


# --- train, reconstruct, evaluate, ablation (HRN models) ---
def _check_precision(precision: str) -> None:
    """Exit 2 with a message unless ``precision`` is one of the ``--precision`` choices."""
    from models.precision import PRECISIONS

    if precision not in PRECISIONS:
        _error(f"--precision must be {' or '.join(PRECISIONS)}, not {esc(repr(precision))}")
        raise typer.Exit(2)


def _model_notes(recon: Any, checkpoint: Path, refine: Any = None) -> None:
    """Notes on the model loaded into ``recon``: bfloat16 asked for on hardware without
    bfloat16 matrix units (it may be no faster than float32 there), a run's model.pt that
    has not trained the detail stage (its M1 and M2 come from networks at their
    initialisation), and a detail stage trained on refined base faces run without ``refine``
    (the faces it is given are then unlike those it learnt on)."""
    from models.precision import fast_bfloat16, onednn_bfloat16

    device = recon.system.device
    if recon.precision == "bfloat16" and not fast_bfloat16(device):
        if device.type == "cpu" and not onednn_bfloat16():
            why = (
                "this CPU has no bfloat16 convolution kernels (oneDNN's need AVX-512 or "
                "AVX-NE-CONVERT): --precision bfloat16 runs tens of times slower than float32 here"
            )
        else:
            why = (
                f"this {device.type.upper()} has no bfloat16 matrix units (AMX on a CPU): "
                "--precision bfloat16 may be no faster than float32 here"
            )
        console.print(
            f"[yellow]note:[/yellow] {why} (facehd perf hrn-reconstruct times both)",
            soft_wrap=True,
        )
    stages = recon.system.trained_stages
    if stages is not None and "hrn" not in stages:
        console.print(
            f"[yellow]note:[/yellow] {esc(checkpoint)} has not trained the detail stage (stages "
            f"{', '.join(stages) or 'none'}): M1 and M2 come from untrained networks",
            soft_wrap=True,
        )
    if stages is not None and "hrn" in stages and "deretouch" not in stages:
        console.print(
            f"[yellow]note:[/yellow] {esc(checkpoint)} holds no trained de-retouching network: "
            "the texture is the base albedo A0 (for the official HRN checkpoint give its "
            "de-retouching file with --deretouch)",
            soft_wrap=True,
        )
    options = getattr(getattr(recon, "config", None), "hrn_options", None)
    trained = int(getattr(options, "refine_steps", 0) or 0)
    if trained > 0 and refine is None:
        console.print(
            f"[yellow]note:[/yellow] {esc(checkpoint)}'s detail stage was trained on refined "
            f"base faces (hrn_options.refine_steps {trained}): --refine-steps {trained} gives it "
            "faces like those",
            soft_wrap=True,
        )


def _train_config(
    config: str, bfm: Path | None, uv: Path | None, identity_network: Path | None = None
):
    """The preset or config file, with the paths given on the command line."""
    from models.train import load_train_config

    cfg = load_train_config(config)
    if bfm is not None:
        cfg.morphable.bfm_path = str(bfm)
    if uv is not None:
        cfg.morphable.uv_path = str(uv)
    if identity_network is not None:
        cfg.identity_network = str(identity_network)
    return cfg


def _training_bar(bar):
    """A callback for models.train: one progress bar task per stage, with the last loss."""
    tasks: dict[str, int] = {}

    def callback(stage: str, step: int, total: int, values: dict) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total, completed=step - 1)
        loss = values.get("total")
        desc = f"{stage} loss {loss:.4g}" if isinstance(loss, float) else stage
        bar.update(tasks[stage], completed=step, description=desc)

    return callback


@app.command("train")
@_interrupt_says(
    "stopped at once (before the step in flight was saved); --resume continues from the last "
    "checkpoint (a run stopped before it saved one: run the same command again, without --resume)"
)
def train_cmd(
    out: Path = typer.Option(
        None, help="Run folder (checkpoints, logs, config.yaml, model.pt); needed to train."
    ),
    config: str = typer.Option(
        None,
        help="Preset (tiny-cpu, paper) or a YAML/JSON file (default: tiny-cpu; with --resume, "
        "the run's own config.yaml).",
    ),
    photos: Path = typer.Option(None, help="In-the-wild photos: a prepare-images dataset."),
    priors: Path = typer.Option(None, help="Ground-truth maps with lab photos: build-priors."),
    pairs: Path = typer.Option(
        None, help="De-retouching pairs: a photos dataset with an image_clean field."
    ),
    stage: list[str] = typer.Option(
        None, help="base, deretouch, hrn or all (repeat the option; default all)."
    ),
    resume: bool = typer.Option(False, help="Continue the run in --out exactly."),
    init: Path = typer.Option(
        None,
        help="Start from this checkpoint (a model.pt, the official HRN checkpoint or "
        "Deep3DFaceRecon's net_recon).",
    ),
    steps: int = typer.Option(None, min=0, help="Override the steps of the selected stages."),
    bfm: Path = typer.Option(None, help="BFM_model_front.mat (configs on the BFM)."),
    uv: Path = typer.Option(None, help="The BFM's UV layout file."),
    identity_network: Path = typer.Option(
        None,
        help="Weights of the perceptual loss's identity network: ArcFace's backbone.pth "
        "(arcface_torch) or an exported network (torch.export, TorchScript). Without: off.",
    ),
    set_: list[str] = typer.Option(
        None,
        "--set",
        help="KEY=VALUE: change one setting of the config, KEY dotted as in --print-config "
        "(e.g. model.hrn_losses.adversarial=0.2); repeat for more. A resumed run takes only "
        "the settings it was started with.",
    ),
    print_config: bool = typer.Option(False, help="Print the resolved config as YAML and exit."),
) -> None:
    """Train HRN: base model, de-retouching module, detail networks (alternating iterations).

    Multi-GPU: torchrun --nproc_per_node=G -m models.train --config FILE --out DIR ... (same
    options). TensorBoard event files are written when the tensorboard package is installed.

    Example: facehd train --config tiny-cpu --photos photos.h5 --priors priors.h5 --out runs/tiny

    Example: facehd train --config tiny-cpu --set model.hrn_losses.adversarial=0.2 --print-config
    """
    import os

    from facehd.errors import FacehdError
    from facehd.yamlio import safe_dump_text
    from models.config import apply_overrides, config_to_dict
    from models.train import STAGES, TrainingInterrupted
    from models.train import train as run_training

    if config is None:  # a resumed run continues with the settings it was started with
        own = out / "config.yaml" if out is not None else None
        config = str(own) if resume and own is not None and own.is_file() else "tiny-cpu"
    with _exit_on_error(FacehdError, ValueError):
        cfg = _train_config(config, bfm, uv, identity_network)
        if set_:
            cfg = apply_overrides(cfg, set_)
    # none given: all three for a new run, the run's own for --resume (its stages.json)
    stages = None if not stage else list(STAGES) if "all" in stage else stage
    bad = [s for s in stages or () if s not in STAGES]
    if bad:
        _error(f"unknown stage {esc(repr(bad[0]))}; stages: {', '.join(STAGES)}")
        raise typer.Exit(2)
    if steps is not None:
        for s in stages or STAGES:
            getattr(cfg, s).steps = steps
    if print_config:
        # as is: YAML must not be wrapped at the console's width (a long path would break it)
        console.print(
            safe_dump_text(config_to_dict(cfg), sort_keys=False),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return
    if out is None:
        _error("give the run folder: --out DIR (only --print-config works without it)")
        raise typer.Exit(2)

    def run(callback: Callable | None) -> Any:
        return run_training(
            cfg,
            out,
            photos=photos,
            priors=priors,
            pairs=pairs,
            stages=stages,
            resume=resume,
            init=init,
            callback=callback,
        )

    if int(os.environ.get("RANK", "0")) != 0:
        # another process of a torchrun: the first speaks for the run (its bars, table, errors)
        try:
            run(None)
        except ValueError:
            raise typer.Exit(2) from None
        return
    with _exit_on_error(FacehdError, ValueError):
        try:
            with _progress() as bar:
                result = run(_training_bar(bar))
        except TrainingInterrupted as stopped:  # Ctrl-C or kill: saved after the step
            console.print(f"[yellow]interrupted:[/yellow] {esc(stopped)}", soft_wrap=True)
            raise typer.Exit(130) from None
    table = PlainTable("stage", "steps run", "seconds", "it/s")
    for s, n in result.steps.items():
        t = result.seconds[s]
        table.add_row(s, str(n), f"{t:.1f}", f"{n / t:.2f}" if t > 0 else "")
    console.print(table)
    console.print(f"stages done: {esc(', '.join(result.stages))}; model: {esc(result.model_path)}")


def _say_landmarks_unsure(results: list[Any]) -> None:
    """A note naming the photos whose detected landmarks the face mesh does not hold firmly
    (``landmark_spread`` above :data:`facehd.detect.MAX_LANDMARK_SPREAD`): reconstructed, but
    likely from landmarks off the face, where ``prepare-images`` would refuse them."""
    from facehd.detect import MAX_LANDMARK_SPREAD
    from facehd.errors import printable
    from facehd.h5io import name_some

    unsure = [
        r
        for r in results
        if r.folder is not None and (r.landmark_spread or 0.0) > MAX_LANDMARK_SPREAD
    ]
    if not unsure:
        return
    shown = name_some([f"{printable(r.photo.name)} {r.landmark_spread:.2f}" for r in unsure])
    said = (
        f"{len(unsure)} of {len(results)} photos: the detected landmarks are unsure "
        f"(landmark_spread above {MAX_LANDMARK_SPREAD:g} in photos.csv: {shown}): the "
        "face may be seen turned or too faint, and its reconstruction placed off it; give the "
        "photo's landmarks in a .pts file beside it"
    )
    console.print(f"[yellow]note:[/yellow] {esc(said)}", soft_wrap=True)


def _say_faces_off_their_photos(results: list[Any], *, refined: bool, fitted: bool) -> None:
    """A note naming the photos whose M1 lies off their landmarks (``landmark_nme`` above
    :data:`models.reconstruct.LANDMARK_NME_FAILED`), and what places them: ``refined``, the
    base coefficients were refined (``--refine-steps``); ``fitted``, a fit (``--fit-iterations``,
    ``--multiview``) started from the analyzer's or the refined faces."""
    from facehd.errors import printable
    from facehd.h5io import name_some
    from models.reconstruct import LANDMARK_NME_FAILED

    off = [
        r for r in results if r.folder is not None and (r.landmark_nme or 0.0) > LANDMARK_NME_FAILED
    ]
    if not off:
        return
    shown = name_some([f"{printable(r.photo.name)} {r.landmark_nme:.2f}" for r in off])
    if refined:
        what = "refined, these faces still lie off their photos"
    else:
        what = (
            "the face analyzer did not place these faces"
            + (", nor did the fit that started from them" if fitted else "")
            + "; --refine-steps 300 first fits each face to its photo"
        )
    said = (
        f"{len(off)} of {len(results)} photos: M1 lies off the photo's landmarks "
        f"(landmark_nme above {LANDMARK_NME_FAILED:g} in photos.csv: {shown}): {what}"
    )
    console.print(f"[yellow]note:[/yellow] {esc(said)}", soft_wrap=True)


@app.command()
@_interrupt_says(
    "the photos finished so far are written and listed in photos.csv; run the same command "
    "again to do every photo"
)
def reconstruct(
    photos: list[Path] = typer.Argument(..., help="Photos or folders of photos."),
    checkpoint: Path = typer.Option(..., help="model.pt of a run, or the official HRN file."),
    out: Path = typer.Option(Path("facehd-out/reconstruct"), help="Output folder."),
    deretouch: Path = typer.Option(None, help="Official de-retouching checkpoint (generator)."),
    bfm: Path = typer.Option(None, help="BFM_model_front.mat (official checkpoint)."),
    uv: Path = typer.Option(None, help="The BFM's UV layout file (official checkpoint)."),
    multiview: bool = typer.Option(
        False, help="The photos are views of one face: fit them jointly (MV-HRN)."
    ),
    iterations: int = typer.Option(50, min=0, help="MV-HRN: Adam iterations."),
    base_texture: bool = typer.Option(
        False, help="Texture = the base albedo; skips the de-retouching network (faster on CPU)."
    ),
    precision: str = typer.Option(
        "float32",
        help="float32, or bfloat16: the detail networks in bfloat16 (several times faster on a "
        "CPU with AMX or a GPU; the maps move by its rounding, M0 does not).",
    ),
    landmarks: str = typer.Option(
        "auto",
        help="auto: a photo's landmarks from the iBUG .pts file beside it when there is one, "
        "else detected; detect: always detected; given: always the file.",
    ),
    refine_steps: int = typer.Option(
        0,
        min=0,
        help="Refine each photo's base coefficients on the self-supervised objective (its "
        "landmarks and face mask): Adam steps of each of two phases, from the mean face (0: off). "
        "With --multiview the views are refined together, with one identity, and the joint fit "
        "starts from them.",
    ),
    fit_iterations: int = typer.Option(
        0,
        min=0,
        help=_FIT_ITERATIONS_HELP,
    ),
    fit_deformation_start: str = typer.Option("network", help=_FIT_START_HELP),
    texture_fit_steps: int = typer.Option(
        0,
        min=0,
        help="Then fit a colour texture to each photo, as the public HRN code textures its "
        "meshes (100 there): M2's shaded colour plus an offset, Adam steps so that M1 rendered "
        "with it matches the photo; written as texture_fitted.png (lighting baked in), which "
        "the OBJs then use (0: off; with --multiview, each view's).",
    ),
    redo: bool = typer.Option(
        False,
        help="Reconstruct every photo again, also one whose folder in OUT holds its "
        "reconstruction from the same photo, landmarks, model files and settings (kept "
        "otherwise, so an interrupted run continues where it stopped; a --multiview fit is always "
        "made again).",
    ),
) -> None:
    """Reconstruct faces: M0, M1 (textured, model topology), M2 (dense, with UVs), maps, previews.

    Needs the optional extra for detection: pip install 'facehd\\[photo]'. Writes OUT/<photo stem>/
    coarse.obj, mid.obj, detail.obj, texture.png, deformation/displacement .npy and 16-bit .png,
    overlay.png, turntable.png, reconstruction.json, and OUT/photos.csv (each photo's folder, or
    why it failed, and its landmark_nme: how far M1 lies from the photo's landmarks, above 0.1
    off the face, and landmark_spread: how surely the detector placed them, above 0.12 unsure;
    a path that is not there is skipped and listed); exit status 1 when a photo
    failed. A photo done before into OUT gets its
    folder again (replaced whole; kept as it is when made from the same photo, landmarks, model
    files and settings, unless --redo); another photo of the same name gets <stem>_2.
    --base-texture writes the base albedo as the texture and skips the de-retouching network
    (same geometry, about 3x faster at the paper's sizes on a CPU). --precision bfloat16 runs
    the detail generators and the de-retouching network in bfloat16: about 3.5x faster at the
    paper's sizes on a CPU with AMX (without it, maybe no faster than float32: the run says
    so).

    With --multiview all photos are views of one face (MV-HRN, paper Sec. 3.5): they share the
    identity and the deformation map, each keeps its expression, pose, light and displacement
    map. Each view is written as above, plus OUT/shared.obj (the shared face, neutral expression)
    with OUT/shared_texture.png (the views' textures blended by how squarely each shows a texel
    within its photo's face mask), OUT/shared_turntable.png (its preview, grey and textured) and
    OUT/multiview.json (views, failures, losses).

    Example: facehd reconstruct photos/ --checkpoint runs/tiny/model.pt --out facehd-out/rec

    Example: facehd reconstruct photos/ --checkpoint runs/tiny/model.pt --precision bfloat16

    Example: facehd reconstruct photos/ --checkpoint runs/tiny/model.pt --refine-steps 300

    Example: facehd reconstruct face.jpg --checkpoint m.pt --refine-steps 300 --fit-iterations 50

    Example: facehd reconstruct face.jpg --checkpoint m.pt --refine-steps 300 --fit-iterations 50
    --fit-deformation-start zero

    Example: facehd reconstruct face.jpg --checkpoint m.pt --texture-fit-steps 100
    """
    from facehd.errors import FacehdError, InputFileError, printable
    from models.reconstruct import (
        TextureFitConfig,
        find_photo_inputs,
        output_lock,
        output_names,
        reconstruct_photos,
    )
    from models.refine import RefineConfig

    _check_landmark_mode(landmarks)
    _check_precision(precision)
    refine = RefineConfig(steps=refine_steps) if refine_steps else None
    fit = _single_view_fit(fit_iterations, multiview, fit_deformation_start)
    texture_fit = TextureFitConfig(steps=texture_fit_steps) if texture_fit_steps else None
    with _exit_on_error(FacehdError, ValueError, ImportError):
        found = find_photo_inputs(photos, out)
        files, missing = found.photos, found.missing
        if not files:  # nothing to do: say so before loading the checkpoint
            path, why = missing[0]
            raise InputFileError(printable(path), why)
        with output_lock(out):  # one run at a time into OUT: the names below stay theirs
            for p, why in missing:
                console.print(
                    f"[yellow]skipped:[/yellow] {esc(printable(p))}: {why}", soft_wrap=True
                )
            for p in found.repeats:
                console.print(f"given again, done once: {esc(printable(p))}", soft_wrap=True)
            names = output_names(files, out)  # worked out once: shown here, used below
            for p, name in zip(files, names, strict=True):
                if name != p.stem:  # another photo of that name holds the folder
                    said = f"{printable(p)} -> {printable(out / name)}"
                    console.print(esc(said), soft_wrap=True)
            with _progress(on_first_update=True) as bar:  # once the model has loaded
                tasks: dict[str, Any] = {}

                def loaded(recon: Any) -> None:
                    _model_notes(recon, checkpoint, refine)
                    bar.start()
                    tasks["photos"] = bar.add_task("photos", total=len(files))
                    if multiview:
                        tasks["fit"] = bar.add_task("MV-HRN fit", total=iterations)

                if multiview:
                    from models.multiview import MultiViewConfig, reconstruct_multiview

                    fitted, results = reconstruct_multiview(
                        files,
                        checkpoint,
                        out,
                        config=MultiViewConfig(
                            iterations=iterations, deformation_start=fit_deformation_start
                        ),
                        deretouch=deretouch,
                        bfm_path=bfm,
                        uv_path=uv,
                        progress=lambda _p: bar.advance(tasks["photos"]),
                        fit_progress=lambda i, _n: bar.update(tasks["fit"], completed=i),
                        base_texture=base_texture,
                        precision=precision,
                        landmarks=landmarks,
                        loaded=loaded,
                        missing=missing,
                        names=names,
                        refine=refine,
                        texture_fit=texture_fit,
                    )
                else:
                    fitted = None
                    results = reconstruct_photos(
                        files,
                        checkpoint,
                        out,
                        deretouch=deretouch,
                        bfm_path=bfm,
                        uv_path=uv,
                        progress=lambda _p: bar.advance(tasks["photos"]),
                        base_texture=base_texture,
                        precision=precision,
                        landmarks=landmarks,
                        loaded=loaded,
                        missing=missing,
                        names=names,
                        refine=refine,
                        fit=fit,
                        redo=redo,
                        texture_fit=texture_fit,
                    )
    if fitted is not None:
        first, last = fitted.history[0], fitted.history[-1]
        n = len(fitted.views)
        console.print(
            f"MV-HRN: {n} view{'s' if n != 1 else ''}, loss {first['total']:.4f} -> "
            f"{last['total']:.4f} "
            f"(photometric R1 {first['photo_mid']:.4f} -> {last['photo_mid']:.4f}, landmarks "
            f"{first['landmark']:.1f} -> {last['landmark']:.1f} px^2); shared face: "
            f"{esc(out / 'shared.obj')}"
        )
        if len(fitted.views) == 1:
            console.print(
                "[yellow]one view only:[/yellow] no other view constrains the shared face; "
                "this is a single-view fit with MV-HRN's losses (photos of different faces: "
                "without --multiview, --fit-iterations fits each alone)",
                soft_wrap=True,
            )
    from facehd.align import ENLARGED_CROP

    for r in results:
        if r.folder is not None and (r.crop_scale or 0.0) > ENLARGED_CROP:
            said = (
                f"{printable(r.photo)}: a small face: the networks' 224 px crop enlarges it "
                f"{r.crop_scale:.1f} times, so its maps find no skin detail in it (none "
                "finer than the photo's pixels): use a sharper photo of the face for M2"
            )
            console.print(f"[yellow]note:[/yellow] {esc(said)}", soft_wrap=True)
        if r.folder is not None and (r.faces_found or 0) > 1:
            said = (
                f"{printable(r.photo)}: {r.faces_found} faces found; the largest, most central "
                f"was reconstructed (its box: face_box in "
                f"{printable(r.folder / 'reconstruction.json')})"
            )
            console.print(esc(said), soft_wrap=True)
    _say_landmarks_unsure(results)
    _say_faces_off_their_photos(
        results, refined=refine is not None, fitted=fit is not None or multiview
    )
    failed = [r for r in results if r.error]
    for r in failed:  # each error names its photo (models.reconstruct._said, missing_results)
        console.print(f"[yellow]failed:[/yellow] {esc(r.error)}", soft_wrap=True)
    kept = sum(r.kept for r in results)
    said = (
        f" ({kept} of them kept from an earlier run, made from the same photo, landmarks, model "
        "files and settings; --redo makes them again)"
        if kept
        else ""
    )
    console.print(
        f"{len(results) - len(failed)} of {len(results)} photos reconstructed into {esc(out)}"
        + said,
        soft_wrap=True,
    )
    if failed:
        raise typer.Exit(1)


@app.command()
@_interrupt_says("nothing was written (the CSV is written at the end); run the same command again")
def evaluate(
    checkpoint: Path = typer.Option(..., help="model.pt of a training run."),
    scans: Path = typer.Option(..., help="Held-out folder of facehd synth --photos V."),
    views: int = typer.Option(None, min=1, help="Photos per scan (default all)."),
    out: Path = typer.Option(None, help="CSV of the per-photo scores."),
    multiview: bool = typer.Option(
        False, help="Fit each scan's photos jointly (MV-HRN) and compare with single and naive."
    ),
    iterations: int = typer.Option(50, min=0, help="MV-HRN: Adam iterations."),
    precision: str = typer.Option(
        "float32", help="float32 or bfloat16: the detail networks' precision, as in reconstruct."
    ),
    refine_steps: int = typer.Option(
        0,
        min=0,
        help="Refine each photo's base coefficients on the self-supervised objective: Adam "
        "steps of each of its two phases, from the mean face (0: off; 300 in the README).",
    ),
    fit_iterations: int = typer.Option(
        0,
        min=0,
        help=_FIT_ITERATIONS_HELP,
    ),
    fit_deformation_start: str = typer.Option("network", help=_FIT_START_HELP),
    facescape: bool = typer.Option(
        True,
        help="Also score FaceScape's CD and MNE (most of the scoring time); --no-facescape "
        "leaves their columns NaN, for a quicker look.",
    ),
) -> None:
    """Score M0, M1, M2 against the exact truth of synthetic photos (distance, normal error).

    Photos are also scored by FaceScape's CD and MNE (the paper's Tables 1 and 3), each level
    aligned rigidly to the truth and placed as the protocol places a prediction (the photo's
    camera, then its depth slide); --no-facescape leaves these out, in about a third of the
    time.

    With --multiview each scan's photos (2 or more) are one set: the table compares each view on
    its own (single), identity and deformation averaged (naive) and the joint fit (mv-hrn), and
    the CSV has a row per scan and variant.

    Example: facehd evaluate --checkpoint runs/tiny/model.pt --scans data/heldout --out eval.csv

    Example: facehd evaluate --checkpoint runs/tiny/model.pt --scans heldout --precision bfloat16

    Example: facehd evaluate --checkpoint runs/tiny/model.pt --scans heldout --refine-steps 300

    Example: facehd evaluate --checkpoint m.pt --scans held --refine-steps 300 --fit-iterations 50

    Example: facehd evaluate --checkpoint m.pt --scans held --refine-steps 300 --fit-iterations 50
    --fit-deformation-start zero

    Example: facehd evaluate --multiview --refine-steps 300 --checkpoint model.pt --scans sets3

    Example: facehd evaluate --checkpoint runs/tiny/model.pt --scans heldout --no-facescape
    """
    from facehd.errors import FacehdError, check_output_file
    from models.evaluate import evaluate_synthetic, heldout_without_photos, write_rows
    from models.reconstruct import Reconstructor
    from models.refine import RefineConfig

    _check_precision(precision)
    refine = RefineConfig(steps=refine_steps) if refine_steps else None
    fit = _single_view_fit(fit_iterations, multiview, fit_deformation_start)
    if out is not None:
        with _exit_on_error(FacehdError):
            check_output_file(out, "CSV")  # before anything is scored
    if scans.is_dir():
        for sid in heldout_without_photos(scans):
            console.print(
                f"[yellow]not scored:[/yellow] {esc(sid)} has no {esc(sid)}.photos.npz in "
                f"{esc(scans)}",
                soft_wrap=True,
            )

    if multiview:
        from models.multiview import (
            MultiViewConfig,
            evaluate_multiview_synthetic,
            summarise_multiview,
        )

        skipped: list[str] = []
        failed: list[str] = []
        with _exit_on_error(FacehdError, ValueError):
            recon = Reconstructor.load(checkpoint, precision=precision)
            _model_notes(recon, checkpoint, refine)
            with _progress() as bar:
                task = bar.add_task("scans", total=None)
                mv_rows = evaluate_multiview_synthetic(
                    recon,
                    scans,
                    MultiViewConfig(iterations=iterations, deformation_start=fit_deformation_start),
                    views=views,
                    progress=lambda d, n: bar.update(task, completed=d, total=n),
                    skipped=skipped,
                    failed=failed,
                    refine=refine,
                    facescape=facescape,
                )
        for said in skipped:
            console.print(f"[yellow]not scored:[/yellow] {esc(said)}", soft_wrap=True)
        _say_unreadable(failed)
        summary = summarise_multiview(mv_rows)
        n_sets = len({r.sample_id for r in mv_rows})
        table = PlainTable(
            "variant",
            "M0 mm",
            "M1 mm",
            "M2 mm",
            "M0 rad",
            "M1 rad",
            "M2 rad",
            title=f"{n_sets} sets of views (distance, normal error)"
            + (
                f", the views' base coefficients refined first, one identity ({refine_steps} "
                f"+ {refine_steps} steps)"
                if refine_steps
                else ""
            ),
        )
        for variant, m in summary.items():
            table.add_row(
                variant,
                *(f"{m[f'dist_{lv}']:.3f}" for lv in ("m0", "m1", "m2")),
                *(f"{m[f'normal_{lv}']:.4f}" for lv in ("m0", "m1", "m2")),
            )
        console.print(table)
        seen = PlainTable(
            "variant",
            "disp corr",
            "M1 rad",
            "M2 rad",
            "oracle M2 rad",
            title="details at the skin point each texel shows (correlation of the displacement "
            "maps, normal errors); M2 with the true details there, by closest points",
        )
        for variant, m in summary.items():
            seen.add_row(
                variant,
                f"{m['disp_pearson_seen']:.3f}",
                f"{m['normal_seen_m1']:.4f}",
                f"{m['normal_seen_m2']:.4f}",
                f"{m['normal_m2_oracle']:.4f}",
            )
        console.print(seen)
        if facescape:
            fs_table = PlainTable(
                "variant",
                "level",
                "CD mm",
                "MNE rad",
                "placed CD mm",
                "placed MNE rad",
                title="FaceScape's CD and MNE: the levels aligned rigidly, and placed as the "
                "protocol places a prediction (the photo's camera and its depth slide)",
            )
            for variant, m in summary.items():
                for k in range(3):
                    fs_table.add_row(
                        variant,
                        f"M{k}",
                        f"{m[f'cd_fs_m{k}']:.3f}",
                        f"{m[f'mne_fs_m{k}']:.4f}",
                        f"{m[f'cd_cam_m{k}']:.3f}",
                        f"{m[f'mne_cam_m{k}']:.4f}",
                    )
            console.print(fs_table)
        else:
            console.print("FaceScape's CD and MNE: not scored (--no-facescape)")
        if out is not None:
            console.print(f"wrote {esc(write_rows(out, mv_rows))}")
        if failed:
            raise typer.Exit(1)
        return

    failed = []
    with _exit_on_error(FacehdError, ValueError):
        recon = Reconstructor.load(checkpoint, precision=precision)
        _model_notes(recon, checkpoint, refine)
        with _progress() as bar:
            task = bar.add_task("photos", total=None)
            rows, s = evaluate_synthetic(
                recon,
                scans,
                views=views,
                progress=lambda d, n: bar.update(task, completed=d, total=n),
                failed=failed,
                refine=refine,
                fit=fit,
                facescape=facescape,
            )
    _say_unreadable(failed)
    title = f"{s.photos} photos" + (
        f", base coefficients refined per photo ({refine_steps} + {refine_steps} steps)"
        if refine_steps
        else ""
    )
    if fit_iterations:
        title += f", each photo fitted alone on MV-HRN's objective ({fit_iterations} iterations"
        title += ", the deformation map from zero)" if fit_deformation_start == "zero" else ")"
    fs_columns = ("CD mm", "MNE rad", "placed CD mm", "placed MNE rad") if facescape else ()
    table = PlainTable(
        "level",
        "distance mm",
        "normal error rad",
        *fs_columns,
        title=title
        + (
            " (CD, MNE: FaceScape's, the levels aligned rigidly; placed: in the photo's camera "
            "and slid in depth, as FaceScape's protocol places a prediction)"
            if facescape
            else " (FaceScape's CD and MNE not scored: --no-facescape)"
        ),
    )
    for level in ("mean_face", "m0", "m1", "m2"):
        d, n = getattr(s, f"dist_{level}"), getattr(s, f"normal_{level}")
        cd, mne = getattr(s, f"cd_fs_{level}"), getattr(s, f"mne_fs_{level}")
        name = "mean face" if level == "mean_face" else level.upper()
        placed = (
            ("–", "–")  # the mean face has no pose to place it by
            if level == "mean_face"
            else (f"{getattr(s, f'cd_cam_{level}'):.3f}", f"{getattr(s, f'mne_cam_{level}'):.4f}")
        )
        fs_cells = (f"{cd:.3f}", f"{mne:.4f}", *placed) if facescape else ()
        table.add_row(name, f"{d:.3f}", f"{n:.4f}", *fs_cells)
    console.print(table)
    if s.dist_m0 > s.dist_mean_face:
        console.print(
            "[yellow]note:[/yellow] M0 is further from the truth than the model's mean face "
            "(every coefficient zero, the first row): the base model has not learnt the faces' "
            "identity from its training photos",
            soft_wrap=True,
        )
    console.print(
        f"details by texel: displacement correlation {s.disp_pearson:.3f}; normal error M1 "
        f"{s.normal_uv_m1:.4f}, M2 {s.normal_uv_m2:.4f} rad"
    )
    console.print(
        f"details at the skin point each texel shows: displacement correlation "
        f"{s.disp_pearson_seen:.3f}; normal error M1 {s.normal_seen_m1:.4f}, "
        f"M2 {s.normal_seen_m2:.4f} rad"
    )
    oracle_fs = (
        f", FaceScape's MNE {s.mne_fs_m2_oracle:.4f} rad, placed {s.mne_cam_m2_oracle:.4f} rad"
        if facescape
        else ""
    )
    console.print(
        f"M2 with the true details of the skin each texel shows (the ceiling of the detail "
        f"level at this M1): normal error {s.normal_m2_oracle:.4f} rad{oracle_fs}"
    )
    counts_fs = (
        f", on {s.m2_mne_fs_better} of {s.photos} by FaceScape's MNE, on "
        f"{s.m2_mne_cam_better} of {s.photos} by FaceScape's MNE placed"
        if facescape
        else ""
    )
    console.print(
        f"per photo: M1 nearer the truth than M0 on {s.m1_nearer} of {s.photos}; M2's normals "
        f"better than M1's on {s.m2_normals_better} of {s.photos} by closest points, on "
        f"{s.m2_seen_better} of {s.seen_photos} at the skin point each texel shows{counts_fs}"
    )
    without = sorted({r.sample_id for r in rows if r.disp_pearson_seen != r.disp_pearson_seen})
    if without:  # NaN: no <id>.gt.npz, so no true displacement map
        console.print(
            f"[yellow]note:[/yellow] no <id>.gt.npz for {', '.join(without)}: their photos have "
            f"no detail scores; the detail means above are over the other photos",
            soft_wrap=True,
        )
    if out is not None:
        console.print(f"wrote {esc(write_rows(out, rows))}")
    if failed:
        raise typer.Exit(1)


def _say_unreadable(failed: list[str]) -> None:
    """Name the held-out scans ``evaluate`` could not read (left out of its table)."""
    for said in failed:
        console.print(f"[red]not scored, unreadable:[/red] {esc(said)}", soft_wrap=True)


@app.command()
@_interrupt_says(RESUMES)
def ablation(
    out: Path = typer.Option(..., help="Output folder (one run per row, ablation.csv/.md)."),
    photos: Path = typer.Option(..., help="In-the-wild photos (prepare-images dataset)."),
    priors: Path = typer.Option(..., help="build-priors dataset with lab photos."),
    heldout: Path = typer.Option(..., help="Held-out folder of facehd synth --photos V."),
    config: str = typer.Option("tiny-cpu", help="Preset or config file."),
    views: int = typer.Option(None, min=1, help="Held-out photos per scan (default all)."),
    steps: int = typer.Option(
        None, help="Override the steps of the detail stage (at least 1: every row trains it)."
    ),
    identity_network: Path = typer.Option(
        None, help="The perceptual loss's identity network weights (as facehd train)."
    ),
    set_: list[str] = typer.Option(
        None,
        "--set",
        help="KEY=VALUE: change one setting of the config, as facehd train --set (e.g. "
        "hrn_options.refine_steps=300: every row trained and scored on refined faces).",
    ),
) -> None:
    """The paper's ablation (Table 3), every row trained and measured on held-out synthetic photos.

    Rows: base, +hierarchy, +contour, +detail priors, +de-retouching, each with FaceScape's CD
    and MNE as in the paper's table and the scores of `facehd evaluate`. Resumes when interrupted.
    Bad inputs are refused before anything trains, and a refused run creates no --out folder.

    Example: facehd ablation --photos photos.h5 --priors priors.h5 --heldout heldout --out abl

    Example: facehd ablation --photos photos.h5 --priors priors.h5 --heldout heldout --out abl
    --set hrn_options.refine_steps=300
    """
    from facehd.errors import FacehdError
    from models.ablation import run_ablation, table_markdown
    from models.config import apply_overrides
    from models.train import TrainingInterrupted

    with _exit_on_error(FacehdError, ValueError):
        cfg = _train_config(config, None, None, identity_network)
        if set_:
            cfg = apply_overrides(cfg, set_)
        if steps is not None:
            cfg.hrn.steps = steps
        try:
            with _progress() as bar:
                rows = run_ablation(
                    cfg,
                    out,
                    photos=photos,
                    priors=priors,
                    heldout=heldout,
                    views=views,
                    callback=_training_bar(bar),
                    log=lambda m: bar.console.print(m),
                )
        except TrainingInterrupted as stopped:  # saved after the step: a rerun resumes
            console.print(
                f"[yellow]interrupted:[/yellow] stage {stopped.stage}, step {stopped.step} "
                "saved; run the same command again to resume",
                soft_wrap=True,
            )
            raise typer.Exit(130) from None
    console.print(table_markdown(rows), markup=False)
    console.print(f"wrote {esc(out / 'ablation.csv')} and {esc(out / 'ablation.md')}")


def _reflowed_help(doc: str) -> str:
    """A command's docstring as ``--help`` shows it: each paragraph one line, which the console
    wraps at its own width (kept as written, lines broken at 100 columns in the source came
    out ragged on an 80-column terminal)."""
    from inspect import cleandoc

    return "\n\n".join(" ".join(p.split()) for p in cleandoc(doc).split("\n\n"))


for _info in app.registered_commands:
    if _info.help is None and _info.callback is not None and _info.callback.__doc__:
        _info.help = _reflowed_help(_info.callback.__doc__)


if __name__ == "__main__":  # pragma: no cover
    app()
