"""The ``nuclux`` command: root options, sub-app registration and error handling.

Theory of operation
-------------------
The root callback parses the global options (``--config``, ``--debug``, ``--version``) and
stores a ``Ctx`` (``cli/output.py``) in ``typer.Context.obj``; the configuration is loaded
only when a command first reads ``Ctx.config``.

Errors are turned into exit codes in one place, ``NucluxGroup.invoke``, which wraps every
command of the tree (so ``CliRunner`` tests see exactly what a user sees):

* ``NucluxError``       -> ``error: <message>`` on stderr, exit ``err.exit_code`` (1-6)
* ``KeyboardInterrupt`` -> exit 130
* ``BrokenPipeError``   -> exit 141, silently (the reader of the output went away)
* anything else         -> ``internal error: ...``, exit 70
* with ``--debug`` a traceback is printed first.

Click's own errors pass through untouched: a usage error prints usage and exits 2. ``run()``
is the console entry point; it runs the app in click's standalone mode and maps the few
errors that can happen outside a command (while parsing options) the same way.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer import _click  # typer vendors click; TyperGroup.invoke is typed with its Context
from typer.core import TyperGroup

from nuclux import __version__
from nuclux.allocator import tune_allocator
from nuclux.cli.chain_cmd import balance_cmd, chain_app, transfer_cmd
from nuclux.cli.compute_cmd import register as register_compute
from nuclux.cli.config_cmd import config_app
from nuclux.cli.demo_cmd import demo_cmd
from nuclux.cli.devnet_cmd import devnet_app
from nuclux.cli.keydir_cmd import lookup_cmd, publish_cmd
from nuclux.cli.keys_cmd import keys_app
from nuclux.cli.lease_cmd import lease_app
from nuclux.cli.market_cmd import market_app
from nuclux.cli.node_cmd import node_app
from nuclux.cli.output import (
    BROKEN_PIPE_EXIT,
    INTERRUPTED_EXIT,
    Ctx,
    report_error,
    report_internal,
    stderr_console,
)
from nuclux.cli.provider_cmd import provider_app
from nuclux.cli.renew_cmd import renew_cmd
from nuclux.cli.repair_cmd import repair_cmd
from nuclux.cli.storage import register as register_storage
from nuclux.errors import NucluxError
from nuclux.gctune import freeze_startup, tune_gc


class NucluxGroup(TyperGroup):
    """The root command group: maps exceptions from any command to one line and an exit code."""

    def invoke(self, ctx: _click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # click's control flow and usage errors (exit 2)
        except NucluxError as err:
            raise typer.Exit(report_error(err, debug=_debug(ctx))) from err
        except KeyboardInterrupt as err:
            stderr_console().print("interrupted", style="bold red")
            raise typer.Exit(INTERRUPTED_EXIT) from err
        except BrokenPipeError as err:  # whoever read our output stopped (`| head`): quietly
            _drop_stdout()
            raise typer.Exit(BROKEN_PIPE_EXIT) from err
        except Exception as err:
            raise typer.Exit(report_internal(err, debug=_debug(ctx))) from err


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):  # not a real descriptor (tests)
        pass


def _debug(ctx: _click.Context) -> bool:
    root = ctx.find_object(Ctx)
    return root.debug if root is not None else bool(ctx.params.get("debug"))


app = typer.Typer(
    name="nuclux",
    cls=NucluxGroup,
    help="Nuclux: a decentralized cloud of leased storage, compute and bandwidth.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"nuclux {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Config file (default: $NUCLUX_CONFIG, else the platform config dir).",
            dir_okay=False,
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version),
    ] = False,
) -> None:
    """Nuclux: a decentralized cloud of leased storage, compute and bandwidth."""
    ctx.obj = Ctx(config_path=config, debug=debug, env=dict(os.environ))


# Sub-apps. Each lives in its own module under nuclux/cli/ and exposes a typer.Typer; its
# commands get settings and their --json flag through `command_ctx(ctx, json=json)`
# (cli/output.py). Register new sub-apps here, e.g.:
#     from nuclux.cli import chain_cmd, demo_cmd, devnet_cmd
#     app.add_typer(chain_cmd.chain_app, name="chain")
keys_app.command("publish")(publish_cmd)
keys_app.command("lookup")(lookup_cmd)
app.add_typer(keys_app, name="keys")
app.add_typer(config_app, name="config")
app.add_typer(chain_app, name="chain")
app.add_typer(lease_app, name="lease")
app.add_typer(market_app, name="market")
app.add_typer(devnet_app, name="devnet")
app.add_typer(provider_app, name="provider")
app.add_typer(node_app, name="node")
app.command("balance")(balance_cmd)
app.command("transfer")(transfer_cmd)
app.command("demo")(demo_cmd)
register_storage(app)  # put, get, ls, rm, share, audit, verify-timestamp
app.command("repair")(repair_cmd)
app.command("renew")(renew_cmd)
register_compute(app)  # run, jobs


def run() -> None:
    """Console entry point (``nuclux``)."""
    debug = "--debug" in sys.argv[1:]
    tune_allocator()  # bulk transfers reuse heap memory instead of faulting in fresh pages
    tune_gc()  # the collector stops re-walking what start-up built (nuclux/gctune.py)
    freeze_startup(collect=False)
    try:
        app(prog_name="nuclux")  # standalone mode: click usage errors exit 2
    except NucluxError as err:  # raised while parsing options, outside any command
        sys.exit(report_error(err, debug=debug))
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED_EXIT)
    except Exception as err:
        sys.exit(report_internal(err, debug=debug))
