"""Errors raised by facehd for bad input.

Every error about a file names the file and the problem, so a batch job can record it in
``failures.csv`` and continue.
"""

from __future__ import annotations

from pathlib import Path


class FacehdError(ValueError):
    """Base class of facehd's input errors (a ``ValueError``)."""


class InputFileError(FacehdError):
    """A file is missing, unreadable or holds data facehd cannot use.

    Attributes:
        path: the offending file.
        problem: what is wrong with it, in words.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class InputFileWarning(UserWarning):
    """A file was read with part of it left out or changed (a damaged block the data does not
    need, say). The message names the file and what was done; ``facehd`` commands print it as
    one ``warning:`` line."""


class DegenerateInputError(FacehdError):
    """Input data is geometrically degenerate (coincident or collinear points, zero area, ...)."""


def nearest_existing(path: str | Path) -> Path:
    """``path`` when it exists, else the nearest folder above it that does (as ``path`` is
    written, relative or absolute): where an output not made yet would be made, and what
    stands in its way when that is a file."""
    path = Path(path)
    return next((p for p in (path, *path.parents) if p.exists()), path)


def is_broken_link(path: str | Path) -> bool:
    """Whether ``path`` is a link whose target is not there."""
    path = Path(path)
    return path.is_symlink() and not path.exists()


def is_file_or_broken_link(path: str | Path) -> bool:
    """Whether a folder search lists ``path`` as an input: a regular file, or a link whose
    target is gone (listed so that reading it fails naming the link, rather than the input
    going missing without a word)."""
    path = Path(path)
    return path.is_file() or is_broken_link(path)


def check_output_folder(path: str | Path, role: str) -> Path:
    """Make ``path`` (a folder outputs go to) and check that files can be written in it, before
    a job spends any time: a read-only or misnamed output is then one clear error up front,
    not a traceback after the work, or every input of a batch failed for it.

    Raises
    ------
    InputFileError
        ``path`` is a file, cannot be made, or cannot be written in (names ``role``).
    """
    import os
    import tempfile

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputFileError(path, f"the {role} must be a folder, and this is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".facehd-write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputFileError(
            path, f"cannot write the {role} here ({exc.strerror or exc})"
        ) from None
    return path


def check_output_file(path: str | Path, role: str) -> Path:
    """:func:`check_output_folder` for the folder of a file to write (``role``, e.g. ``CSV``),
    which must not itself be a folder.

    Raises
    ------
    InputFileError
        ``path`` is a folder or has no name, or its folder cannot be written.
    """
    path = Path(path)
    if path.is_dir() or not path.name:
        raise InputFileError(path, f"is a folder: give the {role} file to write, not a folder")
    check_output_folder(path.parent, f"{role}'s folder")
    return path


def raise_if_interrupted(exc: BaseException) -> None:
    """Raise :class:`KeyboardInterrupt` when ``exc`` was caused by one.

    Ctrl-C (or SIGTERM, which the command line turns into it) that lands while a compiled
    extension initialises (Open3D's or mediapipe's first import) comes out as that module's
    ``ImportError`` ("initialization failed"), with the interrupt as its cause: a batch that
    records every failure and goes on would record the interrupt as a failure of each item
    after it."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            raise KeyboardInterrupt from exc
        seen.add(id(e))
        e = e.__cause__ or e.__context__


def failure_reason(exc: BaseException) -> str:
    """The reason recorded for an exception: facehd's own errors by their message, others with
    their type."""
    if isinstance(exc, FacehdError):
        return str(exc)
    if isinstance(exc, MemoryError):  # its message is empty or a bare size
        return f"out of memory (MemoryError{': ' + str(exc) if str(exc) else ''})"
    return f"{type(exc).__name__}: {exc}"


NOT_UTF8 = "file name is not valid UTF-8 text: rename the file"
"""The problem said of a file whose name holds bytes of another encoding."""


def printable(text: str | Path) -> str:
    """``text`` (a file name or path) as valid UTF-8 for messages, logs and CSV files: each byte
    of a name in another encoding (read by Python with surrogate escapes) written as ``\\xNN``,
    the byte it is on disk, and control characters (line breaks, tabs) as escapes."""
    s = str(text)
    try:
        raw = s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        raw = s.encode("utf-8", "backslashreplace")
    out = raw.decode("utf-8", "backslashreplace")
    if any(c < " " or c == "\x7f" for c in out):
        out = "".join(c if c >= " " and c != "\x7f" else ascii(c)[1:-1] for c in out)
    return out


def printable_exact(text: str | Path) -> str:
    """:func:`printable`, one to one: a name that holds a backslash, or that needs an escape,
    has its own backslashes doubled first, so no two names give one text (:func:`printable`
    writes a line break and the two characters backslash and ``n`` alike). Names without either
    come out as they are; for keys that stand for a file across runs (an index's rows)."""
    s = str(text)
    if "\\" not in s and printable(s) == s:
        return s
    return printable(s.replace("\\", "\\\\"))


def utf8_problem(name: str | Path) -> str | None:
    """Why ``name`` cannot be written as text (:data:`NOT_UTF8`), None when it can."""
    try:
        str(name).encode("utf-8")
    except UnicodeEncodeError:
        return NOT_UTF8
    return None
