"""``tvmflow bench`` and ``tvmflow compare``: thin wrappers over :func:`tvmflow.measure.bench.bench`."""

from __future__ import annotations

import click

from tvmflow.cli import cli
from tvmflow.cli.options import (COUNT, NON_NEGATIVE, OUT_DIR, POSITIVE, POSITIVE_FLOAT, VIA,
                                 seed_option, threads_option)


def _options(command: str):
    """Options shared by bench and compare (route, measurement, output); ``--boards`` is
    bench's only (compare measures every variant on one board)."""
    opts = [
        click.option("--target", "-t", default="host", show_default=True, help="target preset"),
        click.option("--via", type=VIA, default=None,
                     help="host only: a TVM RPC server on 127.0.0.1 started by tvmflow (rpc), or "
                          "this process (local). Default: rpc."),
        click.option("--rpc", "rpc_addr", metavar="HOST:PORT", help="an RPC server to run on"),
        click.option("--tracker", metavar="HOST:PORT",
                     help="an RPC tracker (default $TVM_TRACKER_HOST:$TVM_TRACKER_PORT)"),
        click.option("--key", help="board key at the tracker, with --tracker (default "
                                   "$TVM_TRACKER_KEY or the target's rpc_key)"),
        click.option("--warmup", type=COUNT, default=20, show_default=True, help="untimed runs per runner"),
        click.option("--min-repeats", type=POSITIVE, default=200, show_default=True,
                     help="at least this many timed single runs per runner"),
        click.option("--min-time", type=NON_NEGATIVE, default=1.0, show_default=True,
                     help="at least this many seconds of timed runs per runner"),
        click.option("--max-time", type=NON_NEGATIVE, default=15.0, show_default=True,
                     help="a slow runner stops after about this many seconds of timed runs"),
        click.option("--rounds", type=POSITIVE, default=10, show_default=True,
                     help="measurement rounds (compare interleaves the variants in each)"),
        click.option("--baselines/--no-baselines", default=True, show_default=True,
                     help="also time PyTorch eager and ONNX Runtime (host targets)"),
        click.option("--check/--no-check", default=True, show_default=True,
                     help="check the device output against PyTorch (1e-4) before timing"),
        seed_option("weight/input seed for compile"),
        threads_option("threads of every runner: TVM, PyTorch and ONNX Runtime alike "
                       "[default: $TVM_NUM_THREADS, else the target's num-cores]"),
        click.option("--timeout", type=POSITIVE_FLOAT, default=30.0, show_default=True,
                     help="seconds to wait for a server, tracker or board"),
        click.option("-o", "--output", type=OUT_DIR, default=None,
                     help="output directory (default reports/<command>-<target>-<time>)"),
        click.option("--force", is_flag=True, help="overwrite an existing report in -o"),
        click.option("--cuda-graph", is_flag=True,
                     help="CUDA targets: time modules compiled with --cuda-graph (their kernel "
                          "launches replayed as one CUDA graph)"),
    ]
    if command == "bench":
        opts.append(click.option(
            "--boards", type=POSITIVE, default=1, show_default=True,
            help="with --tracker: spread the variants over N boards under the key, measured "
                 "in parallel (each variant on one board)"))
    else:  # named, so that the error says why rather than "no such option"
        opts.append(click.option("--boards", type=POSITIVE, default=1, hidden=True,
                                 callback=_one_board))

    def deco(f):
        for opt in reversed(opts):
            f = opt(f)
        return f
    return deco


def _one_board(ctx, param, value):
    if value != 1:
        raise click.BadParameter("compare measures every variant on one board, interleaved in "
                                 "rounds; --boards is for bench", ctx, param)
    return value


def _run(command, variants, target, via, rpc_addr, tracker, key, warmup, min_repeats, min_time,
         max_time, rounds, baselines, check, seed, threads, timeout, output, force,
         per_layer=None, cuda_graph=False, boards=1, pair=None):
    from tvmflow.experiments.compare import compare
    from tvmflow.measure.bench import BenchOptions, bench
    from tvmflow.ui import console, err_console
    options = BenchOptions(warmup=warmup, min_repeats=min_repeats, min_time=min_time,
                           max_time=max_time, rounds=rounds, baselines=baselines, check=check, timeout=timeout,
                           boards=boards)
    kw = dict(via=via, rpc=rpc_addr, tracker=tracker, key=key, options=options, out_dir=output,
              force=force, seed=seed, threads=threads, cuda_graph=cuda_graph,
              say=lambda m: err_console.print(f"[dim]{m}[/dim]", highlight=False))
    report = (compare(target, variants, per_layer=per_layer, pair=pair, **kw) if command == "compare"
              else bench(target, variants, **kw))
    import sys
    from rich.console import Console
    out = console if sys.stdout.isatty() else Console(width=240)  # logs, pipes: no cropping
    out.print(report.to_table())
    for line in report.first_run_lines() + report.footer():
        out.print(line, highlight=False, soft_wrap=True)
    if report.per_layer is not None:
        from tvmflow.ui import print_table
        print_table("per-layer latency (ms, medians of 10 interleaved rounds)",
                    report.per_layer.columns(), report.per_layer.rows())
    out.print(f"report: {report.environment.get('output_dir')}", highlight=False)


@cli.command("bench")
@click.option("--variant", "-v", "variants", default="all", show_default=True,
              help="a variant, a comma-separated list, or all")
@_options("bench")
def bench_cmd(variants, **kw):
    """Time compiled variants on a device (local, or a board through TVM RPC)."""
    _run("bench", variants, **kw)


@cli.command("compare")
@click.option("--variant", "-v", "variants", default="all", show_default=True,
              help="comma-separated variants to compare (default all), measured interleaved")
@click.option("--per-layer", metavar="A,B", default=None,
              help="also profile two variants layer by layer, side by side (this machine), "
                   "e.g. pruned,pruned-a8")
@click.option("--pair", metavar="A,B", default=None,
              help="the two compared variants whose latency ratio A/B is reported with its "
                   "95% CI [default: pruned-a8,pruned]")
@_options("compare")
def compare_cmd(variants, per_layer, pair, **kw):
    """Compare variants interleaved in rounds: latency with CIs, baselines, alignment effect."""
    _run("compare", variants, per_layer=per_layer, pair=pair, **kw)
