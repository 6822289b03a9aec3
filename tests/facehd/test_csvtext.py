"""facehd.csvtext: the lock that guards an output, and the CSV writers' layout."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import pytest

from facehd.csvtext import LockHeld, locked, write_rows, write_table


def test_a_waiting_lock_blocks_until_the_holder_lets_go(tmp_path):
    """``locked(wait=True)`` waits for another holder (a second open of the lock file, as
    another process would have) instead of raising; ``wait=False`` raises and names it."""
    out = tmp_path / "out"
    held, release = threading.Event(), threading.Event()
    order: list[str] = []

    def holder() -> None:
        with locked(out):
            held.set()
            release.wait(10)
            order.append("released")

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(10)
        with pytest.raises(LockHeld) as info:
            with locked(out, wait=False):
                pass
        assert info.value.holder == f"pid {os.getpid()}"
        release.set()
        with locked(out):  # waits for the thread's release
            order.append("acquired")
    finally:
        release.set()
        t.join(10)
    assert order == ["released", "acquired"]


def test_the_lock_names_its_current_holder_alone(tmp_path):
    """The lock file is rewritten by each holder (opened for appending, it would otherwise keep
    every earlier holder's line)."""
    out = tmp_path / "out"
    lock_file = tmp_path / ".out.lock"
    lock_file.write_text("pid 123456789\n")  # a holder long gone
    for _ in range(3):
        with locked(out):
            assert lock_file.read_text() == f"pid {os.getpid()}\n"
    with locked(out), pytest.raises(LockHeld) as info, locked(out, wait=False):
        pass
    assert info.value.holder == f"pid {os.getpid()}"


@dataclass
class _Row:
    name: str
    value: float


@dataclass
class _Wider(_Row):
    extra: int = 0


def test_write_rows_takes_the_header_from_row_type_and_refuses_other_rows(tmp_path):
    path = write_rows(tmp_path / "a.csv", [_Wider("x", 1.5, 3)], _Row)
    assert path.read_bytes() == b"name,value\nx,1.5\n"  # row_type's fields, \n line ends
    assert write_rows(tmp_path / "e.csv", [], _Row).read_text() == "name,value\n"
    with pytest.raises(ValueError, match="dataclass rows or their row_type"):
        write_rows(tmp_path / "b.csv", [("x", 1.5)])
    with pytest.raises(ValueError, match="dataclass rows or their row_type"):
        write_rows(tmp_path / "c.csv", [])
    assert not (tmp_path / "b.csv").exists()


def test_write_table_quotes_cells_and_ends_lines_with_newline(tmp_path):
    path = write_table(tmp_path / "t.csv", ["a", "b"], [["1,5", 'say "hi"'], ["", "x"]])
    assert path.read_bytes() == b'a,b\n"1,5","say ""hi"""\n,x\n'
