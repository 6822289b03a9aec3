"""CSV and JSON output of benchmark runs, written atomically.

A file is written to a temporary sibling and renamed over its destination, so an interrupted or
failing run never leaves a half-written file behind and never damages results already there.
Read-modify-write updates (the leaderboard) hold an exclusive lock on a hidden
``.<name>.lock`` sibling.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from facehd.csvtext import atomic_write_text, format_value, locked, write_rows

__all__ = [
    "atomic_write_text",
    "write_rows",
    "read_rows",
    "config_hash",
    "locked",
    "format_value",
]


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV file as ``{column: text}`` (empty list when the file does not exist; a
    byte-order mark, as spreadsheet programs save one, is not part of the first column)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def config_hash(config: Any) -> str:
    """First 12 hex digits of the SHA-256 of a config's canonical JSON."""
    data = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
