"""`tvmflow import`: an ONNX file, a .pt2 program, an entry point or a torchvision model as a
variant."""

import json

import click

from tvmflow.cli import cli
from tvmflow.cli.options import OUT_DIR


def _kwargs(ctx, param, values):
    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx=ctx, param=param)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


@cli.command("import")
@click.argument("model")
@click.option("--name", required=True, help="Name of the new variant.")
@click.option("--input-shape", default=None,
              help="Input shape, e.g. 1,3,224,224 [default: the file's own; 1,3,224,224 for "
                   "torchvision].")
@click.option("--kwarg", "kwargs", multiple=True, callback=_kwargs, metavar="KEY=VALUE",
              help="Keyword argument of a torchvision or entry-point model (repeatable; "
                   "VALUE is JSON, else a string), e.g. --kwarg num_classes=10.")
@click.option("--description", default="", help="A line describing the variant.")
@click.option("-o", "--out-dir", type=OUT_DIR, default=None,
              help="Directory for <name>.toml [default: the workspace's models/].")
@click.option("--force", is_flag=True, help="Replace a variant file an earlier import wrote.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def import_cmd(model, name, input_shape, kwargs, description, out_dir, force, as_json):
    """Register MODEL as a variant: an .onnx or .pt2 file, torchvision:NAME (built without
    weights), or entry:package.module:function (returns an nn.Module)."""
    from tvmflow.spec.importing import import_variant
    from tvmflow.ui import console
    res = import_variant(model, name, input_shape=input_shape, kwargs=kwargs,
                         description=description, out_dir=out_dir, force=force)
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=2))
        return
    s = res.spec
    console.print(f"variant {s.name}: {s.model}, input {list(s.input_shape)} {s.input_dtype}, "
                  f"{s.params:,} params, {s.macs:,} MACs\nwritten: {res.path}", highlight=False)
