"""The CLI's shared context and its output helpers.

Theory of operation
-------------------
The root callback in ``cli/main.py`` stores one ``Ctx`` in ``typer.Context.obj``. A command
gets its own copy with ``command_ctx(ctx, json=json)``, which finds the root ``Ctx`` and sets
the command's ``--json`` flag on the copy::

    @some_app.command("status")
    def status(ctx: typer.Context, json: JsonFlag = False) -> None:
        c = command_ctx(ctx, json=json)
        data = {"chain": c.config.chain}
        emit(c, data, lambda: show_fields([("chain", c.config.chain)]))

``Ctx.config`` loads the configuration on first use and caches it (copies share the cache), so
``--help`` or ``--version`` never touch a broken config file.

Output rules: data goes to stdout, errors to stderr. With ``--json`` stdout carries exactly one
JSON document (``emit``); otherwise rich text. Errors are one line, ``error: <message>``, with
a traceback only under ``--debug`` (``report_error``).
"""

from __future__ import annotations

import json as jsonlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.traceback import Traceback

from nuclux.config import Config, load_config
from nuclux.core.types import parse_nux
from nuclux.errors import NucluxError, UsageError

INTERNAL_ERROR_EXIT = 70
INTERRUPTED_EXIT = 130
BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE, as a shell reports a command its pipe closed on

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
"""The ``--json`` option every command that shows state takes."""


class _ConfigCache:
    """Holds the loaded ``Config`` for all copies of one ``Ctx``."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Config | None = None


@dataclass(frozen=True, slots=True)
class Ctx:
    """What every command needs: settings (lazy), ``--debug``, its own ``--json``."""

    config_path: Path | None = None
    debug: bool = False
    json: bool = False
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    cache: _ConfigCache = field(default_factory=_ConfigCache, repr=False, compare=False)

    @property
    def config(self) -> Config:
        """The effective configuration, loaded on first use (``ConfigError`` if invalid)."""
        if self.cache.value is None:
            self.cache.value = load_config(self.config_path, self.env)
        return self.cache.value


def nux_arg(text: str, what: str) -> int:
    """A NUX amount given on the command line (e.g. ``5`` or ``0.25``) in wei; ``UsageError``
    naming the option ``what`` when it is not one."""
    try:
        return parse_nux(text)
    except ValueError as err:
        raise UsageError(f"{what}: {err}") from None


def command_ctx(ctx: typer.Context, *, json: bool = False) -> Ctx:
    """The root ``Ctx`` with this command's ``--json`` flag (a fresh one if there is none)."""
    root = ctx.find_object(Ctx)
    return replace(root if root is not None else Ctx(), json=json)


def stdout_console() -> Console:
    return Console(highlight=False)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def emit(ctx: Ctx, data: dict[str, Any] | list[Any], render: Callable[[], None]) -> None:
    """Print ``data`` as JSON if the command got ``--json``, else call ``render``."""
    if ctx.json:
        typer.echo(jsonlib.dumps(data, indent=2, sort_keys=True))
    else:
        render()


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Print a table; cells are plain text (never markup), long values fold, None shows '-'."""
    out = Table(title=title, title_justify="left")
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*(Text("-" if cell is None else str(cell)) for cell in row))
    stdout_console().print(out)


LARGE_LISTING = 500  # rows beyond which a listing is printed as plain text, at once


def records_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """``table`` when it fits the terminal with no cell folded; otherwise one block per row:
    the first cell alone on its line, never folded (a reference to copy whole), then the
    others as ``column: value`` lines. Beyond ``LARGE_LISTING`` rows the same layouts are
    written as plain text (no box, no styles): rich takes about 0.4 ms a row, so a listing
    of 100,000 files would take most of a minute to print."""
    cells = [["-" if cell is None else str(cell) for cell in row] for row in rows]
    console = stdout_console()
    widths = [max([cell_len(c), *(cell_len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    fits = sum(widths) + 3 * len(columns) + 1 <= console.width  # cells, padding, rules
    if len(cells) > LARGE_LISTING:
        console.file.write(_plain(title, columns, cells, widths if fits else None))
        console.file.flush()
        return
    if fits:
        table(title, columns, cells)
        return
    label = max((len(c) for c in columns[1:]), default=0) + 1
    for n, row in enumerate(cells):
        if n:
            console.print()
        console.print(Text(row[0], style="bold"), soft_wrap=True)
        for column, value in zip(columns[1:], row[1:], strict=True):
            console.print(Text(f"  {column + ':':<{label}} {value}"), soft_wrap=True)


def _plain(
    title: str, columns: Sequence[str], cells: list[list[str]], widths: list[int] | None
) -> str:
    """A listing as text: aligned columns (``widths``), or one block per row (None)."""
    if widths is not None:

        def line(values: Sequence[str]) -> str:
            padded = [v + " " * (w - cell_len(v)) for v, w in zip(values, widths, strict=True)]
            return "  ".join(padded).rstrip()

        return "\n".join([title, line(columns), *(line(row) for row in cells)]) + "\n"
    cols = columns[1:]
    label = max((len(c) for c in cols), default=0) + 1
    blocks = [
        "\n".join(
            [row[0], *(f"  {c + ':':<{label}} {v}" for c, v in zip(cols, row[1:], strict=True))]
        )
        for row in cells
    ]
    return "\n\n".join(blocks) + "\n"


def show_fields(pairs: Sequence[tuple[str, object]]) -> None:
    """Print ``label: value`` lines; values are never wrapped or read as markup."""
    width = max((len(label) for label, _ in pairs), default=0)
    console = stdout_console()
    for label, value in pairs:
        line = Text(f"{label}:".ljust(width + 2), style="bold")
        line.append("-" if value is None else str(value))
        console.print(line, soft_wrap=True)


def report_error(err: NucluxError, *, debug: bool) -> int:
    """Print ``error: <message>`` (and the traceback if ``debug``); return the exit code."""
    _print_error(err, "error: ", _one_line(err), debug=debug)
    return err.exit_code


def report_internal(err: BaseException, *, debug: bool) -> int:
    """Print a one-line report of an unexpected exception; return exit code 70."""
    hint = "" if debug else " (run with --debug for a traceback)"
    message = f"{type(err).__name__}: {_one_line(err)}{hint}"
    _print_error(err, "internal error: ", message, debug=debug)
    return INTERNAL_ERROR_EXIT


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _print_error(err: BaseException, prefix: str, message: str, *, debug: bool) -> None:
    console = stderr_console()
    if debug:
        console.print(Traceback.from_exception(type(err), err, err.__traceback__))
    line = Text(prefix, style="bold red")
    line.append(message)
    console.print(line, soft_wrap=True)
