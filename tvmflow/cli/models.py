"""`tvmflow models`: the registered variants with their counts."""

import json

import click

from tvmflow.cli import cli


@cli.command("models")
@click.argument("pattern", default="all")
@click.option("--json", "as_json", is_flag=True, help="Print the same data as JSON.")
def models_cmd(pattern: str, as_json: bool) -> None:
    """List variants: the model, input, channels and groups (NIN), parameters and the MACs of
    the conv and linear layers at the variant's input shape.

    PATTERN is 'all', a name, a shell pattern ('pruned*') or a comma list of them; an unknown
    name is an error that suggests close names.
    """
    from tvmflow.spec.registry import get_spec, resolve_variants
    from tvmflow.ui import print_table
    rows = [get_spec(name).summary() for name in resolve_variants(pattern)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    print_table("Variants", ["variant", "model", "input", "channels", "groups", "params",
                             "MACs"], [_row(r) for r in rows])


def _row(r: dict) -> list[str]:
    shape = "x".join(map(str, r["input_shape"]))
    if "model" in r:                          # a model from a file, entry point, torchvision
        model = r["model"]
        if model.startswith(("onnx:", "pt2:")):
            model = model.split(":", 1)[0] + ":" + model.rsplit("/", 1)[-1]
        return [r["name"], model, shape, "-", "-", f"{r['params']:,}", f"{r['macs']:,}"]
    return [r["name"], "NIN", shape, ",".join(map(str, r["channels"])),
            ",".join(map(str, r["groups"])), f"{r['params']:,}", f"{r['macs']:,}"]
