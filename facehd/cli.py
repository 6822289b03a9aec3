"""The ``facehd`` command line.

Each command only parses its arguments and calls library code; heavy modules are imported inside
the command so that ``facehd --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="facehd: detailed 3D face reconstruction research toolkit (HRN).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


@app.command()
def perf(
    entries: list[str] = typer.Argument(None, help="Entries to run (default: all)."),
    out: Path = typer.Option(Path("facehd-out/perf.csv"), help="CSV file to write."),
    quick: bool = typer.Option(False, help="Smaller problems (a smoke run)."),
    list_entries: bool = typer.Option(False, "--list", help="List the entries and exit."),
) -> None:
    """Run speed benchmarks, print a table and write a CSV.

    Example: facehd perf distance procrustes-icp --out facehd-out/perf.csv
    """
    from facehd import perf as perf_mod

    if list_entries:
        table = Table("entry", "description")
        for name, entry in sorted(perf_mod.discover().items()):
            table.add_row(name, entry.description)
        console.print(table)
        return
    try:
        rows = perf_mod.run(entries or None, quick=quick)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    table = Table("entry", "metric", "value", "unit", "target", "ok", "note")
    for r in rows:
        ok = "" if r.passed is None else ("yes" if r.passed else "NO")
        table.add_row(r.entry, r.metric, f"{r.value:.4g}", r.unit, r.target, ok, r.note)
    console.print(table)
    console.print(f"wrote {perf_mod.write_csv(rows, out)}")


# --- commands of other capabilities are added below, one block each ---

if __name__ == "__main__":  # pragma: no cover
    app()
