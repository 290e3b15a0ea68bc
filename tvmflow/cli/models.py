"""`tvmflow models`: the registered variants with their counts."""

import json

import click

from tvmflow.cli import cli


@cli.command("models")
@click.argument("pattern", default="all")
@click.option("--json", "as_json", is_flag=True, help="Print the same data as JSON.")
def models_cmd(pattern: str, as_json: bool) -> None:
    """List variants: channels, groups, parameters and conv MACs at 1x3x32x32.

    PATTERN is 'all', a name, a shell pattern ('pruned*') or a comma list of them; an unknown
    name is an error that suggests close names.
    """
    from tvmflow.spec.registry import get_spec, resolve_variants
    from tvmflow.ui import print_table
    rows = [get_spec(name).summary() for name in resolve_variants(pattern)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    print_table("Variants", ["variant", "channels", "groups", "params", "conv MACs"],
                [[r["name"], ",".join(map(str, r["channels"])), ",".join(map(str, r["groups"])),
                  f"{r['params']:,}", f"{r['macs']:,}"] for r in rows])
