"""Speed benchmarks: ``facehd perf``.

Benchmark entries register themselves with :func:`register`; ``facehd perf`` imports the modules in
:data:`ENTRY_MODULES`, runs the selected entries, prints a table and writes a CSV. Targets are
measured here, never asserted by timing in the test suite.

An entry is a function ``fn(quick: bool) -> list[PerfRow]``; ``quick`` asks for a smaller problem
(used by the test that checks every entry runs).
"""

from __future__ import annotations

import csv
import importlib
import io
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

#: Modules that define benchmark entries (imported lazily by :func:`discover`).
ENTRY_MODULES: tuple[str, ...] = (
    "facehd.perf_entries",
    "pipelines.perf_entries",
    "benchmarks.perf_entries",
    "models.perf_entries",
    "pipelines.landmarks_perf",
)


@dataclass
class PerfRow:
    """One measured quantity of one benchmark entry."""

    entry: str
    """Name of the benchmark entry (e.g. ``distance``)."""
    metric: str
    """What was measured (e.g. ``facehd seconds``)."""
    value: float
    """The measured number."""
    unit: str
    """Unit of ``value`` (``s``, ``ms``, ``x``, ``MiB``...)."""
    target: str = ""
    """The target in words (e.g. ``< 1 s``), empty when there is none."""
    passed: bool | None = None
    """Whether ``value`` meets the target; ``None`` when there is no target."""
    note: str = ""
    """Problem size or other context."""


@dataclass
class _Entry:
    name: str
    fn: Callable[[bool], list[PerfRow]]
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, description: str) -> Callable:
    """Decorator registering ``fn(quick: bool) -> list[PerfRow]`` as benchmark entry ``name``."""

    def deco(fn: Callable[[bool], list[PerfRow]]) -> Callable[[bool], list[PerfRow]]:
        _REGISTRY[name] = _Entry(name, fn, description)
        return fn

    return deco


def discover() -> dict[str, _Entry]:
    """Import every module in :data:`ENTRY_MODULES` that exists and return the registry."""
    for mod in ENTRY_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
    return dict(_REGISTRY)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the body with torch, NumPy's and SciPy's BLAS and Open3D's automatic-thread calls on
    one thread each; their counts before it after."""
    import torch

    from facehd._o3d import threads_limited
    from facehd.threads import one_blas_thread

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with one_blas_thread(), threads_limited(1):
            yield
    finally:
        torch.set_num_threads(old)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then raise :class:`KeyboardInterrupt`.

    For third-party code that calls back into Python through ctypes (rtree, behind trimesh's
    reference queries): an interrupt raised inside such a callback is printed and dropped, and
    the library then goes on with a broken result. Outside the main thread: no change."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def timeit(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall-clock seconds of ``repeat`` calls of ``fn``."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak_gflops(n: int = 1024, repeat: int = 3, dtype: Any = None) -> float:
    """GFLOP/s of an ``n x n`` matrix product in torch with the current thread count, float32
    unless ``dtype`` says otherwise (``torch.bfloat16``): what this core's BLAS reaches, an upper
    bound for convolution-bound networks."""
    import torch

    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dtype or torch.float32)
    b = torch.randn(n, n, generator=g).to(dtype or torch.float32)
    torch.mm(a, b)  # warm-up
    return 2.0 * n**3 / timeit(lambda: torch.mm(a, b), repeat) / 1e9


def count_gflop(fn: Callable[[], object]) -> float:
    """GFLOP of the convolutions and matrix products one call of ``fn`` runs (torch's
    ``FlopCounterMode``: a multiply-add counts 2; element-wise work is not counted, so this is a
    lower bound of the arithmetic)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def run(
    names: list[str] | None = None, quick: bool = False, rows: list[PerfRow] | None = None
) -> list[PerfRow]:
    """Run the named entries (all when ``names`` is empty or ``None``).

    ``rows``, when given, receives each entry's rows as it finishes (an interrupted run keeps
    those). With ``quick`` the problems are smaller than the targets are set for: the rows keep
    their targets as a reference but are not judged (``passed`` None, a note says so).
    """
    registry = discover()
    selected = names or sorted(registry)
    unknown = [n for n in selected if n not in registry]
    if unknown:
        raise ValueError(f"unknown perf entries {unknown}; known: {sorted(registry)}")
    rows = [] if rows is None else rows
    for name in selected:
        got = registry[name].fn(quick)
        if quick:
            got = [
                replace(r, passed=None, note=f"quick (smaller problem; not judged); {r.note}")
                if r.target
                else r
                for r in got
            ]
        rows.extend(got)
    return rows


CSV_COLUMNS: tuple[str, ...] = (*(f.name for f in fields(PerfRow)), "machine", "cpus", "date")
"""Header of the CSV :func:`write_csv` writes."""


def _earlier_rows(path: Path) -> list[dict[str, str]]:
    """The rows of an existing perf CSV at ``path`` (none when there is no file).

    Raises InputFileError when the file is something else (another header, not text): it is
    not replaced."""
    from facehd.errors import InputFileError

    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = tuple(reader.fieldnames or ())
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(path, f"exists and is no facehd perf CSV ({exc})") from None
    if header != CSV_COLUMNS:
        raise InputFileError(
            path,
            "exists and is no facehd perf CSV (its header differs): choose another --out, or "
            "move the file away",
        )
    return rows


def check_csv(path: str | Path) -> None:
    """Check, before measuring, that ``path`` is absent or a perf CSV :func:`write_csv` may
    update (InputFileError otherwise)."""
    _earlier_rows(Path(path))


def write_csv(rows: list[PerfRow], path: str | Path) -> Path:
    """Write ``rows`` to ``path`` (atomically) with machine information columns. The rows an
    earlier run wrote there for other entries are kept (an entry measured again replaces its
    own rows), so that runs of some entries, or an interrupted run, lose none of the others; a
    file that is not a perf CSV is refused (:func:`check_csv`)."""
    from facehd.csvtext import atomic_write_text, format_value

    path = Path(path)
    ran = {r.entry for r in rows}
    kept = [r for r in _earlier_rows(path) if r.get("entry") not in ran]
    info = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    new = [{k: format_value(v) for k, v in {**asdict(row), **info}.items()} for row in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in sorted(kept + new, key=lambda r: r["entry"]):  # stable: an entry's own order
        writer.writerow(row)
    return atomic_write_text(path, buf.getvalue())
