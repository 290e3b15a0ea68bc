"""`tvmflow tune` (MetaSchedule into schedules/<target>/<cpu>/<variant>/) and `tvmflow schedules`."""

import json

import click

from tvmflow.cli import cli
from tvmflow.cli.options import POSITIVE, layout_options, needs_nchwc, seed_option, threads_option


@cli.command("tune")
@click.option("--target", "-t", default="host", show_default=True, help="Target preset name.")
@click.option("--variant", "-v", default="all", show_default=True, help="Variant name, comma list or 'all'.")
@click.option("--trials", type=POSITIVE, default=256, show_default=True,
              help="Trial budget of each log (a rerun resumes up to it).")
@click.option("--trials-per-task", type=POSITIVE, default=None, help="Cap on trials per task.")
@click.option("--per-round", type=POSITIVE, default=32, show_default=True,
              help="Candidates measured per round.")
@seed_option("Search seed.")
@click.option("--population", type=click.IntRange(min=8), default=None,
              help="Evolutionary search population per round: smaller searches faster and "
                   "explores less [default: $TVMFLOW_TUNE_POPULATION, else 256].")
@click.option("--fresh", is_flag=True, help="Start over instead of resuming the log (the old "
                                            "log is moved aside).")
@click.option("--keep-best", type=POSITIVE, default=None,
              help="After tuning keep only the best N records per task.")
@click.option("--adapt", is_flag=False, flag_value="nearest", default=None, metavar="[CPU]",
              help="First re-measure the best 3 records per task of another CPU's set (the "
                   "nearest, or the CPU named) here, so the search starts from them.")
@layout_options("Data layout of the convs [default: the log's, else NCHWc on x86 for a "
                "model that runs blocked end to end, NCHW otherwise].",
                "NCHWc: search the blocked convs' schedules, or give them the fixed "
                "NeoCPU-style schedule (only the other kernels are tuned) [default: fixed].")
@click.option("--no-pad", "no_pad", is_flag=True,
              help="NCHWc: do not zero-pad odd channel counts up to the block.")
@click.option("--tracker", default=None, help="RPC tracker HOST:PORT (or $TVM_TRACKER_HOST/PORT).")
@click.option("--key", default=None, help="RPC key of the board, with a tracker (or $TVM_TRACKER_KEY).")
@click.option("--rpc-workers", type=POSITIVE, default=None,
              help="Candidates measured at once through the tracker (default: the boards under the key).")
@threads_option("TVM threads in the runner that times candidates "
                "[default: $TVM_NUM_THREADS, else the target's num-cores].")
@click.option("--workers", type=POSITIVE, default=None,
              help="Builder processes [default: the cores less two on CUDA targets, else "
                   "min(2, cores)].")
@click.option("--dry-run", is_flag=True,
              help="Build every candidate but measure none (made-up run times): checks a "
                   "target's tuning path, e.g. CUDA on a machine without the GPU. Keep such "
                   "logs apart: TVMFLOW_SCHEDULES=DIR.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def tune_cmd(target, variant, trials, trials_per_task, per_round, seed, fresh, keep_best, tracker,
             key, rpc_workers, threads, as_json, adapt=None, layout=None, no_pad=False,
             conv_rule=None, workers=None, dry_run=False, population=None):
    """Auto-schedule variants with MetaSchedule (XGBoost cost model)."""
    needs_nchwc(layout, no_pad=no_pad, conv_rule=conv_rule)
    if adapt is not None and not adapt.strip():
        raise click.BadParameter("give a CPU name, or --adapt alone for the nearest set",
                                 param_hint="'--adapt'")
    from tvmflow.spec.registry import resolve_variants
    from tvmflow.target.presets import get_target
    from tvmflow.tuning.tune import tune_variants
    variants = resolve_variants(variant)       # names checked (with suggestions) before the
    preset = get_target(target)                # preset loads; both resolved once, here
    options = None
    if layout is not None:
        from tvmflow.adapter.pipeline import options_for
        options = options_for(preset.tvm_target(), layout, pad_channels=not no_pad,
                              conv_rule=conv_rule)
    res = tune_variants(variants, preset, quiet=as_json, trials=trials,
                        trials_per_task=trials_per_task, per_round=per_round, seed=seed,
                        fresh=fresh, keep_best=keep_best, tracker=tracker, key=key,
                        adapt=(True if adapt == "nearest" else adapt),
                        rpc_workers=rpc_workers, threads=threads, options=options,
                        workers=workers, dry_run=dry_run, population=population)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in res], indent=2))


@cli.command("schedules")
@click.option("--repair", is_flag=True, help="Drop corrupt (truncated) lines, keeping every good record.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def schedules_cmd(repair, as_json):
    """List the tuning logs: CPU they were tuned on, trials, date, estimated latency, and
    which set compile uses on this machine."""
    from tvmflow.tuning.schedules import list_schedules_report
    rows = list_schedules_report(repair=repair, as_json=as_json)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
