"""The ``tvmflow`` command line.

Each command is a thin click wrapper over one library function, kept in its own module in
this package.  :func:`main` is the only place that catches :class:`~tvmflow.errors.TvmflowError`:
it prints ``Error: ...`` on stderr and exits with a fixed code, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from tvmflow import signals
from tvmflow._version import __version__
from tvmflow.errors import EXIT_INTERRUPTED, TvmflowError

# command modules; each registers its commands on `cli` when imported
COMMAND_MODULES = ("models", "import_cmd", "prune", "verify", "targets", "compile", "tune",
                   "bench", "board", "sweep")


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
    """Run one command; every ending is one line and an exit code, never a traceback.

    Ctrl-C, SIGTERM and SIGHUP all end as ``Error: interrupted`` (:mod:`tvmflow.signals`),
    naming what the command kept; so does an error that a signal caused on its way out of TVM.
    """
    previous = signals.install()
    try:
        return _main(argv)
    finally:
        signals.restore(previous)


def _main(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="tvmflow", standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort):
        return _interrupted()
    except TvmflowError as exc:
        if signals.received() is not None:
            return _interrupted()
        _echo(f"Error: {exc}")
        return exc.exit_code
    except click.UsageError as exc:   # one line too, naming where help is
        where = exc.ctx.command_path if exc.ctx is not None else "tvmflow"
        _echo(f"Error: {exc.format_message()} (see {where} --help)")
        return exc.exit_code
    except click.ClickException as exc:
        _echo(f"Error: {exc.format_message()}")
        return exc.exit_code
    except Exception:
        if signals.received() is not None:   # e.g. a TVM RuntimeError raised by the signal
            return _interrupted()
        raise
    return 0


def _interrupted() -> int:
    _echo("; ".join(["Error: interrupted", *signals.kept_lines()]))
    return EXIT_INTERRUPTED


def _echo(line: str) -> None:
    try:
        click.echo(line, err=True)
    except OSError:   # SIGHUP: the terminal may be gone
        pass


def run() -> None:
    code = main()
    if code == EXIT_INTERRUPTED:
        signals.exit_now(code)
    sys.exit(code)
