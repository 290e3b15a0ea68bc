"""`tvmflow sweep` (the channel-alignment curve) and `tvmflow profile` (per-layer latency)."""

import json

import click

from . import cli


def _step(quiet: bool):
    from ..ui import err_console
    return None if quiet else (lambda msg: err_console.print(f"[dim]{msg}[/dim]", highlight=False))


@cli.command("profile")
@click.option("--target", "-t", default="host", show_default=True, help="Target preset.")
@click.option("--variant", "-v", required=True, help="Variant to profile.")
@click.option("--against", default=None, help="Second variant: a side-by-side per-layer table.")
@click.option("--rounds", default=20, show_default=True, help="Interleaved timing rounds.")
@click.option("--min-ms", default=2.0, show_default=True, help="Minimum length of one sample (ms).")
@click.option("--untuned", is_flag=True, help="Use TVM's default schedules even if tuned ones exist.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights and input.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Also write JSON here.")
def profile_cmd(target, variant, against, rounds, min_ms, untuned, seed, as_json, output) -> None:
    """Latency of each fused operator of the compiled module, per network layer."""
    from ..profile import compare_profiles, profile, write_json
    from ..ui import console, print_table
    kw = dict(rounds=rounds, min_ms=min_ms, seed=seed, tuned=not untuned, on_step=_step(as_json))
    res = compare_profiles([variant, against], target, **kw) if against else profile(variant, target, **kw)
    if output:
        write_json(res, output)
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=2))
    elif against:
        r0, r1 = res.results
        print_table(f"per-layer latency on {target} (ms, medians of {rounds} interleaved rounds)",
                    res.columns(), res.rows())
        console.print(f"schedules: {r0.variant} {r0.schedules}; {r1.variant} {r1.schedules}", highlight=False)
    else:
        print_table(f"{res.variant} on {target}: per-layer latency (ms, median of {rounds} rounds; "
                    f"schedules {res.schedules})", res.COLUMNS, res.rows())
