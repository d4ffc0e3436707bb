"""``nuclux config``: show, locate, create and edit the configuration file.

Theory of operation
-------------------
``show`` loads the effective configuration (environment > file > defaults, see
``nuclux.config``) and prints every value with where it came from. ``path`` only resolves
which file would be read and never parses it, so it works even when the file is broken;
``init`` writes a default file (``--force`` to replace one) and ``set`` changes one key after
validating it, both atomically. Neither ``init`` nor ``path`` reads the existing file.
"""

from __future__ import annotations

from typing import Annotated

import typer

from nuclux.cli.output import JsonFlag, command_ctx, emit, show_fields, stdout_console, table
from nuclux.config import (
    KEYS,
    config_file_path,
    config_to_dict,
    default_table,
    set_config_value,
    write_config_file,
)

config_app = typer.Typer(name="config", help="Show and edit settings.", no_args_is_help=True)


@config_app.command("show")
def show(ctx: typer.Context, json: JsonFlag = False) -> None:
    """Show the effective settings and where each came from."""
    c = command_ctx(ctx, json=json)
    config = c.config
    values = config_to_dict(config)
    file = config.config_file
    exists = file is not None and file.is_file()
    data = {
        "config_file": None if file is None else str(file),
        "config_file_exists": exists,
        "settings": {k: {"value": values[k], "source": config.source.get(k)} for k in KEYS},
    }

    def render() -> None:
        note = config.source.get("config_file", "default") + ("" if exists else ", not found")
        show_fields([("config file", f"{file} ({note})")])
        table(
            "Settings",
            ["key", "value", "source"],
            [(k, values[k], config.source.get(k)) for k in KEYS],
        )

    emit(c, data, render)


@config_app.command("path")
def path(ctx: typer.Context, json: JsonFlag = False) -> None:
    """Print the path of the configuration file in use."""
    c = command_ctx(ctx, json=json)
    file, source = config_file_path(c.config_path, c.env)
    data = {"path": str(file), "source": source, "exists": file.is_file()}
    emit(c, data, lambda: typer.echo(str(file)))


@config_app.command("init")
def init(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Write a configuration file with the default settings."""
    c = command_ctx(ctx)
    file, _ = config_file_path(c.config_path, c.env)
    write_config_file(file, default_table(), overwrite=force)
    stdout_console().print(f"Wrote {file}", markup=False)


@config_app.command("set")
def set_value(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help=f"One of: {', '.join(KEYS)}.")],
    value: Annotated[str, typer.Argument(help="The new value.")],
) -> None:
    """Set one key in the configuration file (created if missing)."""
    c = command_ctx(ctx)
    file, _ = config_file_path(c.config_path, c.env)
    table_ = set_config_value(file, key, value)
    stdout_console().print(f"Set {key} = {table_[key]!r} in {file}", markup=False)
