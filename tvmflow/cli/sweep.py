"""`tvmflow sweep` (the channel-alignment curve) and `tvmflow profile` (per-layer latency)."""

import json

import click

from tvmflow.cli import cli
from tvmflow.cli.options import (COUNT, FRACTION, NON_NEGATIVE, OUT_DIR, OUT_FILE, POSITIVE, POSITIVE_FLOAT, VIA,
                                 seed_option, threads_option)


def _step(quiet: bool):
    from tvmflow.ui import err_console
    return None if quiet else (lambda msg: err_console.print(f"[dim]{msg}[/dim]", highlight=False))


@cli.command("profile")
@click.option("--target", "-t", default="host", show_default=True, help="Target preset.")
@click.option("--variant", "-v", required=True, help="Variant to profile.")
@click.option("--against", default=None, help="Second variant: a side-by-side per-layer table.")
@click.option("--rounds", type=POSITIVE, default=20, show_default=True, help="Interleaved timing rounds.")
@click.option("--min-ms", type=NON_NEGATIVE, default=2.0, show_default=True,
              help="Minimum length of one sample (ms).")
@click.option("--untuned", is_flag=True, help="Use TVM's default schedules even if tuned ones exist.")
@seed_option("Seed of the random weights and input.")
@threads_option("TVM threads (and the baselines') [default: $TVM_NUM_THREADS, else the target's "
                "num-cores].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-o", "--output", type=OUT_FILE, default=None, help="Also write JSON here.")
def profile_cmd(target, variant, against, rounds, min_ms, untuned, seed, threads, as_json,
                output) -> None:
    """Latency of each fused operator of the compiled module, per network layer."""
    if against == variant:
        raise click.UsageError(f"--against names the variant itself ({variant}); give another "
                               "variant to compare with")
    from tvmflow.spec.registry import get_spec
    for name in filter(None, (variant, against)):
        get_spec(name)     # both names checked (with suggestions) before anything compiles
    from tvmflow.measure.profile import compare_profiles, profile, write_json
    from tvmflow.ui import console, print_table
    kw = dict(rounds=rounds, min_ms=min_ms, seed=seed, tuned=not untuned, threads=threads,
              on_step=_step(as_json))
    res = compare_profiles([variant, against], target, **kw) if against else profile(variant, target, **kw)
    if output:
        write_json(res, output)
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=2))
    elif against:
        r0, r1 = res.results
        print_table(f"per-layer latency on {target} (ms, medians of {rounds} interleaved rounds)",
                    res.columns(), res.rows())
        console.print(f"schedules: {r0.variant} {r0.schedules}; {r1.variant} {r1.schedules}; "
                      f"TVM threads: {r0.machine.get('threads')}", highlight=False)
    else:
        print_table(f"{res.variant} on {target}: per-layer latency (ms, median of {rounds} rounds; "
                    f"schedules {res.schedules}; TVM threads {res.machine.get('threads')})",
                    res.COLUMNS, res.rows())


@cli.command("sweep")
@click.option("--from", "source", default="pruned", show_default=True,
              help="Pruned NIN variant, a pruned checkpoint file ({'cfg','state_dict'}), or a "
                   "torchvision / entry-point variant to prune at --ratio once per N.")
@click.option("--ratio", type=FRACTION, default=None,
              help="Torch-Pruning ratio for a --from model (its round_to is each N).")
@click.option("--importance", type=click.Choice(["magnitude", "bn-scale"]), default="magnitude",
              show_default=True, help="Torch-Pruning importance for a --from model.")
@click.option("--align", "aligns", default="1,2,4,8,16,32", show_default=True, help="Alignments N.")
@click.option("--target", "-t", default="host", show_default=True, help="Target preset.")
@click.option("--trials", type=COUNT, default=None,
              help="Tune each variant with N trials first; 0: TVM's default schedules "
                   "[default: the tuned schedules that exist].")
@click.option("--per-round", type=POSITIVE, default=None,
              help="Tuning candidates per round (with --trials) [default: the tuner's].")
@click.option("--base", default=None, help="Unpruned variant that caps the widths [default: the source's base].")
@click.option("--name", default=None, help="Variant name for a --from checkpoint [default: its file "
                                           "stem]; the name prefix of a --from model's variants "
                                           "[default: <model>-p<R>].")
@click.option("--models-dir", type=OUT_DIR, default=None,
              help="Where new variant files go [default: first TVMFLOW_MODEL_PATH dir, else models/].")
@click.option("--rounds", type=POSITIVE, default=20, show_default=True,
              help="Interleaved timing rounds.")
@click.option("--repeat", type=POSITIVE, default=10, show_default=True,
              help="Single-run samples per variant per round.")
@click.option("-o", "--out-dir", type=OUT_DIR, default=None,
              help="Directory for sweep.json/.csv/.png [default: reports/sweep-<target>-<source>/].")
@click.option("--via", type=VIA, default=None,
              help="Run in this process, or through a loopback RPC server started here.")
@click.option("--rpc", default=None, help="RPC server HOST:PORT of the device.")
@click.option("--tracker", default=None, help="RPC tracker HOST:PORT (with --key).")
@click.option("--key", default=None, help="Device key at the tracker, with --tracker [default: "
                                          "the preset's].")
@click.option("--per-layer", is_flag=True,
              help="Also profile the variants layer by layer, side by side (this machine only).")
@threads_option("TVM threads (and the baselines') [default: $TVM_NUM_THREADS, else the target's "
                "num-cores].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def sweep_cmd(source, ratio, importance, aligns, target, trials, per_round, base, name, models_dir,
              rounds, repeat, out_dir, via, rpc, tracker, key, per_layer, threads, as_json) -> None:
    """Latency and MACs of a pruned model against the channel alignment N."""
    from tvmflow.experiments.sweep import sweep
    from tvmflow.ui import console, print_table
    r = sweep(source, aligns, target, trials=trials, base=base, name=name, models_dir=models_dir,
              rounds=rounds, repeat=repeat, out_dir=out_dir, on_step=_step(as_json),
              route=dict(via=via, rpc=rpc, tracker=tracker, key=key), per_layer=per_layer,
              per_round=per_round, threads=threads, ratio=ratio, importance=importance)
    if as_json:
        click.echo(json.dumps(r.to_json(), indent=2))
        return
    print_table(f"alignment sweep of {r.source} on {r.target} ({r.samples} samples each)",
                r.COLUMNS, r.table_rows(), right={0, 3, 4, 5, 6, 7})
    if r.per_layer is not None:
        print_table(f"per-layer latency on {r.target} (ms, medians)", r.per_layer.columns(),
                    r.per_layer.rows())
    faster = r.faster_with_more_macs()
    if faster:
        console.print(f"faster than N=1 despite more MACs: N={', '.join(map(str, faster))}", highlight=False)
    console.print(f"took {r.elapsed_s:.0f} s; " + ", ".join(f"{k}: {v}" for k, v in r.files.items()),
                  highlight=False)
