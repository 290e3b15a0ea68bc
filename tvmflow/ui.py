"""Terminal output helpers (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

import sys

# rich wraps at 80 columns when not on a terminal; tables of numbers read better wider
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def print_table(title: str, columns: list[str], rows: list[list], *, right: set[int] | None = None) -> None:
    table = Table(title=title, show_lines=False)
    right = right if right is not None else {i for i, c in enumerate(columns) if i > 0}
    for i, col in enumerate(columns):
        table.add_column(col, justify="right" if i in right else "left")
    for row in rows:
        table.add_row(*[str(c) for c in row])
    console.print(table)


def warn(message: str) -> None:
    from rich.markup import escape
    err_console.print(f"[yellow]Warning:[/yellow] {escape(message)}", highlight=False,
                      soft_wrap=True)
