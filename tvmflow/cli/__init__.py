"""The ``tvmflow`` command line.

Each command is a thin click wrapper over one library function, kept in its own module in
this package.  :func:`main` is the only place that catches :class:`~tvmflow.errors.TvmflowError`:
it prints ``Error: ...`` on stderr and exits with a fixed code, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from tvmflow._version import __version__
from tvmflow.errors import EXIT_INTERRUPTED, TvmflowError

# command modules; each registers its commands on `cli` when imported
COMMAND_MODULES = ("models", "prune", "verify", "targets", "compile", "tune", "bench", "board",
                   "sweep")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(version=__version__, prog_name="tvmflow")
@click.option("--workspace", type=click.Path(file_okay=False), default=None,
              help="Directory for your schedules, artifacts, reports and variant files "
                   "[default: $TVMFLOW_HOME, else the working directory].")
def cli(workspace: str | None = None) -> None:
    """tvmflow: does pruning, grouping or channel alignment make a CNN faster on a real device?

    Import NIN variants into TVM, auto-schedule them with MetaSchedule, compile .so modules for
    x86, ARM and CUDA targets, and benchmark them locally or on boards through TVM RPC.
    """
    from tvmflow.workspace import set_workspace
    set_workspace(workspace)


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="tvmflow", standalone_mode=False)
    except TvmflowError as exc:
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Error: interrupted", err=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        click.echo("Error: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


def run() -> None:
    sys.exit(main())
