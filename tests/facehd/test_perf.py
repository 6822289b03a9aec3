"""The perf CSV: its cells are written like every other CSV of facehd."""

from __future__ import annotations

import csv
import math

import numpy as np

from facehd.perf import PerfRow, write_csv


def test_perf_csv_cells_share_the_project_format(tmp_path):
    rows = [
        PerfRow("e", "measured", np.float64(2.0) / 3.0, "s", "< 1 s", np.bool_(True), "n"),
        PerfRow("e", "not run", float("nan"), "it/s", note="no CUDA device"),
        PerfRow("e", "missed", 5.0, "s", "< 1 s", False),
    ]
    path = write_csv(rows, tmp_path / "sub" / "perf.csv")
    with open(path, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert got[0]["value"] == repr(2.0 / 3.0) and got[0]["passed"] == "true"
    assert got[1]["value"] == "" and got[1]["passed"] == ""  # NaN and None: empty cells
    assert got[2]["passed"] == "false" and math.isclose(float(got[2]["value"]), 5.0)
    assert all(r["cpus"].isdigit() for r in got)
    assert not list((tmp_path / "sub").glob("*.tmp"))


def test_quick_rows_are_not_judged_and_an_interrupt_keeps_the_rows_done(tmp_path, monkeypatch):
    import csv

    from typer.testing import CliRunner

    from facehd import perf
    from facehd.cli import app

    def fine(quick: bool) -> list:
        return [perf.PerfRow("a", "seconds", 0.5, "s", "< 1 s", True, "n=10")]

    def stopped(quick: bool) -> list:
        raise KeyboardInterrupt

    entries = {
        "a": perf._Entry("a", fine, "first"),
        "b": perf._Entry("b", stopped, "interrupted"),
    }
    monkeypatch.setattr(perf, "discover", lambda: entries)
    (row,) = perf.run(["a"], quick=True)
    assert row.passed is None and row.note.startswith("quick (smaller problem; not judged)")
    assert perf.run(["a"])[0].passed is True
    runner = CliRunner()
    res = runner.invoke(app, ["perf", "a", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "not a folder" in res.output
    out = tmp_path / "p.csv"
    res = runner.invoke(app, ["perf", "a", "b", "--out", str(out)])
    assert res.exit_code == 130 and "interrupted" in res.output
    with open(out, newline="") as fh:
        assert [r["entry"] for r in csv.DictReader(fh)] == ["a"]


def test_a_run_keeps_the_other_entries_rows_and_refuses_other_files(tmp_path, monkeypatch):
    """Running some entries into an existing perf CSV replaces their rows only (an interrupted
    run too, where the file used to hold the finished entries alone); a file that is no perf
    CSV is refused before anything is measured, left as it was."""
    from typer.testing import CliRunner

    from facehd import perf
    from facehd.cli import app

    calls = []

    def entry(name: str, value: float):
        def fn(quick: bool) -> list:
            calls.append(name)
            return [perf.PerfRow(name, "seconds", value, "s")]

        return perf._Entry(name, fn, name)

    def stopped(quick: bool) -> list:
        raise KeyboardInterrupt

    entries = {"a": entry("a", 1.0), "b": entry("b", 2.0), "c": perf._Entry("c", stopped, "c")}
    monkeypatch.setattr(perf, "discover", lambda: entries)
    runner = CliRunner()
    out = tmp_path / "p.csv"

    def values() -> dict:
        with open(out, newline="") as fh:
            return {r["entry"]: float(r["value"]) for r in csv.DictReader(fh)}

    assert runner.invoke(app, ["perf", "a", "b", "--out", str(out)]).exit_code == 0
    entries["a"] = entry("a", 3.0)
    assert runner.invoke(app, ["perf", "a", "--out", str(out)]).exit_code == 0
    assert values() == {"a": 3.0, "b": 2.0}
    entries["b"] = entry("b", 4.0)
    res = runner.invoke(app, ["perf", "b", "c", "--out", str(out)])
    assert res.exit_code == 130 and "the rows of b written into" in " ".join(res.output.split())
    assert values() == {"a": 3.0, "b": 4.0}
    res = runner.invoke(app, ["perf", "c", "--out", str(out)])
    assert res.exit_code == 130 and "no entry finished" in res.output
    assert values() == {"a": 3.0, "b": 4.0}
    mine = tmp_path / "mine.csv"
    mine.write_text("name,score\nx,1\n")
    calls.clear()
    res = runner.invoke(app, ["perf", "a", "--out", str(mine)])
    assert res.exit_code == 2 and "is no facehd perf CSV" in res.output and calls == []
    assert mine.read_text() == "name,score\nx,1\n"


def test_an_interrupt_during_a_deferred_block_lets_it_finish_and_is_raised_after() -> None:
    """Ctrl-C inside rtree's ctypes callbacks (trimesh's reference in ``perf distance``) was
    printed and dropped, and the query went on to a wrong result that was saved; held until
    the block ends, it stops the run as an interrupt anywhere else does."""
    import os
    import signal

    import pytest

    from facehd.perf import interrupts_deferred

    before = signal.getsignal(signal.SIGINT)
    finished = []
    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        finished.append(sum(range(1000)))  # the block goes on to its end
    assert finished == [499500]
    assert signal.getsignal(signal.SIGINT) is before
    with interrupts_deferred():  # no interrupt: nothing raised
        finished.append(1)
    assert finished == [499500, 1]


def test_mesh_read_entry_reads_both_formats_as_trimesh() -> None:
    """The ``mesh-read`` entry (quick size) times facehd and trimesh on the same files and finds
    the same vertices and faces in both."""
    from facehd.perf_entries import mesh_read_entry

    rows = mesh_read_entry(quick=True)
    assert [r.metric for r in rows] == [
        "OBJ, v/vt/vn corners",
        "OBJ, v/vt/vn corners: trimesh / facehd",
        "binary PLY",
        "binary PLY: trimesh / facehd",
    ]
    assert all(r.value > 0 for r in rows)
    assert all("same vertices and faces: True" in r.note for r in rows[::2]), rows


def test_timeit_keeps_the_best_of_its_calls(monkeypatch) -> None:
    from facehd import perf

    clock = iter([0.0, 5.0, 10.0, 12.0, 20.0, 23.0])  # calls of 5, 2 and 3 s
    monkeypatch.setattr(perf.time, "perf_counter", lambda: next(clock))
    calls = []
    assert perf.timeit(lambda: calls.append(1), repeat=3) == 2.0 and len(calls) == 3
    clock = iter([0.0, 4.0])
    assert perf.timeit(lambda: calls.append(1), repeat=0) == 4.0  # at least one call


def test_flops_are_counted_and_rated_as_multiply_adds_times_two(monkeypatch) -> None:
    import torch

    from facehd import perf

    a, b = torch.ones(30, 40), torch.ones(40, 50)
    assert perf.count_gflop(lambda: a @ b) == 2 * 30 * 40 * 50 / 1e9
    monkeypatch.setattr(perf, "timeit", lambda fn, repeat: 0.5)
    assert perf.matmul_peak_gflops(n=64) == 2 * 64**3 / 0.5 / 1e9


def test_run_takes_every_entry_in_name_order_and_refuses_unknown_ones(monkeypatch) -> None:
    import pytest

    from facehd import perf

    def entry(name: str) -> perf._Entry:
        return perf._Entry(name, lambda quick: [perf.PerfRow(name, "s", 1.0, "s")], name)

    monkeypatch.setattr(perf, "discover", lambda: {n: entry(n) for n in ("b", "c", "a")})
    assert [r.entry for r in perf.run()] == ["a", "b", "c"]
    assert [r.entry for r in perf.run(["c", "a"])] == ["c", "a"]
    # a quick run leaves a row without a target as it is (nothing to judge)
    assert perf.run(["a"], quick=True) == [perf.PerfRow("a", "s", 1.0, "s")]
    with pytest.raises(ValueError, match=r"unknown perf entries \['x'\]; known: \['a', 'b', 'c'\]"):
        perf.run(["a", "x"])


def test_discover_skips_absent_modules_but_not_their_broken_imports(monkeypatch, tmp_path) -> None:
    import sys

    import pytest

    from facehd import perf

    (tmp_path / "perf_broken_entries.py").write_text("import no_such_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(perf, "ENTRY_MODULES", ("no_such_entries_module",))
    assert isinstance(perf.discover(), dict)  # an optional part not installed: skipped
    monkeypatch.setattr(perf, "ENTRY_MODULES", ("perf_broken_entries",))
    with pytest.raises(ModuleNotFoundError, match="no_such_module_anywhere"):
        perf.discover()  # the module is there and fails to import: said
    sys.modules.pop("perf_broken_entries", None)


def test_single_thread_gives_torch_its_thread_count_back() -> None:
    import pytest
    import torch

    from facehd.perf import single_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError), single_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_interrupts_are_left_alone_outside_the_main_thread() -> None:
    import signal
    import threading

    from facehd.perf import interrupts_deferred

    seen = []

    def body() -> None:
        with interrupts_deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert seen == [before]  # signal.signal would raise there: it is not called


def test_a_perf_csv_saved_with_a_byte_order_mark_is_updated_and_binary_is_refused(
    tmp_path,
) -> None:
    import pytest

    from facehd.errors import InputFileError
    from facehd.perf import CSV_COLUMNS, check_csv

    path = tmp_path / "perf.csv"
    path.write_text("\ufeff" + ",".join(CSV_COLUMNS) + "\nold,s,1.0,s,,,,x,2,d\n", "utf-8")
    check_csv(path)
    write_csv([PerfRow("new", "s", 2.0, "s")], path)
    with open(path, newline="") as fh:
        assert [r["entry"] for r in csv.DictReader(fh)] == ["new", "old"]
    write_csv([PerfRow("old", "s", 3.0, "s")], path)  # measured again: its row replaced
    with open(path, newline="") as fh:
        got = [(r["entry"], r["value"]) for r in csv.DictReader(fh)]
    assert got == [("new", "2.0"), ("old", "3.0")]
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(InputFileError, match="is no facehd perf CSV"):
        check_csv(path)
