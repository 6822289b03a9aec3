"""PLY files checked against their headers before trimesh parses them (:func:`checked_ply`).

trimesh reads what an ASCII PLY holds even when it ends before the records its header announces
(a file cut in transfer comes back with part of its faces, and no word of it), and refuses every
binary PLY whose size is not the header's with one message, "PLY is unexpected length!", also a
whole file whose faces are polygons of several sizes (its reader takes every face's corner count
from the first face). Here the records are counted as the header declares them: a file cut short
is named as such, with where it ends, and a binary file of mixed polygons is handed on with its
faces split into triangles.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

import numpy as np

__all__ = ["PlyError", "checked_ply"]

_TYPES = {
    "char": "b",
    "int8": "b",
    "uchar": "B",
    "uint8": "B",
    "short": "h",
    "int16": "h",
    "ushort": "H",
    "uint16": "H",
    "int": "i",
    "int32": "i",
    "uint": "I",
    "uint32": "I",
    "float": "f",
    "float32": "f",
    "double": "d",
    "float64": "d",
}
_INDEX_NAMES = ("vertex_indices", "vertex_index")


class PlyError(ValueError):
    """A PLY file that does not hold what its header announces (the message says where)."""


@dataclass
class _Element:
    name: str
    count: int
    lines: list[str] = field(default_factory=list)
    """Its header lines (``element`` and ``property``)."""
    props: list[tuple[str, str, str | None]] = field(default_factory=list)
    """(name, item type, count type of a list or None) in record order."""


def _header(data: bytes) -> tuple[str, int, list[str], list[_Element]] | None:
    """(format, offset of the data, comment lines, elements) of a PLY header, or None when it
    is not one this module understands (trimesh then says what is wrong)."""
    end = re.search(rb"^end_header[ \t\r]*(\n|$)", data, re.M)
    if not data.startswith(b"ply") or end is None:
        return None
    fmt, comments, elements = "", [], []
    for raw in data[: end.start()].decode("latin-1").splitlines()[1:]:
        words = raw.split()
        if not words:
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] in ("comment", "obj_info"):
            comments.append(raw.rstrip("\r"))
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(_Element(words[1], int(words[2]), [raw.strip()]))
        elif words[0] == "property" and elements:
            if len(words) == 5 and words[1] == "list":
                if words[2] not in _TYPES or words[3] not in _TYPES:
                    return None
                elements[-1].props.append((words[4], words[3], words[2]))
            elif len(words) == 3 and words[1] in _TYPES:
                elements[-1].props.append((words[2], words[1], None))
            else:
                return None
            elements[-1].lines.append(raw.strip())
        else:
            return None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        return None
    return fmt, end.end(), comments, elements


def _records_word(e: _Element, n: int) -> str:
    return f"{n} of the {e.count} {e.name} records its header announces"


def _check_ascii(body: bytes, elements: list[_Element]) -> None:
    """A cut ASCII file: fewer record lines than announced, or its last record incomplete."""
    lines = re.findall(rb"^[ \t\r]*\S[^\n]*", body, re.M)
    need = sum(e.count for e in elements)
    if len(lines) >= need:
        if need and len(lines) == need:
            last = next(e for e in reversed(elements) if e.count)
            words = lines[-1].split()
            wanted = 0
            for _, _, count_type in last.props:
                if count_type is None:
                    wanted += 1
                elif len(words) > wanted:
                    try:
                        wanted += 1 + int(float(words[wanted]))
                    except ValueError:
                        return  # not a number: trimesh says so
                else:
                    wanted += 1
            if len(words) < wanted:
                raise PlyError(
                    f"cut short: its last {last.name} record is incomplete ({len(words)} of "
                    f"{wanted} numbers; a file cut in transfer?)"
                )
        return
    seen = len(lines)
    for e in elements:
        if seen < e.count:
            raise PlyError(
                f"cut short: the file ends after {_records_word(e, seen)} (a file cut in transfer?)"
            )
        seen -= e.count


def _walk_binary(
    data: bytes, start: int, endian: str, elements: list[_Element]
) -> tuple[list[int], dict[str, list[tuple[int, int]]]]:
    """The offset after each element's records, and for each element with a list of vertex
    indices whose lists are not all of one length, the (offset, length) of that list in every
    record."""
    pos = start
    ends: list[int] = []
    polygons: dict[str, list[tuple[int, int]]] = {}
    for e in elements:
        sizes = [struct.calcsize(endian + _TYPES[t]) for _, t, _ in e.props]
        lists = [endian + _TYPES[c] if c else None for _, _, c in e.props]
        if all(c is None for c in lists):
            done = min(e.count, (len(data) - pos) // max(1, sum(sizes)))
            if done < e.count:
                raise PlyError(
                    f"a truncated binary PLY: the file ends after {_records_word(e, done)} "
                    f"({len(data)} bytes)"
                )
            pos += e.count * sum(sizes)
            ends.append(pos)
            continue
        record = _uniform_record(data, pos, e, sizes, lists) if e.count else None
        if record is not None:
            pos += e.count * record
            ends.append(pos)
            continue
        # lists of several lengths (or a cut file): record by record
        spans: list[tuple[int, int]] = []
        for r in range(e.count):
            for (name, _, _), size, count in zip(e.props, sizes, lists, strict=True):
                if count is None:
                    pos += size
                    continue
                if pos + struct.calcsize(count) > len(data):
                    pos = len(data) + 1
                    break
                k = struct.unpack_from(count, data, pos)[0]
                pos += struct.calcsize(count)
                if name in _INDEX_NAMES:
                    spans.append((pos, k))
                pos += k * size
            if pos > len(data):
                raise PlyError(
                    f"a truncated binary PLY: the file ends after {_records_word(e, r)} "
                    f"({len(data)} bytes)"
                )
        if spans:
            polygons[e.name] = spans
        ends.append(pos)
    return ends, polygons


def _uniform_record(
    data: bytes, pos: int, e: _Element, sizes: list[int], lists: list[str | None]
) -> int | None:
    """The size of every record of ``e`` from ``pos`` when each has lists as long as the first
    record's and all of them lie in ``data`` (one vectorised look at each list's count), else
    None."""
    at, counts = pos, []
    for size, count in zip(sizes, lists, strict=True):
        if count is None:
            at += size
            continue
        if at + struct.calcsize(count) > len(data):
            return None
        k = struct.unpack_from(count, data, at)[0]
        counts.append((at - pos, count, k))
        at += struct.calcsize(count) + k * size
    record = at - pos
    if pos + e.count * record > len(data):
        return None
    uniform = all(
        bool(
            np.all(
                np.ndarray(
                    (e.count,), dtype=np.dtype(c), buffer=data, offset=pos + off, strides=(record,)
                )
                == k
            )
        )
        for off, c, k in counts
    )
    return record if uniform else None


def _triangulated(
    data: bytes,
    fmt: str,
    start: int,
    comments: list[str],
    elements: list[_Element],
    ends: list[int],
    polygons: dict[str, list[tuple[int, int]]],
) -> bytes:
    """The file again, with each element of mixed polygons replaced by their fan triangles
    (only their vertex indices: per-face values of such an element are left out)."""
    from facehd.vrml import fan_triangles

    endian = "<" if fmt == "binary_little_endian" else ">"
    head = ["ply", f"format {fmt} 1.0", *comments]
    body = []
    for e, begin, end in zip(elements, [start, *ends[:-1]], ends, strict=True):
        if e.name not in polygons:
            head += e.lines
            body.append(data[begin:end])
            continue
        spans = polygons[e.name]
        index_type = next(t for n, t, c in e.props if n in _INDEX_NAMES and c)
        item = np.dtype(endian + _TYPES[index_type])
        lengths = np.array([k for _, k in spans], dtype=np.int64)
        flat = np.concatenate(
            [np.frombuffer(data, dtype=item, count=k, offset=o) for o, k in spans]
        ).astype(np.int64)
        tri = flat[fan_triangles(lengths)]
        rows = np.zeros(len(tri), dtype=[("n", "u1"), ("i", endian + "i4", (3,))])
        rows["n"], rows["i"] = 3, tri
        head += [f"element {e.name} {len(tri)}", "property list uchar int vertex_indices"]
        body.append(rows.tobytes())
    return ("\n".join([*head, "end_header"]) + "\n").encode("latin-1") + b"".join(body)


def checked_ply(data: bytes) -> bytes:
    """A PLY file's bytes checked against its header, as trimesh is to read them.

    Returns ``data`` itself, or for a binary file whose faces are polygons of several sizes the
    same file with those faces split into triangles (fans). A header this module does not
    understand is passed on unchecked.

    Raises
    ------
    PlyError
        The file ends before the records its header announces (naming where), or its last
        ASCII record is incomplete, or a binary file holds more than its header announces.
    """
    parsed = _header(data)
    if parsed is None:
        return data
    fmt, start, comments, elements = parsed
    if fmt == "ascii":
        _check_ascii(data[start:], elements)
        return data
    endian = "<" if fmt == "binary_little_endian" else ">"
    ends, polygons = _walk_binary(data, start, endian, elements)
    end = ends[-1] if ends else start
    if data[end:].strip():
        raise PlyError(
            f"a binary PLY longer than its header says: {len(data) - end} bytes after its "
            f"records ({', '.join(f'{e.count} {e.name}' for e in elements)})"
        )
    if polygons:
        return _triangulated(data, fmt, start, comments, elements, ends, polygons)
    # whitespace after the records (a final line break) is no data
    return data if end == len(data) else data[:end]
