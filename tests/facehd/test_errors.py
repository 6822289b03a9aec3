"""facehd.errors: file names in messages (:func:`printable`, :func:`utf8_problem`), output
folders checked up front, interrupts behind other errors, and the reasons batches record."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facehd.errors import NOT_UTF8, printable, utf8_problem


def test_printable_writes_each_foreign_byte_as_the_byte_on_disk() -> None:
    # Latin-1 and Windows-1252 names, read by Python with surrogate escapes: every byte that
    # is not UTF-8 shows as \xNN, and the text encodes as UTF-8
    for raw in (b"lat\xe9.png", b"\x93quoted\x94 \xff\xfe.obj", b"caf\xc3\xa9-lat\xe9"):
        name = os.fsdecode(raw)
        text = printable(name)
        text.encode("utf-8")
        # brute force: the expected text built byte by byte
        expected, i = "", 0
        while i < len(raw):
            for n in (4, 3, 2, 1):
                try:
                    expected += raw[i : i + n].decode("utf-8")
                    i += n
                    break
                except UnicodeDecodeError:
                    continue
            else:
                expected += f"\\x{raw[i]:02x}"
                i += 1
        assert text == expected
    assert printable(os.fsdecode(b"/d/lat\xe9.png")) == "/d/lat\\xe9.png"


def test_printable_leaves_valid_names_alone_and_escapes_line_breaks() -> None:
    for name in ("café.png", "東京/顔.obj", "a b", "plain"):
        assert printable(name) == name
    assert printable("a\nb\tc\x7f") == "a\\nb\\tc\\x7f"
    assert "\n" not in printable("two\nlines")
    assert printable("\ud800x") == "\\ud800x"  # a lone surrogate that is no escaped byte


def test_utf8_problem_only_for_names_that_cannot_be_text() -> None:
    assert utf8_problem(os.fsdecode(b"lat\xe9.png")) == NOT_UTF8
    assert utf8_problem("café.png") is None and utf8_problem("plain") is None


def test_nearest_existing_is_the_path_or_the_first_folder_above_it_there(tmp_path, monkeypatch):
    from facehd.errors import nearest_existing

    (tmp_path / "a").mkdir()
    (tmp_path / "f").write_text("x")
    assert nearest_existing(tmp_path / "a") == tmp_path / "a"
    assert nearest_existing(tmp_path / "a" / "b" / "c") == tmp_path / "a"
    assert nearest_existing(tmp_path / "f" / "x") == tmp_path / "f"  # a file in the way
    monkeypatch.chdir(tmp_path)  # relative paths stay relative
    assert nearest_existing("a/b") == Path("a") and nearest_existing("new/x") == Path(".")


def test_broken_links_are_listed_with_files_and_nothing_else(tmp_path) -> None:
    from facehd.errors import is_broken_link, is_file_or_broken_link

    (tmp_path / "file.obj").write_text("v 0 0 0\n")
    (tmp_path / "folder.obj").mkdir()
    (tmp_path / "link.obj").symlink_to(tmp_path / "file.obj")
    (tmp_path / "gone.obj").symlink_to(tmp_path / "nowhere.obj")
    (tmp_path / "to-folder").symlink_to(tmp_path / "folder.obj")
    expect = {  # name: (broken link, listed)
        "file.obj": (False, True),
        "folder.obj": (False, False),
        "link.obj": (False, True),
        "gone.obj": (True, True),
        "to-folder": (False, False),
        "never-made.obj": (False, False),
    }
    for name, (broken, listed) in expect.items():
        assert is_broken_link(tmp_path / name) is broken, name
        assert is_file_or_broken_link(tmp_path / name) is listed, name


def test_printable_exact_is_one_to_one() -> None:
    """Every name of up to 4 characters over an alphabet of the characters that escapes are made
    of (a backslash, x, n, f, a line break, a tab, a byte of another encoding) gives its own text,
    valid UTF-8; printable itself writes some of them alike."""
    import itertools

    from facehd.errors import printable_exact

    alphabet = ["\\", "x", "n", "f", "\n", "\t", os.fsdecode(b"\xff")]
    names = ["".join(c) for k in range(5) for c in itertools.product(alphabet, repeat=k)]
    texts = [printable_exact(n) for n in names]
    assert len(set(texts)) == len(names)
    for t in texts:
        t.encode("utf-8")
        assert "\n" not in t and "\t" not in t
    assert printable("a\nb") == printable("a\\nb")  # why printable_exact exists
    assert printable_exact("/d/plain name.png") == "/d/plain name.png"


def test_output_folders_are_made_and_checked_before_any_work(tmp_path) -> None:
    from facehd.errors import InputFileError, check_output_file, check_output_folder

    made = check_output_folder(tmp_path / "a" / "b", "output folder")
    assert made.is_dir() and list(made.iterdir()) == []  # the write probe is gone
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    with pytest.raises(InputFileError, match="the output folder must be a folder, and this is"):
        check_output_folder(a_file, "output folder")
    with pytest.raises(InputFileError, match=r"cannot write the output folder here \("):
        check_output_folder(a_file / "sub", "output folder")  # a file in the way
    csv_path = check_output_file(tmp_path / "c" / "runs.csv", "CSV")
    assert csv_path.parent.is_dir() and not csv_path.exists()
    with pytest.raises(InputFileError, match="is a folder: give the CSV file to write"):
        check_output_file(tmp_path / "a", "CSV")
    with pytest.raises(InputFileError, match="the CSV's folder must be a folder, and this is a"):
        check_output_file(a_file / "runs.csv", "CSV")


def test_an_interrupt_behind_another_error_is_raised_again() -> None:
    from facehd.errors import raise_if_interrupted

    def chained(link: str) -> ImportError:
        try:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as inner:
                if link == "cause":
                    raise ImportError("initialization failed") from inner
                raise ImportError("initialization failed")  # noqa: B904 - the context link
        except ImportError as exc:
            return exc

    for link in ("cause", "context"):
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted(chained(link))
    raise_if_interrupted(ValueError("bad file"))  # nothing to raise
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a  # a cycle ends the walk
    raise_if_interrupted(a)


def test_failure_reasons_name_facehds_errors_by_message_and_others_by_type() -> None:
    from facehd.errors import InputFileError, failure_reason

    assert failure_reason(InputFileError("x.obj", "no faces")) == "x.obj: no faces"
    assert failure_reason(MemoryError()) == "out of memory (MemoryError)"
    assert failure_reason(MemoryError("12 GB")) == "out of memory (MemoryError: 12 GB)"
    assert failure_reason(TypeError("bad")) == "TypeError: bad"
