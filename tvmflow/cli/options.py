"""Option types shared by the commands.

What the CLI can check before anything is loaded -- a range, a choice, a path that must
exist -- is a click type here: click reports it as a usage error (exit 2) whose last line is
``Error: Invalid value for '--x': ...``.  Checks that need a preset, a variant or the
environment live in the library functions, so that the Python API makes them too.  The
choices come from the library's own constants, never a copy.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import click

from tvmflow.adapter.pipeline import CONV_RULES, LAYOUTS
from tvmflow.ir.frontend import FRONTENDS
from tvmflow.runtime.session import VIAS


class Int(click.IntRange):
    """An IntRange whose type error reads "'x' is not a valid integer"."""

    name = "integer"


class FiniteFloat(click.FloatRange):
    """A FloatRange that also refuses nan and inf (float() accepts both, and nan passes
    every range comparison)."""

    name = "float"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


#: a count of at least one: trials, rounds, repeats, threads, workers, boards, records ...
POSITIVE = Int(min=1)
#: zero or more: warmup runs, trials of a sweep (0: TVM's default schedules)
COUNT = Int(min=0)
#: numpy's and PyTorch's seed range
SEED = Int(0, 2**32 - 1)
#: a fraction strictly between 0 and 1 (prune --ratio)
FRACTION = FiniteFloat(0.0, 1.0, min_open=True, max_open=True)
#: seconds or a tolerance: zero or more
NON_NEGATIVE = FiniteFloat(min=0.0)
#: a wait or a sample length: more than zero
POSITIVE_FLOAT = FiniteFloat(min=0.0, min_open=True)

LAYOUT = click.Choice(LAYOUTS)
CONV_RULE = click.Choice(CONV_RULES)
FRONTEND = click.Choice([*FRONTENDS, "both"])
VIA = click.Choice(VIAS)



class OutPath(click.Path):
    """A path tvmflow will write: the nearest existing directory at or above it must take a
    new entry (probed with a temporary directory, removed at once), so that an impossible
    ``-o`` fails before the work rather than after it."""

    def convert(self, value, param, ctx):
        path = super().convert(value, param, ctx)
        where = Path(os.fsdecode(path)).expanduser().absolute()
        if not (self.file_okay is False and where.is_dir()):
            where = where.parent
        while not where.exists():
            where = where.parent
        if not where.is_dir():
            self.fail(f"{str(where)!r} is not a directory.", param, ctx)
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".tvmflow-probe-", dir=where))
        except OSError as exc:
            self.fail(f"cannot write into {str(where)!r}: {exc.strerror or exc}.", param, ctx)
        return path


#: an existing file to read
IN_FILE = click.Path(exists=True, dir_okay=False)
#: a file to write (a directory there is refused)
OUT_FILE = OutPath(dir_okay=False)
#: a directory to write into (a file there is refused)
OUT_DIR = OutPath(file_okay=False)


def threads_option(help_text: str):
    return click.option("--threads", type=POSITIVE, default=None, help=help_text)


def seed_option(help_text: str):
    return click.option("--seed", type=SEED, default=0, show_default=True, help=help_text)


def layout_options(layout_help: str, conv_rule_help: str):
    """``--layout`` and ``--conv-rule``, their choices the pipeline's."""
    def deco(f):
        f = click.option("--conv-rule", type=CONV_RULE, default=None, help=conv_rule_help)(f)
        return click.option("--layout", type=LAYOUT, default=None, help=layout_help)(f)
    return deco


def needs_nchwc(layout: str | None, **flags) -> None:
    """Refuse NCHWc-only flags (``no_pad=True``, ``conv_rule="fixed"``) without ``--layout
    NCHWc``: they would be ignored."""
    for name, value in flags.items():
        if value and layout != "NCHWc":
            option = "--" + name.replace("_", "-")
            raise click.UsageError(f"{option} needs --layout NCHWc"
                                   + (f", not {layout}" if layout else ""))
