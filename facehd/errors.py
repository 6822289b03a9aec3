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


class DegenerateInputError(FacehdError):
    """Input data is geometrically degenerate (coincident or collinear points, zero area, ...)."""
